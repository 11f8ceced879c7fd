//! COSE_Sign1 (RFC 9052 §4.2) on borrowed bytes, verified without allocation.
//!
//! The Sig_structure is assembled in a fixed stack buffer of
//! [`SIG_STRUCTURE_MAX`] bytes, enough for SUIT's detached digests and any
//! small attached payload; larger messages are refused, not truncated.

use gantry_keys::{Algorithm, PublicKey};

use crate::Error;
use crate::cbor::{Key, Reader};

/// Tag of COSE_Sign1.
pub const TAG_SIGN1: u64 = 18;
/// Tag of COSE_Mac0, recognized only to refuse it clearly.
pub const TAG_MAC0: u64 = 17;
/// Largest Sig_structure this verifier assembles.
pub const SIG_STRUCTURE_MAX: usize = 1024;

const HDR_ALG: i64 = 1;
const HDR_CRIT: i64 = 2;
const HDR_KID: i64 = 4;

/// Whether the COSE_Sign1 tag must be present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagRule {
    /// Tag 18 required (SUIT authentication blocks).
    Required,
    /// Tagged or untagged both accepted.
    Optional,
}

/// A parsed, not yet verified COSE_Sign1.
#[derive(Clone, Copy, Debug)]
pub struct Sign1<'b> {
    protected: &'b [u8],
    alg: Algorithm,
    alg_protected: bool,
    kid: Option<&'b [u8]>,
    payload: Option<&'b [u8]>,
    signature: &'b [u8],
}

#[derive(Default)]
struct Headers<'b> {
    alg: Option<i64>,
    kid: Option<&'b [u8]>,
}

impl<'b> Sign1<'b> {
    /// Parses a COSE_Sign1. Refuses unknown algorithms, critical headers it
    /// does not understand, labels present in both header buckets, and
    /// trailing bytes.
    pub fn parse(bytes: &'b [u8], tag: TagRule) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        match r.maybe_tag()? {
            Some(TAG_SIGN1) => {}
            Some(TAG_MAC0) => return Err(Error::UnsupportedAuthentication),
            Some(found) => return Err(Error::WrongTag { expected: TAG_SIGN1, found }),
            None if tag == TagRule::Required => return Err(Error::Missing("COSE_Sign1 tag 18")),
            None => {}
        }
        if r.array("COSE_Sign1 array")? != 4 {
            return Err(Error::Invalid("COSE_Sign1 must have 4 elements"));
        }
        let protected = r.bytes("protected header bstr")?;
        // An empty map encoded inside the bstr means "no protected headers";
        // RFC 9052 wants h'' but the COSE WG vectors (sign-pass-01) use h'A0'.
        let protected = if protected == [0xa0] { &protected[..0] } else { protected };
        let mut ph = Headers::default();
        if !protected.is_empty() {
            let mut pr = Reader::new(protected);
            parse_headers(&mut pr, &mut ph, true)?;
            pr.finish("protected header")?;
        }
        let mut uh = Headers::default();
        parse_headers(&mut r, &mut uh, false)?;
        if ph.alg.is_some() && uh.alg.is_some() || ph.kid.is_some() && uh.kid.is_some() {
            return Err(Error::Invalid("header parameter in both protected and unprotected buckets"));
        }
        let payload = if r.null()? { None } else { Some(r.bytes("payload bstr or nil")?) };
        let signature = r.bytes("signature bstr")?;
        r.finish("COSE_Sign1")?;
        let (alg, alg_protected) = match (ph.alg, uh.alg) {
            (Some(a), _) => (a, true),
            (None, Some(a)) => (a, false),
            (None, None) => return Err(Error::Missing("alg header")),
        };
        let alg = Algorithm::from_cose_id(alg).ok_or(Error::UnsupportedAlgorithm(alg))?;
        Ok(Sign1 { protected, alg, alg_protected, kid: ph.kid.or(uh.kid), payload, signature })
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Whether the algorithm came from the protected (signed) header.
    pub fn algorithm_is_protected(&self) -> bool {
        self.alg_protected
    }

    /// The key id header, if any.
    pub fn key_id(&self) -> Option<&'b [u8]> {
        self.kid
    }

    /// The attached payload, or `None` if detached.
    pub fn payload(&self) -> Option<&'b [u8]> {
        self.payload
    }

    /// Verifies with `key`. `detached` supplies the payload when the message
    /// carries none; supplying one for an attached payload is an error.
    pub fn verify(&self, key: &PublicKey, external_aad: &[u8], detached: Option<&[u8]>) -> Result<(), Error> {
        let payload = match (self.payload, detached) {
            (Some(p), None) => p,
            (None, Some(p)) => p,
            (Some(_), Some(_)) => return Err(Error::AttachedPayload),
            (None, None) => return Err(Error::Missing("detached payload")),
        };
        let mut buf = [0u8; SIG_STRUCTURE_MAX];
        let n = sig_structure(&mut buf, self.protected, external_aad, payload)?;
        key.verify(self.alg, &buf[..n], self.signature).map_err(Error::from)
    }
}

fn parse_headers<'b>(r: &mut Reader<'b>, h: &mut Headers<'b>, protected: bool) -> Result<(), Error> {
    let n = r.map("header map")?;
    // Header maps need not be in deterministic order (RFC 9052 does not
    // require it), but a label may appear only once.
    let mut seen_crit = false;
    for _ in 0..n {
        let mut order = crate::cbor::KeyOrder::new();
        match r.any_key(&mut order)? {
            Key::Int(HDR_ALG) => {
                if h.alg.is_some() {
                    return Err(Error::DuplicateKey { offset: r.position() });
                }
                h.alg = Some(match r.datatype()? {
                    minicbor::data::Type::String | minicbor::data::Type::StringIndef => {
                        r.skip()?;
                        return Err(Error::UnsupportedAlgorithm(0));
                    }
                    _ => r.i64("alg")?,
                });
            }
            Key::Int(HDR_KID) => {
                if h.kid.is_some() {
                    return Err(Error::DuplicateKey { offset: r.position() });
                }
                h.kid = Some(r.bytes("kid bstr")?);
            }
            Key::Int(HDR_CRIT) => {
                if !protected {
                    return Err(Error::Invalid("crit must be a protected header"));
                }
                if seen_crit {
                    return Err(Error::DuplicateKey { offset: r.position() });
                }
                seen_crit = true;
                // Nothing this verifier reads may be marked critical beyond
                // what it always understands (alg, kid); anything else is an
                // extension it cannot honour.
                let m = r.array("crit array")?;
                if m == 0 {
                    return Err(Error::Invalid("empty crit array"));
                }
                for _ in 0..m {
                    match r.datatype()? {
                        minicbor::data::Type::String => return Err(Error::UnknownCriticalHeader),
                        _ => match r.i64("crit label")? {
                            HDR_ALG | HDR_KID => {}
                            _ => return Err(Error::UnknownCriticalHeader),
                        },
                    }
                }
            }
            _ => r.skip()?,
        }
    }
    Ok(())
}

/// Writes `["Signature1", protected, external_aad, payload]` into `buf`.
pub(crate) fn sig_structure(buf: &mut [u8], protected: &[u8], aad: &[u8], payload: &[u8]) -> Result<usize, Error> {
    let mut w = SliceWriter { buf, pos: 0 };
    w.put(&[0x84, 0x6a])?;
    w.put(b"Signature1")?;
    for part in [protected, aad, payload] {
        w.header(2, part.len() as u64)?;
        w.put(part)?;
    }
    Ok(w.pos)
}

pub(crate) struct SliceWriter<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
}

impl SliceWriter<'_> {
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(bytes.len()).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(Error::LimitExceeded { what: "Sig_structure size", limit: self.buf.len() })?;
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// A CBOR head of major type `major` with argument `v`, minimal form.
    pub(crate) fn header(&mut self, major: u8, v: u64) -> Result<(), Error> {
        let m = major << 5;
        let b = v.to_be_bytes();
        match v {
            0..=23 => self.put(&[m | v as u8]),
            24..=0xff => self.put(&[m | 24, v as u8]),
            0x100..=0xffff => self.put(&[m | 25, b[6], b[7]]),
            0x1_0000..=0xffff_ffff => self.put(&[m | 26, b[4], b[5], b[6], b[7]]),
            _ => {
                self.put(&[m | 27])?;
                self.put(&b)
            }
        }
    }
}
