//! COSE_Key (RFC 9052 §7) encoding of public keys, and the RFC 9679
//! thumbprint input. Works on fixed buffers so the bootloader can decode its
//! provisioned trust anchors without an allocator.

use minicbor::encode::write::Cursor;
use minicbor::{Decoder, Encoder};

use crate::{KeyError, KeyId, PublicKey};

const KTY: i64 = 1;
const KID: i64 = 2;
const ALG: i64 = 3;
const CRV: i64 = -1;
const X: i64 = -2;
const Y: i64 = -3;
const D: i64 = -4;
const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;

/// Upper bound of [`encode_cose_key`]'s output.
pub const COSE_KEY_MAX_LEN: usize = 128;
pub(crate) const THUMBPRINT_INPUT_MAX: usize = 80;

/// Writes the deterministic encoding of the key's required members, the input
/// RFC 9679 hashes. Map keys in deterministic order: 1, -1, -2, -3.
pub(crate) fn thumbprint_input(key: &PublicKey, buf: &mut [u8; THUMBPRINT_INPUT_MAX]) -> usize {
    write_members(key, None, &mut buf[..])
}

/// Encodes `key` as a COSE_Key map carrying its key id (kid = thumbprint).
/// Returns the number of bytes written into `buf`.
pub fn encode_cose_key(key: &PublicKey, buf: &mut [u8; COSE_KEY_MAX_LEN]) -> usize {
    let kid = key.key_id();
    write_members(key, Some(&kid), &mut buf[..])
}

fn write_members(key: &PublicKey, kid: Option<&KeyId>, buf: &mut [u8]) -> usize {
    let raw = key.to_raw();
    let raw = raw.as_ref();
    let mut cursor = Cursor::new(buf);
    let mut e = Encoder::new(&mut cursor);
    let (kty, crv, x, y) = match key {
        PublicKey::Ed25519(_) => (KTY_OKP, CRV_ED25519, raw, None),
        PublicKey::P256(_) => (KTY_EC2, CRV_P256, &raw[1..33], Some(&raw[33..65])),
    };
    let entries = 3 + u64::from(y.is_some()) + u64::from(kid.is_some());
    // The buffers are sized for the largest key, so these writes cannot fail;
    // a failure would only truncate the output, never read out of bounds.
    let _ = (|| -> Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>> {
        e.map(entries)?.i64(KTY)?.i64(kty)?;
        if let Some(kid) = kid {
            e.i64(KID)?.bytes(kid.as_bytes())?;
        }
        e.i64(CRV)?.i64(crv)?.i64(X)?.bytes(x)?;
        if let Some(y) = y {
            e.i64(Y)?.bytes(y)?;
        }
        Ok(())
    })();
    cursor.position()
}

/// Decodes a COSE_Key holding an Ed25519 (OKP) or P-256 (EC2) public key.
///
/// Refused: private keys (`d`), duplicate members, members other than kty,
/// kid, alg, crv, x, y, an `alg` that does not fit the key, a `kid` that is not
/// the key's thumbprint, compressed points and trailing bytes.
pub fn decode_cose_key(bytes: &[u8]) -> Result<PublicKey, KeyError> {
    let bad = KeyError::InvalidCoseKey;
    let mut d = Decoder::new(bytes);
    let n = d.map().map_err(|_| bad("not a map"))?.ok_or(bad("indefinite-length map"))?;
    if n > 6 {
        return Err(bad("too many members"));
    }
    let (mut kty, mut crv, mut alg) = (None, None, None);
    let (mut kid, mut x, mut y) = (None::<&[u8]>, None::<&[u8]>, None::<&[u8]>);
    for _ in 0..n {
        let label = d.i64().map_err(|_| bad("member label is not an integer"))?;
        let dup = match label {
            KTY => kty.replace(d.i64().map_err(|_| bad("kty is not an integer"))?).is_some(),
            CRV => crv.replace(d.i64().map_err(|_| bad("crv is not an integer"))?).is_some(),
            ALG => alg.replace(d.i64().map_err(|_| bad("alg is not an integer"))?).is_some(),
            KID => kid.replace(d.bytes().map_err(|_| bad("kid is not a byte string"))?).is_some(),
            X => x.replace(d.bytes().map_err(|_| bad("x is not a byte string"))?).is_some(),
            Y => y
                .replace(d.bytes().map_err(|_| bad("y is not a byte string (compressed points are not supported)"))?)
                .is_some(),
            D => return Err(bad("contains a private key (d)")),
            _ => return Err(bad("unsupported member")),
        };
        if dup {
            return Err(bad("duplicate member"));
        }
    }
    if d.position() != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    let x = x.ok_or(bad("missing x"))?;
    let key = match (kty, crv) {
        (Some(KTY_OKP), Some(CRV_ED25519)) => {
            if y.is_some() {
                return Err(bad("OKP key with y"));
            }
            PublicKey::ed25519_from_bytes(x)?
        }
        (Some(KTY_EC2), Some(CRV_P256)) => PublicKey::p256_from_xy(x, y.ok_or(bad("missing y"))?)?,
        (None, _) => return Err(bad("missing kty")),
        (_, None) => return Err(bad("missing crv")),
        _ => return Err(bad("unsupported key type or curve")),
    };
    if let Some(alg) = alg {
        let alg = crate::Algorithm::from_cose_id(alg).ok_or(bad("unsupported alg"))?;
        if alg.key_type() != key.key_type() {
            return Err(KeyError::AlgorithmMismatch { alg, key: key.key_type() });
        }
    }
    if kid.is_some_and(|kid| kid != key.key_id().as_bytes()) {
        return Err(bad("kid is not the key's RFC 9679 thumbprint"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 §7.1 TEST 1 public key.
    const ED_PUB: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn ed25519_roundtrip_and_thumbprint_input() {
        let key = PublicKey::ed25519_from_bytes(&hex::decode(ED_PUB).unwrap()).unwrap();
        let mut buf = [0u8; THUMBPRINT_INPUT_MAX];
        let n = thumbprint_input(&key, &mut buf);
        // {1: 1, -1: 6, -2: h'..32..'}
        let mut expected = hex::decode("a301012006215820").unwrap();
        expected.extend(hex::decode(ED_PUB).unwrap());
        assert_eq!(&buf[..n], &expected[..]);

        let mut full = [0u8; COSE_KEY_MAX_LEN];
        let n = encode_cose_key(&key, &mut full);
        assert_eq!(decode_cose_key(&full[..n]).unwrap(), key);
    }

    #[test]
    fn rfc9679_example_thumbprint() {
        // RFC 9679 §6: the EC2 P-256 example key and its thumbprint.
        let x = hex::decode("65eda5a12577c2bae829437fe338701a10aaa375e1bb5b5de108de439c08551d").unwrap();
        let y = hex::decode("1e52ed75701163f7f9e40ddf9f341b3dc9ba860af7e0ca7ca7e9eecd0084d19c").unwrap();
        let key = PublicKey::p256_from_xy(&x, &y).unwrap();
        assert_eq!(key.key_id().to_string(), "496bd8afadf307e5b08c64b0421bf9dc01528a344a43bda88fadd1669da253ec");
    }

    #[test]
    fn refuses_private_duplicate_and_mismatched_members() {
        // {1: 1, -1: 6, -4: h'00'}
        assert!(matches!(
            decode_cose_key(&hex::decode("a30101200623410000").unwrap()),
            Err(KeyError::InvalidCoseKey(_))
        ));
        // {1: 1, 1: 1}
        assert!(matches!(
            decode_cose_key(&hex::decode("a201010101").unwrap()),
            Err(KeyError::InvalidCoseKey("duplicate member"))
        ));
        // Ed25519 key with alg ES256 (-7 = 0x26)
        let mut m = hex::decode("a40101032620062158 20".replace(' ', "").as_str()).unwrap();
        m.extend(hex::decode(ED_PUB).unwrap());
        assert!(matches!(decode_cose_key(&m), Err(KeyError::AlgorithmMismatch { .. })));
        assert!(decode_cose_key(&[]).is_err());
        assert!(decode_cose_key(&[0xa1]).is_err());
    }
}
