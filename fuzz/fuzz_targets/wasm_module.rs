//! What the release tool and the device read from a Wasm module before
//! compiling it (`gantry_signing::module`): its imports and its memory's
//! declared minimum, checked against a config. A module it accepts imports
//! only what the config grants and starts within `limits.memory`; a
//! refusal stays bounded whatever the module names.
#![no_main]

use std::sync::LazyLock;

use gantry_signing::config::ContainerConfig;
use gantry_signing::module::{self, MAX_SHOWN_IMPORTS, ModuleRefused};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<ContainerConfig> = LazyLock::new(|| {
    let toml = "name = \"f\"\nversion = \"1\"\ncapabilities = [\"wasi:clocks\"]\n[limits]\nmemory = \"1 MiB\"\n";
    ContainerConfig::from_toml(toml).expect("config")
});

fuzz_target!(|data: &[u8]| {
    match module::check(data, &CONFIG) {
        Ok(info) => {
            assert!(info.memory_minimum <= CONFIG.limits.memory_bytes);
            let imports = info.imports.iter().map(|(m, n, f)| (m.as_str(), n.as_str(), *f));
            module::check_imports(imports, &CONFIG).expect("accepted an ungranted import");
        }
        Err(ModuleRefused::Imports { shown, total }) => {
            assert!(shown.len() <= MAX_SHOWN_IMPORTS && shown.len() <= total && total > 0);
        }
        Err(_) => {}
    }
});
