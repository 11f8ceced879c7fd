//! Verification of a SUIT envelope, in the order DESIGN.md fixes:
//!
//! ```text
//!  envelope ──► auth wrapper ──► COSE_Sign1 × n ──► k-of-n trusted keys?
//!                    │                                   │ yes
//!                    └─ SUIT_Digest ◄─────────────────────┘
//!                          │ == SHA-256(bstr-wrapped manifest)?
//!                          ▼
//!                      manifest ──► severable members match their digests?
//!                          ▼
//!                 sequence ≥ minimum? ──► vendor/class ids match?
//!                          ▼
//!                   VerifiedManifest
//! ```
//!
//! Nothing in the manifest is read before the signatures and the digest
//! check out: a forged manifest is never parsed beyond locating its bytes.

use gantry_keys::{KeyError, KeyId, PublicKey};

use crate::Error;
use crate::cbor::{KeyOrder, Reader};
use crate::cose::{Sign1, TagRule};
use crate::suit::envelope::{Digest, Envelope};
use crate::suit::labels::*;
use crate::suit::manifest::{Manifest, Member, Section};

/// Most signatures examined in one envelope.
pub const MAX_SIGNATURES: usize = 8;
/// Most trust anchors one policy may hold.
pub const MAX_ANCHORS: usize = 32;

/// What a manifest must satisfy to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'p> {
    /// Keys trusted to sign releases (the trust root's `release` role, or a
    /// bootloader's provisioned anchors).
    pub anchors: &'p [PublicKey],
    /// How many distinct anchors must have signed (k of n, at least 1).
    pub threshold: usize,
    /// Lowest acceptable sequence number (the installed one, for re-checks;
    /// one more than it for updates).
    pub min_sequence: u64,
    /// The device's vendor id, if the manifest must be for it.
    pub vendor_id: Option<&'p [u8]>,
    /// The device's class id, if the manifest must be for it.
    pub class_id: Option<&'p [u8]>,
}

impl<'p> Policy<'p> {
    /// A policy requiring `threshold` of `anchors`, no sequence or identity check.
    pub fn new(anchors: &'p [PublicKey], threshold: usize) -> Self {
        Policy { anchors, threshold, min_sequence: 0, vendor_id: None, class_id: None }
    }

    /// Also require a sequence number of at least `min`.
    pub fn min_sequence(mut self, min: u64) -> Self {
        self.min_sequence = min;
        self
    }

    /// Also require these vendor and class ids.
    pub fn identity(mut self, vendor_id: Option<&'p [u8]>, class_id: Option<&'p [u8]>) -> Self {
        self.vendor_id = vendor_id;
        self.class_id = class_id;
        self
    }
}

/// A manifest whose signatures, digest, severable members, sequence number
/// and identity were checked against a [`Policy`]. Only [`verify`] makes one,
/// and [`verify_pinned`], for what the device verified so before.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedManifest<'a> {
    envelope: Envelope<'a>,
    manifest: Manifest<'a>,
    digest: [u8; 32],
    signers: u32,
}

impl<'a> VerifiedManifest<'a> {
    /// The envelope it came from. Its members outside the manifest are not
    /// covered by the signatures: read integrated payloads through
    /// [`integrated_payload`](Self::integrated_payload), which checks them
    /// against the digest and size signed for their component.
    pub fn envelope(&self) -> &Envelope<'a> {
        &self.envelope
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest<'a> {
        &self.manifest
    }

    /// The sequence number.
    pub fn sequence_number(&self) -> u64 {
        self.manifest.sequence
    }

    /// SHA-256 of the bstr-wrapped manifest: the manifest's identity in
    /// tickets, attestation and audit records.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Indices into [`Policy::anchors`] of the keys that signed.
    pub fn signer_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_ANCHORS).filter(|i| self.signers & (1 << i) != 0)
    }

    /// The command sequence of `section`, resolving severed members from the
    /// envelope (already checked against their digests).
    pub fn section(&self, section: Section) -> Result<Option<&'a [u8]>, Error> {
        let m = &self.manifest;
        let severable = |key| match m.severable(key) {
            Member::Absent => Ok(None),
            Member::Inline(b) => Ok(Some(b)),
            Member::Severed(_) => match self.envelope.severable(key) {
                Some(w) => Ok(Some(w.content)),
                None => Err(Error::SectionSevered(section.name())),
            },
        };
        match section {
            Section::Validate => Ok(m.validate),
            Section::Load => Ok(m.load),
            Section::Invoke => Ok(m.invoke),
            Section::Install => severable(INSTALL),
            Section::PayloadFetch => severable(PAYLOAD_FETCH),
        }
    }

    /// The text member (`suit-text`), inline or from the envelope.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self.manifest.severable(TEXT) {
            Member::Inline(b) => Some(b),
            Member::Severed(_) => self.envelope.severable(TEXT).map(|w| w.content),
            Member::Absent => None,
        }
    }

    /// The vendor id the shared sequence declares (first one set).
    pub fn vendor_id(&self) -> Option<&'a [u8]> {
        declared_identity(&self.manifest, PARAM_VENDOR_ID).ok().flatten().map(|(first, _)| first)
    }

    /// The class id the shared sequence declares (first one set).
    pub fn class_id(&self) -> Option<&'a [u8]> {
        declared_identity(&self.manifest, PARAM_CLASS_ID).ok().flatten().map(|(first, _)| first)
    }
}

/// Verifies `envelope` under `policy`. See the module documentation for the order.
pub fn verify<'a>(envelope: &'a [u8], policy: &Policy<'_>) -> Result<VerifiedManifest<'a>, Error> {
    if policy.anchors.is_empty() || policy.threshold == 0 || policy.threshold > policy.anchors.len() {
        return Err(Error::Invalid("policy: threshold must be between 1 and the number of trusted keys"));
    }
    if policy.anchors.len() > MAX_ANCHORS {
        return Err(Error::LimitExceeded { what: "trusted keys", limit: MAX_ANCHORS });
    }
    // A key listed twice would let one signature count twice toward k.
    for (i, a) in policy.anchors.iter().enumerate() {
        if policy.anchors[..i].contains(a) {
            return Err(Error::Invalid("policy: the same key is trusted twice"));
        }
    }
    let env = Envelope::parse(envelope)?;
    let (digest_bstr, signers) = check_signatures(env.auth, policy)?;
    check_manifest(env, digest_bstr, signers, policy)
}

/// Checks an envelope this device accepted earlier under [`verify`], by the
/// manifest digest it recorded then in state only it writes (the slot
/// table): the manifest must hash to `pinned`, and its severable members,
/// sequence number and identity are checked under `policy` as [`verify`]
/// does; its signatures are not looked at, and `policy`'s anchors and
/// threshold are ignored.
///
/// This re-checks integrity from flash, at every start, of what already
/// runs: its keys may since have been rotated out of the trust root (which
/// stops them from signing anything *new*), and the trust root may have
/// expired (which stops new installs), and neither may stop software the
/// device verified when it was installed. Never use it to accept a release.
pub fn verify_pinned<'a>(
    envelope: &'a [u8],
    pinned: &[u8; 32],
    policy: &Policy<'_>,
) -> Result<VerifiedManifest<'a>, Error> {
    let env = Envelope::parse(envelope)?;
    let mut r = Reader::new(env.auth);
    if r.array("authentication wrapper array")? == 0 {
        return Err(Error::Missing("SUIT_Digest in authentication wrapper"));
    }
    let digest_bstr = r.bytes("digest bstr")?;
    let verified = check_manifest(env, digest_bstr, 0, policy)?;
    if verified.digest != *pinned {
        return Err(Error::DigestMismatch);
    }
    Ok(verified)
}

/// Everything after the signatures: the digest, the severable members, the
/// sequence number and the identity.
fn check_manifest<'a>(
    env: Envelope<'a>,
    digest_bstr: &'a [u8],
    signers: u32,
    policy: &Policy<'_>,
) -> Result<VerifiedManifest<'a>, Error> {
    let digest = Digest::parse(digest_bstr)?;
    if !digest.matches(env.manifest.wrapped)? {
        return Err(Error::DigestMismatch);
    }
    let digest_bytes = digest.sha256().ok_or(Error::Invalid("SHA-256 digest length"))?;

    let manifest = Manifest::parse(env.manifest.content)?;
    for key in SEVERABLE {
        match (env.severable(key), manifest.severable(key)) {
            (Some(w), Member::Severed(d)) => {
                if !d.matches(w.wrapped)? {
                    return Err(Error::SeverableMismatch(key as u64));
                }
            }
            (Some(_), _) => return Err(Error::UnexpectedSeverable(key as u64)),
            (None, _) => {}
        }
    }

    if manifest.sequence < policy.min_sequence {
        return Err(Error::SequenceTooLow { sequence: manifest.sequence, minimum: policy.min_sequence });
    }
    check_identity(&manifest, PARAM_VENDOR_ID, policy.vendor_id, Error::WrongVendor, "vendor id")?;
    check_identity(&manifest, PARAM_CLASS_ID, policy.class_id, Error::WrongClass, "class id")?;

    Ok(VerifiedManifest { envelope: env, manifest, digest: digest_bytes, signers })
}

/// Checks the COSE_Sign1 blocks; returns the signed digest bstr content and
/// the bit set of anchors with a valid signature.
fn check_signatures<'a>(auth: &'a [u8], policy: &Policy<'_>) -> Result<(&'a [u8], u32), Error> {
    let mut r = Reader::new(auth);
    let n = r.array("authentication wrapper array")? as usize;
    if n == 0 {
        return Err(Error::Missing("SUIT_Digest in authentication wrapper"));
    }
    let digest_bstr = r.bytes("digest bstr")?;
    if n == 1 {
        return Err(Error::Unsigned);
    }
    if n - 1 > MAX_SIGNATURES {
        return Err(Error::LimitExceeded { what: "signatures", limit: MAX_SIGNATURES });
    }
    let (mut signers, mut bad, mut unknown, mut mismatch, mut unsupported) = (0u32, false, false, None, None);
    for _ in 1..n {
        let block = r.bytes("authentication block bstr")?;
        // A signature in an algorithm this verifier lacks (a future one, next
        // to a classic one) cannot count, but must not veto the others.
        let sig = match Sign1::parse(block, TagRule::Required) {
            Err(Error::UnsupportedAlgorithm(a)) => {
                unsupported = Some(a);
                continue;
            }
            other => other?,
        };
        if !sig.algorithm_is_protected() {
            return Err(Error::Invalid("algorithm must be in the protected header"));
        }
        if sig.payload().is_some() {
            return Err(Error::AttachedPayload);
        }
        // A 32-byte kid is a Gantry key id (RFC 9679 thumbprint): it names
        // exactly one candidate. Other kids are opaque hints; try every key.
        let named = sig.key_id().and_then(KeyId::from_slice);
        let mut candidates = 0;
        for (i, anchor) in policy.anchors.iter().enumerate() {
            if named.is_some_and(|k| k != anchor.key_id()) {
                continue;
            }
            if anchor.key_type() != sig.algorithm().key_type() {
                mismatch = Some(KeyError::AlgorithmMismatch { alg: sig.algorithm(), key: anchor.key_type() });
                continue;
            }
            candidates += 1;
            match sig.verify(anchor, b"", Some(digest_bstr)) {
                Ok(()) => signers |= 1 << i,
                Err(Error::Key(KeyError::BadSignature | KeyError::MalformedSignature(_))) => bad = true,
                Err(e) => return Err(e),
            }
        }
        if candidates == 0 && named.is_some() && mismatch.is_none() {
            unknown = true;
        }
    }
    r.finish("authentication wrapper")?;
    let have = signers.count_ones() as usize;
    if have >= policy.threshold {
        return Ok((digest_bstr, signers));
    }
    Err(match (have, bad, mismatch, unknown, unsupported) {
        (0, true, ..) => Error::SignatureInvalid,
        (0, false, Some(m), ..) => Error::Key(m),
        (0, false, None, false, Some(alg)) => Error::UnsupportedAlgorithm(alg),
        (0, false, None, ..) => Error::UnknownSigner,
        _ => Error::ThresholdNotMet { have, need: policy.threshold },
    })
}

fn check_identity(
    m: &Manifest<'_>,
    param: i64,
    expected: Option<&[u8]>,
    wrong: Error,
    name: &'static str,
) -> Result<(), Error> {
    let Some(expected) = expected else { return Ok(()) };
    match declared_identity(m, param)? {
        None => Err(Error::MissingIdentity(name)),
        Some((first, all_same)) if first == expected && all_same => Ok(()),
        Some(_) => Err(wrong),
    }
}

/// The first value of `param` set by a top-level override-parameters in the
/// shared sequence, and whether every other top-level setting agrees with it.
fn declared_identity<'a>(m: &Manifest<'a>, param: i64) -> Result<Option<(&'a [u8], bool)>, Error> {
    let Some(seq) = m.shared_sequence else { return Ok(None) };
    let mut r = Reader::new(seq);
    let n = r.array("shared sequence")?;
    if n % 2 != 0 {
        return Err(Error::Invalid("command sequence must have command/argument pairs"));
    }
    let (mut first, mut same) = (None, true);
    for _ in 0..n / 2 {
        if r.i64("command")? != DIR_OVERRIDE_PARAMETERS {
            r.skip()?;
            continue;
        }
        let entries = r.map("parameters map")?;
        let mut order = KeyOrder::new();
        for _ in 0..entries {
            if r.int_key(&mut order)? == param {
                let v = r.bytes("identifier bstr")?;
                match first {
                    None => first = Some(v),
                    Some(f) => same &= f == v,
                }
            } else {
                r.skip()?;
            }
        }
    }
    Ok(first.map(|f| (f, same)))
}
