//! The shared SUIT and COSE vectors, verified as their provenance says.

mod common;

use base64::Engine as _;
use gantry_keys::{KeyError, PublicKey};
use gantry_signing::cose::{Sign1, TagRule};
use gantry_signing::{Error, Policy, verify};

#[test]
fn draft_examples_verify_with_the_published_key() {
    let Some(v) = common::vectors() else { return };
    let key = [common::draft_key(&v)];
    for n in 0..=5u64 {
        let bytes = common::read(v.join(format!("suit/example{n}.signed.cbor")));
        let m = verify(&bytes, &Policy::new(&key, 1)).unwrap_or_else(|e| panic!("example {n}: {e}"));
        assert_eq!(m.sequence_number(), n, "example {n}");
        assert_eq!(m.signer_indices().collect::<Vec<_>>(), vec![0]);
        assert_eq!(m.vendor_id(), Some(&hex::decode("fa6b4a53d5ad5fdfbe9de663e4d41ffe").unwrap()[..]));

        let name = if n == 2 { "example2.unsigned-severed".to_owned() } else { format!("example{n}.unsigned") };
        let unsigned = common::read(v.join(format!("suit/{name}.cbor")));
        assert!(matches!(verify(&unsigned, &Policy::new(&key, 1)), Err(Error::Unsigned)), "example {n} unsigned");
    }
    let severed = common::read(v.join("suit/example2.signed-severed.cbor"));
    let m = verify(&severed, &Policy::new(&key, 1)).unwrap();
    assert!(matches!(m.section(gantry_signing::Section::Install), Err(Error::SectionSevered("install"))));
    let full = common::read(v.join("suit/example2.signed.cbor"));
    let m = verify(&full, &Policy::new(&key, 1)).unwrap();
    assert!(m.section(gantry_signing::Section::Install).unwrap().is_some());
    assert!(m.text().is_some());
}

#[test]
fn libcsuit_files_authenticate() {
    let Some(v) = common::vectors() else { return };
    let key = [common::draft_key(&v)];
    let mut full = 0;
    for entry in std::fs::read_dir(v.join("suit/libcsuit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "suit") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = common::read(path);
        let result = verify(&bytes, &Policy::new(&key, 1));
        match name.trim_start_matches("suit_manifest_") {
            // HMAC (COSE_Mac0) authentication: refused by design.
            "expAW" | "expAF" | "expAFS" => {
                assert!(matches!(result, Err(Error::UnsupportedAuthentication)), "{name}: {result:?}")
            }
            "exp0" | "exp1" | "exp2A" | "exp2B" | "exp3" | "exp4" | "exp5" => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                full += 1;
            }
            // Other drafts' features: the signature and digest must check out;
            // refusing what Gantry does not implement (dependencies) is fine.
            _ => match result {
                Ok(_) => full += 1,
                Err(
                    e @ (Error::SignatureInvalid
                    | Error::UnknownSigner
                    | Error::DigestMismatch
                    | Error::Key(_)
                    | Error::ThresholdNotMet { .. }
                    | Error::Unsigned),
                ) => panic!("{name}: authentication failed: {e}"),
                Err(e) => eprintln!("{name}: authenticated, then refused: {e}"),
            },
        }
    }
    assert!(full >= 7, "only {full} libcsuit files verified");
}

#[test]
fn derived_vectors_give_the_right_errors() {
    let Some(v) = common::vectors() else { return };
    let ed = std::fs::read_to_string(v.join("suit/derived/rfc8032-test1-ed25519-public.pem")).unwrap();
    let ed = [gantry_keys::read_public_key_pem(&ed, "ed").unwrap()];
    for f in ["example0.ed25519.signed.cbor", "example0.eddsa.signed.cbor"] {
        verify(&common::read(v.join("suit/derived").join(f)), &Policy::new(&ed, 1)).unwrap();
    }
    let es = [common::draft_key(&v)];
    let tampered = common::read(v.join("suit/derived/neg-example0.manifest-tampered.cbor"));
    assert!(matches!(verify(&tampered, &Policy::new(&es, 1)), Err(Error::DigestMismatch)));
    let badsig = common::read(v.join("suit/derived/neg-example0.signature-tampered.cbor"));
    assert!(matches!(verify(&badsig, &Policy::new(&es, 1)), Err(Error::SignatureInvalid)));
    // The right key type but the wrong key: invalid. The wrong key type: a mismatch.
    let other = [PublicKey::P256(*p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap().verifying_key())];
    let ex0 = common::read(v.join("suit/example0.signed.cbor"));
    assert!(matches!(verify(&ex0, &Policy::new(&other, 1)), Err(Error::SignatureInvalid)));
    assert!(matches!(verify(&ex0, &Policy::new(&ed, 1)), Err(Error::Key(KeyError::AlgorithmMismatch { .. }))));
    // Anti-rollback and identity.
    let ex3 = common::read(v.join("suit/example3.signed.cbor"));
    assert!(matches!(
        verify(&ex3, &Policy::new(&es, 1).min_sequence(4)),
        Err(Error::SequenceTooLow { sequence: 3, minimum: 4 })
    ));
    verify(&ex3, &Policy::new(&es, 1).min_sequence(3)).unwrap();
    let class = hex::decode("1492af1425695e48bf429b2d51f2ab45").unwrap();
    let vendor = hex::decode("fa6b4a53d5ad5fdfbe9de663e4d41ffe").unwrap();
    verify(&ex3, &Policy::new(&es, 1).identity(Some(&vendor), Some(&class))).unwrap();
    assert!(matches!(verify(&ex3, &Policy::new(&es, 1).identity(Some(&class), None)), Err(Error::WrongVendor)));
    assert!(matches!(verify(&ex3, &Policy::new(&es, 1).identity(None, Some(&vendor))), Err(Error::WrongClass)));
    // Two distinct keys required, one signed.
    assert!(matches!(
        verify(&ex0, &Policy::new(&[es[0].clone(), other[0].clone()], 2)),
        Err(Error::ThresholdNotMet { have: 1, need: 2 })
    ));
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// The COSE WG sign1 vectors: pass or fail as their `fail` flag says, except
/// algorithms outside Gantry's set (ES384, ES512, Ed448), which are refused as
/// unsupported.
#[test]
fn cose_wg_sign1_vectors() {
    let Some(v) = common::vectors() else { return };
    let mut checked = 0;
    for dir in ["ecdsa-examples", "eddsa-examples", "sign1-tests"] {
        for entry in std::fs::read_dir(v.join("cose").join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let j: serde_json::Value = serde_json::from_slice(&common::read(path.clone())).unwrap();
            let Some(s) = j["input"].get("sign0") else { continue };
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let should_fail = j.get("fail").and_then(|f| f.as_bool()).unwrap_or(false);
            let k = &s["key"];
            let key = match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("EC"), Some("P-256")) => {
                    PublicKey::p256_from_xy(&b64(k["x"].as_str().unwrap()), &b64(k["y"].as_str().unwrap())).unwrap()
                }
                (Some("OKP"), Some("Ed25519")) => {
                    PublicKey::ed25519_from_bytes(&hex::decode(k["x_hex"].as_str().unwrap()).unwrap()).unwrap()
                }
                // Ed448, P-384, P-521: keys Gantry cannot even represent.
                _ => {
                    eprintln!("{name}: key type {} {} not supported by Gantry", k["kty"], k["crv"]);
                    checked += 1;
                    continue;
                }
            };
            let aad = s.get("external").map(|e| hex::decode(e.as_str().unwrap()).unwrap()).unwrap_or_default();
            let msg = hex::decode(j["output"]["cbor"].as_str().unwrap()).unwrap();
            let result = Sign1::parse(&msg, TagRule::Optional).and_then(|m| m.verify(&key, &aad, None));
            let unsupported = matches!(s["alg"].as_str(), Some("ES384" | "ES512"));
            match (should_fail, unsupported, &result) {
                (_, true, Err(Error::UnsupportedAlgorithm(_))) => {}
                (false, false, Ok(())) => {}
                (true, false, Err(_)) => {}
                _ => panic!("{name}: fail={should_fail} unsupported={unsupported} got {result:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}
