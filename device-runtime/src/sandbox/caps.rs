//! What a module may import, by capability. A module is refused at install
//! if it imports anything its signed config does not grant, so a container
//! can never even link against a function it was not given.

use gantry_signing::config::ContainerConfig;

/// WASI preview 1's module name.
pub const WASI_P1: &str = "wasi_snapshot_preview1";
/// Gantry's host API module name.
pub const GANTRY: &str = "gantry";

/// The capability a WASI preview-1 function needs; `Some("")` for the base
/// set every container gets (descriptors it already holds, exit, yield,
/// sleeping through `poll_oneoff`), `None` for what is never granted
/// (sockets, `proc_raise`).
pub fn wasi_capability(function: &str) -> Option<&'static str> {
    Some(match function {
        "args_get" | "args_sizes_get" => "wasi:args",
        "environ_get" | "environ_sizes_get" => "wasi:env",
        "clock_res_get" | "clock_time_get" => "wasi:clocks",
        "random_get" => "wasi:random",
        f if f.starts_with("path_") => "wasi:data-dir",
        "fd_advise"
        | "fd_allocate"
        | "fd_close"
        | "fd_datasync"
        | "fd_fdstat_get"
        | "fd_fdstat_set_flags"
        | "fd_fdstat_set_rights"
        | "fd_filestat_get"
        | "fd_filestat_set_size"
        | "fd_filestat_set_times"
        | "fd_pread"
        | "fd_prestat_dir_name"
        | "fd_prestat_get"
        | "fd_pwrite"
        | "fd_read"
        | "fd_readdir"
        | "fd_renumber"
        | "fd_seek"
        | "fd_sync"
        | "fd_tell"
        | "fd_write"
        | "poll_oneoff"
        | "proc_exit"
        | "sched_yield" => "",
        _ => return None,
    })
}

/// The capability a Gantry host function needs (`""`: always available).
pub fn gantry_capability(function: &str) -> Option<&'static str> {
    Some(match function {
        "log" => "gantry:log",
        "kv_get" | "kv_put" => "gantry:kv",
        "sensor_read" => "gantry:sensor",
        "heartbeat" => "",
        _ => return None,
    })
}

/// An import the config does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the module imports {module}.{name}, {why}")]
pub struct ImportRefused {
    /// Import module.
    pub module: String,
    /// Import name.
    pub name: String,
    /// Why it is refused.
    pub why: String,
}

/// Checks every import against the config's capabilities.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    config: &ContainerConfig,
) -> Result<(), ImportRefused> {
    let granted = |cap: &str| cap.is_empty() || config.capabilities.iter().any(|c| c == cap);
    for (module, name, is_function) in imports {
        let refuse = |why: String| Err(ImportRefused { module: module.to_owned(), name: name.to_owned(), why });
        let cap = match module {
            WASI_P1 => wasi_capability(name),
            GANTRY => gantry_capability(name),
            _ => return refuse("a module no container may import from".into()),
        };
        match cap {
            _ if !is_function => return refuse("which is not a function".into()),
            None => return refuse("which Gantry does not provide".into()),
            Some(cap) if !granted(cap) => return refuse(format!("which needs the capability {cap:?}, not granted")),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(caps: &[&str]) -> ContainerConfig {
        let caps: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
        ContainerConfig::from_toml(&format!("name = \"x\"\nversion = \"1\"\ncapabilities = [{}]\n", caps.join(", ")))
            .unwrap()
    }

    #[test]
    fn imports_need_their_capability() {
        let base = [(WASI_P1, "fd_write", true), (WASI_P1, "proc_exit", true), (GANTRY, "heartbeat", true)];
        check_imports(base, &config(&[])).unwrap();
        let err = check_imports([(WASI_P1, "random_get", true)], &config(&[])).unwrap_err();
        assert!(err.to_string().contains("\"wasi:random\""), "{err}");
        check_imports([(WASI_P1, "random_get", true)], &config(&["wasi:random"])).unwrap();
        check_imports([(GANTRY, "kv_put", true)], &config(&["gantry:kv"])).unwrap();
        assert!(check_imports([(GANTRY, "log", true)], &config(&["gantry:kv"])).is_err());
        assert!(
            check_imports([(WASI_P1, "sock_accept", true)], &config(&[])).unwrap_err().why.contains("does not provide")
        );
        assert!(check_imports([(GANTRY, "launch_missiles", true)], &config(&[])).is_err());
        assert!(check_imports([("env", "memory", false)], &config(&[])).is_err());
        assert!(check_imports([(WASI_P1, "path_open", true)], &config(&[])).is_err());
        check_imports([(WASI_P1, "path_open", true)], &config(&["wasi:data-dir"])).unwrap();
    }
}
