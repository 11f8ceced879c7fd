//! A blob tree archive unpacked on the device (`gantry_signing::tree::unpack`):
//! whatever the bytes, nothing is written outside the destination, and a
//! tree it accepts archives back to exactly the signed bytes; a refused one
//! leaves nothing behind.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use gantry_signing::tree;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

/// A scratch directory of this process; `dest` inside it is the only path
/// an unpack may create.
static SCRATCH: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("gantry-fuzz-blob-tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
});

fuzz_target!(|data: &[u8]| {
    let dest = SCRATCH.join("dest");
    let sha: [u8; 32] = Sha256::digest(data).into();
    match tree::unpack(data, &sha, &dest, true) {
        Ok(_) => {
            let mut out = Vec::new();
            tree::archive(&dest, &mut out).expect("archive what was unpacked");
            assert_eq!(out, data, "accepted a non-canonical archive");
            tree::remove(&dest).expect("remove");
        }
        Err(_) => assert!(!dest.exists(), "a refused archive left files"),
    }
    let left: Vec<_> = std::fs::read_dir(&*SCRATCH).expect("scratch").collect();
    assert!(left.is_empty(), "something was written beside the destination");
});
