//! Shared by the signing and bootloader benchmarks: the baseline they time
//! `verify()` against, built without the signing crate's own code.

use gantry_keys::Algorithm;

/// Rebuilds, from the envelope's COSE_Sign1, what `gantry_signing::verify`
/// hands to `PublicKey::verify`: the algorithm, `["Signature1", protected,
/// h'', SUIT_Digest bstr]` and the signature. Read with minicbor, written by
/// hand, independent of the signing crate's own (private) code.
pub(crate) fn sig_structure_of(envelope: &[u8]) -> (Algorithm, Vec<u8>, Vec<u8>) {
    use minicbor::data::Type;
    const BAD: &str = "a well-formed envelope from gantry-signing";
    let mut d = minicbor::Decoder::new(envelope);
    if d.datatype().expect(BAD) == Type::Tag {
        assert_eq!(d.tag().expect(BAD).as_u64(), 107, "SUIT_Envelope tag");
    }
    let members = d.map().expect(BAD).expect("a definite envelope map");
    let mut auth = None;
    for _ in 0..members {
        // Integer keys (2 = authentication wrapper), or tstr integrated payloads.
        let is_auth = match d.datatype().expect(BAD) {
            Type::String => d.str().map(|_| false).expect(BAD),
            _ => d.i64().expect(BAD) == 2,
        };
        if is_auth {
            auth = Some(d.bytes().expect(BAD));
        } else {
            d.skip().expect(BAD);
        }
    }
    let mut a = minicbor::Decoder::new(auth.expect("an authentication wrapper"));
    assert!(a.array().expect(BAD).expect("a definite array") >= 2, "one signature at least");
    let digest_bstr = a.bytes().expect(BAD);
    let mut s = minicbor::Decoder::new(a.bytes().expect(BAD));
    assert_eq!(s.tag().expect(BAD).as_u64(), 18, "COSE_Sign1 tag");
    assert_eq!(s.array().expect(BAD), Some(4));
    let protected = s.bytes().expect(BAD);
    s.skip().expect(BAD); // unprotected header map
    s.null().expect("a detached payload");
    let signature = s.bytes().expect(BAD).to_vec();

    let mut p = minicbor::Decoder::new(protected);
    let mut alg = None;
    for _ in 0..p.map().expect(BAD).expect("a definite protected map") {
        if p.i64().expect(BAD) == 1 {
            alg = Some(p.i64().expect(BAD));
        } else {
            p.skip().expect(BAD);
        }
    }
    let alg = Algorithm::from_cose_id(alg.expect("alg in the protected header")).expect("a supported alg");

    let mut sig_structure = vec![0x84, 0x6a];
    sig_structure.extend_from_slice(b"Signature1");
    for part in [protected, b"", digest_bstr] {
        bstr_head(&mut sig_structure, part.len());
        sig_structure.extend_from_slice(part);
    }
    (alg, sig_structure, signature)
}

/// A definite-length CBOR bstr head (major type 2), minimal form.
fn bstr_head(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=23 => out.push(0x40 | len as u8),
        24..=0xff => out.extend_from_slice(&[0x58, len as u8]),
        0x100..=0xffff => {
            out.push(0x59);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x5a);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}
