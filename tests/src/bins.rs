//! The workspace's own binaries, for tests that drive them as a user does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// Binary `bin` of workspace package `package`. `cargo test --workspace`
/// has built it next to the test binary; when it is missing or older than
/// the sources it is built from (`cargo test -p gantry-e2e` after a
/// change), it is built here, so a stale binary is never tested.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().and_then(|d| d.parent()).expect("target dir").join(bin);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest =
        ["device-runtime", "signing", "keys", "bootloader"].iter().filter_map(|c| newest_file(&root.join(c))).max();
    if built.is_none() || newest > built {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .current_dir(&root)
            .status()
            .expect("running cargo");
        assert!(status.success(), "building {bin}");
    }
    path
}

/// The newest modification time of a source file under `dir`.
fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "fixtures" {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
                newest = newest.max(entry.metadata().and_then(|m| m.modified()).ok());
            }
        }
    }
    newest
}
