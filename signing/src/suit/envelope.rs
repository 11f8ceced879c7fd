//! The SUIT envelope: where the authentication wrapper, the manifest and
//! the severable members sit. Parsing locates them and checks the CBOR shape;
//! it interprets nothing, because nothing is trusted before the signature.

use crate::Error;
use crate::cbor::{Key, KeyOrder, Reader};
use crate::suit::labels::*;

/// Most severable members, integrated payloads and unknown members together.
const MAX_MEMBERS: u64 = 32;

/// A bstr member: its bytes with the CBOR header (what digests cover) and
/// without (what parsers read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrapped<'a> {
    /// Header + content.
    pub wrapped: &'a [u8],
    /// Content only.
    pub content: &'a [u8],
}

/// A parsed envelope; nothing in it is verified.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    bytes: &'a [u8],
    pub(crate) auth: &'a [u8],
    pub(crate) manifest: Wrapped<'a>,
    pub(crate) severable: [Option<Wrapped<'a>>; 3],
    tagged: bool,
}

impl<'a> Envelope<'a> {
    /// Parses an envelope, tagged (107) or not. Map keys must be unique and in
    /// deterministic order.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let tagged = match r.maybe_tag()? {
            Some(TAG_ENVELOPE) => true,
            Some(found) => return Err(Error::WrongTag { expected: TAG_ENVELOPE, found }),
            None => false,
        };
        let n = r.map("envelope map")?;
        if n > MAX_MEMBERS {
            return Err(Error::LimitExceeded { what: "envelope members", limit: MAX_MEMBERS as usize });
        }
        let mut order = KeyOrder::new();
        let (mut auth, mut manifest) = (None, None);
        let mut severable = [None; 3];
        for _ in 0..n {
            match r.any_key(&mut order)? {
                Key::Int(AUTHENTICATION_WRAPPER) => auth = Some(r.bytes("authentication wrapper bstr")?),
                Key::Int(MANIFEST) => {
                    let (wrapped, content) = r.bytes_with_header("manifest bstr")?;
                    manifest = Some(Wrapped { wrapped, content });
                }
                Key::Int(k) if SEVERABLE.contains(&k) => {
                    let (wrapped, content) = r.bytes_with_header("severable member bstr")?;
                    severable[severable_slot(k)] = Some(Wrapped { wrapped, content });
                }
                // Integrated payloads (tstr keys) must be byte strings.
                Key::Text(_) => {
                    r.bytes("integrated payload bstr")?;
                }
                // Other members (delegation, extensions) are not used by Gantry
                // and are never read: skipping them cannot change what is verified.
                Key::Int(_) => r.skip()?,
            }
        }
        r.finish("envelope")?;
        Ok(Envelope {
            bytes,
            auth: auth.ok_or(Error::Missing("authentication wrapper"))?,
            manifest: manifest.ok_or(Error::Missing("manifest"))?,
            severable,
            tagged,
        })
    }

    /// The whole envelope.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the envelope carried tag 107.
    pub fn is_tagged(&self) -> bool {
        self.tagged
    }

    /// The manifest bstr.
    pub fn manifest(&self) -> Wrapped<'a> {
        self.manifest
    }

    /// The authentication wrapper's content.
    pub fn authentication_wrapper(&self) -> &'a [u8] {
        self.auth
    }

    /// The severable member with `key`, if present in the envelope.
    pub fn severable(&self, key: i64) -> Option<Wrapped<'a>> {
        SEVERABLE.contains(&key).then(|| self.severable[severable_slot(key)]).flatten()
    }

    /// The integrated payload named `name` (e.g. `#config`), **unchecked**:
    /// these bytes are not covered by any signature. After verification, use
    /// [`VerifiedManifest::integrated_payload`](crate::VerifiedManifest::integrated_payload),
    /// which checks them against the digest and size signed for their component.
    pub fn integrated_payload(&self, name: &str) -> Option<&'a [u8]> {
        // The envelope parsed once already, so this re-scan cannot fail
        // differently; any error just means "absent".
        let mut r = Reader::new(self.bytes);
        r.maybe_tag().ok()?;
        let n = r.map("envelope").ok()?;
        let mut order = KeyOrder::new();
        for _ in 0..n {
            match r.any_key(&mut order).ok()? {
                Key::Text(t) if t == name => return r.bytes("payload").ok(),
                _ => r.skip().ok()?,
            }
        }
        None
    }

    /// The names of all integrated payloads.
    pub fn integrated_payload_names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut r = Reader::new(self.bytes);
        let n = r.maybe_tag().and_then(|_| r.map("envelope")).unwrap_or(0);
        let mut order = KeyOrder::new();
        (0..n)
            .map_while(move |_| {
                let key = r.any_key(&mut order).ok()?;
                r.skip().ok()?;
                Some(key)
            })
            .filter_map(|k| match k {
                Key::Text(t) => Some(t),
                Key::Int(_) => None,
            })
    }
}

pub(crate) fn severable_slot(key: i64) -> usize {
    match key {
        PAYLOAD_FETCH => 0,
        INSTALL => 1,
        _ => 2,
    }
}

/// A SUIT_Digest: `[algorithm-id, bytes]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest<'a> {
    /// COSE algorithm id (-16 = SHA-256).
    pub algorithm: i64,
    /// The digest bytes.
    pub bytes: &'a [u8],
}

impl<'a> Digest<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        if r.array("SUIT_Digest array")? != 2 {
            return Err(Error::Invalid("SUIT_Digest must have 2 elements"));
        }
        let algorithm = r.i64("digest algorithm id")?;
        let bytes = r.bytes("digest bytes")?;
        Ok(Digest { algorithm, bytes })
    }

    /// Parses a bstr-wrapped SUIT_Digest's content.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let d = Self::read(&mut r)?;
        r.finish("SUIT_Digest")?;
        Ok(d)
    }

    /// Whether `data` hashes to this digest. Only SHA-256 is supported.
    pub fn matches(&self, data: &[u8]) -> Result<bool, Error> {
        use sha2::Digest as _;
        if self.algorithm != DIGEST_SHA256 {
            return Err(Error::UnsupportedDigest(self.algorithm));
        }
        Ok(self.bytes == &sha2::Sha256::digest(data)[..])
    }

    /// The SHA-256 digest bytes, if this is a SHA-256 digest of the right length.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        (self.algorithm == DIGEST_SHA256).then(|| self.bytes.try_into().ok()).flatten()
    }
}
