//! Trust root documents: the signed COSE_Sign form (then self-signature
//! verification) and the bare payload decoder (then its re-encoding).
#![no_main]

use gantry_keys::trust::{SignedTrustRoot, TrustRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = SignedTrustRoot::from_bytes(data) {
        let _ = doc.signatures();
        let _ = doc.to_bytes();
        let _ = doc.verify_self_signed(0);
    }
    if let Ok(root) = TrustRoot::decode(data) {
        // decode accepts only the deterministic encoding.
        assert_eq!(root.encode(), data);
    }
});
