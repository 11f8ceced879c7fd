//! Shared helpers for the integration tests: where the shared vectors are.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/vectors` beside the repository, or `$GANTRY_VECTORS`.
/// Returns `None` (and prints why) if they are absent, so the test can skip.
pub fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("GANTRY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    if dir.join("suit").is_dir() {
        Some(dir)
    } else {
        assert!(std::env::var_os("CI").is_none(), "shared vectors missing at {} in CI", dir.display());
        eprintln!("SKIP: shared test vectors not found at {} (set GANTRY_VECTORS)", dir.display());
        None
    }
}

pub fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn draft_key(v: &std::path::Path) -> gantry_keys::PublicKey {
    let pem = std::fs::read_to_string(v.join("suit/suit-examples-es256-public.pem")).unwrap();
    gantry_keys::read_public_key_pem(&pem, "draft key").unwrap()
}
