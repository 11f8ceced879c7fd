//! Writes seeds for the `cose_key` and `trust_root` fuzz targets into
//! `<corpus>/cose_key/` and `<corpus>/trust_root/`. Deterministic: the keys
//! are the SUIT draft's example ES256 key and the RFC 8032 TEST 1 key.

use std::path::{Path, PathBuf};

use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{COSE_KEY_MAX_LEN, FileKeySource, KeySource, SigningKey, encode_cose_key, read_private_key_pem};

const RFC8032_TEST1_SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5,
    0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let corpus = PathBuf::from(args.next().expect("usage: seedgen <corpus-dir> <suit-es256-private.pem>"));
    let pem = std::fs::read_to_string(args.next().expect("missing PEM path")).unwrap();

    let p256 = FileKeySource::from_key("suit-example".into(), read_private_key_pem(&pem, "SUIT example key").unwrap());
    let ed = FileKeySource::from_key(
        "rfc8032-test1".into(),
        SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&RFC8032_TEST1_SECRET)),
    );

    let keys_dir = corpus.join("cose_key");
    for (name, src) in [("p256", &p256), ("ed25519", &ed)] {
        let mut buf = [0u8; COSE_KEY_MAX_LEN];
        let n = encode_cose_key(src.public_key(), &mut buf);
        write(&keys_dir, &format!("{name}-with-kid.cbor"), &buf[..n]);
        write(&keys_dir, &format!("{name}-to_cose_key.cbor"), &src.public_key().to_cose_key());
    }

    let tr_dir = corpus.join("trust_root");
    let (pk, ek) = (p256.public_key().clone(), ed.public_key().clone());
    let variants: [(&str, u64, u32, &[&FileKeySource]); 4] = [
        ("both-signed-th2", 1, 2, &[&p256, &ed]),
        ("p256-signed-th1", 2, 1, &[&p256]),
        ("unsigned-th1", 3, 1, &[]),
        ("ed-signed-th2", 4, 2, &[&ed]),
    ];
    for (name, version, threshold, signers) in variants {
        let root = TrustRoot::new(
            version,
            2_000_000_000,
            &[
                (Role::Root, vec![pk.clone(), ek.clone()], threshold),
                (Role::Release, vec![pk.clone()], 1),
                (Role::Server, vec![ek.clone()], 1),
            ],
        )
        .unwrap();
        write(&tr_dir, &format!("{name}.payload.cbor"), &root.encode());
        let mut doc = SignedTrustRoot::new(root).unwrap();
        for s in signers {
            doc.sign_with(*s as &dyn KeySource).unwrap();
        }
        write(&tr_dir, &format!("{name}.cose"), &doc.to_bytes());
    }
    println!("wrote seeds under {}", corpus.display());
}
