//! Deployment tickets: the update server's short-lived word on what one
//! device should run now (the Uptane "director" role).
//!
//! ```text
//!  device ── check-in {nonce} ─────────────────────────────► server
//!  device ◄── COSE_Sign1(server key, aad "gantry-ticket-v1") ─┘
//!               { device id, nonce, issued-at, expires-at,
//!                 stream → (manifest digest, sequence, envelope sha256) }
//!
//!  verify_ticket():  a server-role key signed it ──► device id is ours
//!                    ──► nonce is the one we sent ──► not expired (if we
//!                    have a clock) ──► issued-at ≥ last ticket accepted
//!                    ──► VerifiedTicket
//! ```
//!
//! A release manifest says *what* may run (offline release keys); a ticket
//! says *which device* should run it *now* (the server's online key). A
//! device installs a manifest only if it verifies under the release role
//! and a fresh ticket names its digest: a stolen server key alone cannot
//! make up code, a stolen release key alone cannot target a device, and a
//! replayed old ticket carries an old nonce (freeze attack), so a device
//! needs no clock to refuse it.
//!
//! Like the rest of the verification core this is `no_std` and allocates
//! nothing: the Sig_structure is assembled in a stack buffer of
//! [`MAX_TICKET_LEN`] + 64 bytes, and the payload is read from the borrowed
//! bytes. Nothing in the payload is read before the signature checks out.
//! The external AAD `gantry-ticket-v1` separates tickets from every other
//! object Gantry signs (a login proof's signature can never pass as a
//! ticket's, whatever its payload).

use gantry_keys::{KeyId, PublicKey};

use crate::Error;
use crate::cbor::{Key, KeyOrder, Reader};
use crate::cose::{Sign1, TagRule, sig_structure};

/// External AAD of a ticket's Sig_structure: the domain and format version.
pub const TICKET_AAD: &[u8] = b"gantry-ticket-v1";
/// Largest encoded ticket (COSE_Sign1 bytes) accepted.
pub const MAX_TICKET_LEN: usize = 4096;
/// Most stream assignments one ticket carries.
pub const MAX_ASSIGNMENTS: usize = 32;
/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME: usize = 64;
/// Shortest nonce a device may send.
pub const NONCE_MIN: usize = 16;
/// Longest nonce a device may send.
pub const NONCE_MAX: usize = 32;

const SIG_BUF: usize = MAX_TICKET_LEN + 64;

const T_DEVICE: i64 = 1;
const T_NONCE: i64 = 2;
const T_ISSUED: i64 = 3;
const T_EXPIRES: i64 = 4;
const T_ASSIGNMENTS: i64 = 5;
const A_MANIFEST: i64 = 1;
const A_SEQUENCE: i64 = 2;
const A_ENVELOPE: i64 = 3;

/// Why a ticket was refused. Each check of [`verify_ticket`] has its own
/// variant, so a device can report exactly which one failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// Not a well-formed ticket (CBOR, COSE structure, payload members).
    #[error("malformed ticket: {0}")]
    Format(#[from] Error),
    /// Larger than [`MAX_TICKET_LEN`].
    #[error("ticket of {len} bytes exceeds the limit of {MAX_TICKET_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The trust root's `server` role has no key.
    #[error("no server key to check the ticket with")]
    NoServerKeys,
    /// A ticket carries one signature; a trust root that asks for more
    /// server signatures than that cannot authorize tickets.
    #[error("the trust root requires {threshold} server signatures, a ticket carries one")]
    ServerThreshold {
        /// The server role's threshold.
        threshold: u32,
    },
    /// No server-role key fits the ticket's key id and algorithm.
    #[error("ticket signed by a key that is not a server key of the trust root")]
    UnknownSigner,
    /// The signature does not verify under the server key.
    #[error("ticket signature invalid")]
    SignatureInvalid,
    /// The ticket names another device.
    #[error("ticket is for another device")]
    WrongDevice,
    /// The ticket does not echo the nonce this device sent: a replayed or
    /// misrouted answer.
    #[error("ticket nonce does not match the check-in's nonce (replayed ticket)")]
    NonceMismatch,
    /// Expired according to the device's clock.
    #[error("ticket expired at {expires_at} (now {now})")]
    Expired {
        /// The ticket's expiry, Unix seconds.
        expires_at: u64,
        /// The device's time.
        now: u64,
    },
    /// Issued before the last ticket this device accepted.
    #[error("ticket issued at {issued_at}, before the last accepted ticket ({last_accepted})")]
    Stale {
        /// The ticket's issue time.
        issued_at: u64,
        /// Issue time of the last accepted ticket.
        last_accepted: u64,
    },
}

impl TicketError {
    /// A stable, machine-readable name of the cause (e.g. `nonce-mismatch`).
    pub fn code(&self) -> &'static str {
        match self {
            TicketError::Format(e) => e.code(),
            TicketError::TooLarge { .. } => "limit-exceeded",
            TicketError::NoServerKeys | TicketError::ServerThreshold { .. } => "server-policy",
            TicketError::UnknownSigner => "unknown-signer",
            TicketError::SignatureInvalid => "signature-invalid",
            TicketError::WrongDevice => "wrong-device",
            TicketError::NonceMismatch => "nonce-mismatch",
            TicketError::Expired { .. } => "expired",
            TicketError::Stale { .. } => "stale",
        }
    }
}

/// What a ticket must satisfy on this device.
#[derive(Clone, Copy, Debug)]
pub struct TicketPolicy<'p> {
    /// The keys of the provisioned trust root's `server` role.
    pub server_keys: &'p [PublicKey],
    /// The `server` role's threshold; anything but 1 is refused.
    pub server_threshold: u32,
    /// This device's id.
    pub device_id: &'p str,
    /// The nonce this device sent with the check-in the ticket answers.
    pub nonce: &'p [u8],
    /// The device's time (Unix seconds), if it has a trustworthy clock.
    pub now: Option<u64>,
    /// Issue time of the last ticket this device accepted, if any.
    pub last_issued_at: Option<u64>,
}

/// One stream's assignment: the release the device should run on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment<'a> {
    /// The stream: a container name, or `firmware`.
    pub stream: &'a str,
    /// SUIT digest of the manifest (SHA-256 of the bstr-wrapped manifest).
    pub manifest_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// SHA-256 of the whole envelope, which names its blob
    /// (`/blobs/sha256/<hex>`).
    pub envelope_sha256: [u8; 32],
}

/// A ticket's contents, parsed but not necessarily verified.
#[derive(Clone, Copy, Debug)]
pub struct TicketContents<'a> {
    device_id: &'a str,
    nonce: &'a [u8],
    issued_at: u64,
    expires_at: u64,
    assignments: &'a [u8],
    count: usize,
}

impl<'a> TicketContents<'a> {
    /// The device the ticket is for.
    pub fn device_id(&self) -> &'a str {
        self.device_id
    }

    /// The nonce it echoes.
    pub fn nonce(&self) -> &'a [u8] {
        self.nonce
    }

    /// Issue time, Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// Expiry, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// Number of assignments.
    pub fn assignment_count(&self) -> usize {
        self.count
    }

    /// The assignments, in the ticket's (deterministic) order.
    pub fn assignments(&self) -> Assignments<'a> {
        let mut r = Reader::new(self.assignments);
        // Checked when the contents were parsed.
        let left = r.map("assignments").map(|n| n as usize).unwrap_or(0);
        Assignments { r, left }
    }

    /// The assignment of `stream`, if the ticket has one.
    pub fn assignment(&self, stream: &str) -> Option<Assignment<'a>> {
        self.assignments().find(|a| a.stream == stream)
    }
}

/// Iterator over a ticket's assignments.
pub struct Assignments<'a> {
    r: Reader<'a>,
    left: usize,
}

impl core::fmt::Debug for Assignments<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Assignments").field("left", &self.left).finish()
    }
}

impl<'a> Iterator for Assignments<'a> {
    type Item = Assignment<'a>;

    fn next(&mut self) -> Option<Assignment<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were checked when the ticket was parsed; a failure here
        // cannot happen, and ends the iteration if it did.
        let mut order = KeyOrder::new();
        match self.r.any_key(&mut order) {
            Ok(Key::Text(stream)) => read_assignment(&mut self.r, stream).ok(),
            _ => None,
        }
    }
}

/// A ticket whose signature, device id, nonce, expiry and issue time were
/// checked against a [`TicketPolicy`]. Only [`verify_ticket`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedTicket<'a> {
    contents: TicketContents<'a>,
    signer: KeyId,
}

impl<'a> VerifiedTicket<'a> {
    /// The verified contents.
    pub fn contents(&self) -> &TicketContents<'a> {
        &self.contents
    }

    /// Issue time: store it as the device's new `last_issued_at` once the
    /// ticket is acted on.
    pub fn issued_at(&self) -> u64 {
        self.contents.issued_at
    }

    /// The assignments.
    pub fn assignments(&self) -> Assignments<'a> {
        self.contents.assignments()
    }

    /// The assignment of `stream`, if any.
    pub fn assignment(&self, stream: &str) -> Option<Assignment<'a>> {
        self.contents.assignment(stream)
    }

    /// Whether the ticket names this manifest for this stream: the check a
    /// device makes before installing a verified manifest.
    pub fn authorizes(&self, stream: &str, manifest_digest: &[u8; 32]) -> bool {
        self.assignment(stream).is_some_and(|a| &a.manifest_digest == manifest_digest)
    }

    /// Key id of the server key that signed it.
    pub fn signer(&self) -> KeyId {
        self.signer
    }
}

/// Verifies a ticket under `policy`, in the order of the module picture.
pub fn verify_ticket<'a>(ticket: &'a [u8], policy: &TicketPolicy<'_>) -> Result<VerifiedTicket<'a>, TicketError> {
    if policy.server_keys.is_empty() {
        return Err(TicketError::NoServerKeys);
    }
    if policy.server_threshold != 1 {
        return Err(TicketError::ServerThreshold { threshold: policy.server_threshold });
    }
    let signed = SignedPayload::parse(ticket)?;
    let signer = signed.verify(policy.server_keys, TICKET_AAD)?;
    let contents = parse_contents(signed.payload)?;
    if contents.device_id != policy.device_id {
        return Err(TicketError::WrongDevice);
    }
    if contents.nonce != policy.nonce {
        return Err(TicketError::NonceMismatch);
    }
    if let Some(now) = policy.now
        && now >= contents.expires_at
    {
        return Err(TicketError::Expired { expires_at: contents.expires_at, now });
    }
    if let Some(last) = policy.last_issued_at
        && contents.issued_at < last
    {
        return Err(TicketError::Stale { issued_at: contents.issued_at, last_accepted: last });
    }
    Ok(VerifiedTicket { contents, signer })
}

/// Parses a ticket **without verifying it**: for logs and inspection only.
pub fn decode_ticket_unverified(ticket: &[u8]) -> Result<TicketContents<'_>, TicketError> {
    let signed = SignedPayload::parse(ticket)?;
    parse_contents(signed.payload)
}

/// A COSE_Sign1 with an attached payload and a protected algorithm, split
/// into the parts its Sig_structure needs. Shared with login proofs.
pub(crate) struct SignedPayload<'a> {
    sign1: Sign1<'a>,
    protected: &'a [u8],
    pub(crate) payload: &'a [u8],
    signature: &'a [u8],
}

impl<'a> SignedPayload<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, TicketError> {
        if bytes.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLarge { len: bytes.len() });
        }
        // Headers (alg, kid, crit) are checked by the shared COSE parser.
        let sign1 = Sign1::parse(bytes, TagRule::Required)?;
        if !sign1.algorithm_is_protected() {
            return Err(Error::Invalid("algorithm must be in the protected header").into());
        }
        let payload = sign1.payload().ok_or(Error::Missing("attached payload"))?;
        // Re-read the two byte strings the Sig_structure is built from.
        let mut r = Reader::new(bytes);
        r.maybe_tag()?;
        r.array("COSE_Sign1")?;
        let protected = r.bytes("protected header")?;
        r.skip()?;
        r.skip()?;
        let signature = r.bytes("signature")?;
        Ok(SignedPayload { sign1, protected, payload, signature })
    }

    /// Checks the signature against `keys` (a 32-byte kid names one key;
    /// otherwise every key of the algorithm's type is tried) and returns the
    /// signer's key id.
    pub(crate) fn verify(&self, keys: &[PublicKey], aad: &[u8]) -> Result<KeyId, TicketError> {
        let mut buf = [0u8; SIG_BUF];
        let n = sig_structure(&mut buf, self.protected, aad, self.payload)?;
        let named = self.sign1.key_id().and_then(KeyId::from_slice);
        let alg = self.sign1.algorithm();
        let mut tried = false;
        for key in keys {
            let id = key.key_id();
            if named.is_some_and(|k| k != id) || key.key_type() != alg.key_type() {
                continue;
            }
            tried = true;
            if key.verify(alg, &buf[..n], self.signature).is_ok() {
                return Ok(id);
            }
        }
        Err(if tried { TicketError::SignatureInvalid } else { TicketError::UnknownSigner })
    }
}

pub(crate) fn expect_key<'b>(
    r: &mut Reader<'b>,
    order: &mut KeyOrder<'b>,
    key: i64,
    what: &'static str,
) -> Result<(), Error> {
    if r.int_key(order)? != key { Err(Error::Missing(what)) } else { Ok(()) }
}

fn digest32(r: &mut Reader<'_>, what: &'static str) -> Result<[u8; 32], Error> {
    r.bytes(what)?.try_into().map_err(|_| Error::Invalid(what))
}

fn parse_contents(payload: &[u8]) -> Result<TicketContents<'_>, TicketError> {
    let mut r = Reader::new(payload);
    if r.map("ticket payload map")? != 5 {
        return Err(Error::Invalid("ticket payload must have 5 members").into());
    }
    let mut order = KeyOrder::new();
    expect_key(&mut r, &mut order, T_DEVICE, "ticket device id (1)")?;
    let device_id = r.str("device id")?;
    if !crate::device_auth::valid_device_id(device_id) {
        return Err(Error::Invalid("device id").into());
    }
    expect_key(&mut r, &mut order, T_NONCE, "ticket nonce (2)")?;
    let nonce = r.bytes("nonce")?;
    if !(NONCE_MIN..=NONCE_MAX).contains(&nonce.len()) {
        return Err(Error::Invalid("nonce length (16 to 32 bytes)").into());
    }
    expect_key(&mut r, &mut order, T_ISSUED, "ticket issued-at (3)")?;
    let issued_at = r.u64("issued-at")?;
    expect_key(&mut r, &mut order, T_EXPIRES, "ticket expires-at (4)")?;
    let expires_at = r.u64("expires-at")?;
    if expires_at <= issued_at {
        return Err(Error::Invalid("ticket expires before it is issued").into());
    }
    expect_key(&mut r, &mut order, T_ASSIGNMENTS, "ticket assignments (5)")?;
    let start = r.position();
    let count = r.map("assignments map")? as usize;
    if count > MAX_ASSIGNMENTS {
        return Err(Error::LimitExceeded { what: "ticket assignments", limit: MAX_ASSIGNMENTS }.into());
    }
    let mut streams = KeyOrder::new();
    for _ in 0..count {
        let Key::Text(stream) = r.any_key(&mut streams)? else {
            return Err(Error::Invalid("assignment key must be a stream name").into());
        };
        read_assignment(&mut r, stream)?;
    }
    let assignments = &payload[start..r.position()];
    r.finish("ticket payload")?;
    Ok(TicketContents { device_id, nonce, issued_at, expires_at, assignments, count })
}

fn read_assignment<'a>(r: &mut Reader<'a>, stream: &'a str) -> Result<Assignment<'a>, Error> {
    if stream.is_empty() || stream.len() > MAX_STREAM_NAME {
        return Err(Error::Invalid("stream name length (1 to 64 bytes)"));
    }
    if r.map("assignment map")? != 3 {
        return Err(Error::Invalid("assignment must have 3 members"));
    }
    let mut order = KeyOrder::new();
    expect_key(r, &mut order, A_MANIFEST, "assignment manifest digest (1)")?;
    let manifest_digest = digest32(r, "manifest digest (32 bytes)")?;
    expect_key(r, &mut order, A_SEQUENCE, "assignment sequence number (2)")?;
    let sequence = r.u64("sequence number")?;
    expect_key(r, &mut order, A_ENVELOPE, "assignment envelope digest (3)")?;
    let envelope_sha256 = digest32(r, "envelope sha256 (32 bytes)")?;
    Ok(Assignment { stream, manifest_digest, sequence, envelope_sha256 })
}

#[cfg(feature = "std")]
pub(crate) mod build;
#[cfg(feature = "std")]
pub use build::{Ticket, TicketAssignment, server_role};

#[cfg(test)]
mod tests;
