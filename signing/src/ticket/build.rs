//! Issuing tickets (the server side): encode the payload deterministically
//! and sign it with the server's online key.

use alloc::string::String;
use alloc::vec::Vec;

use coset::iana::EnumI64 as _;
use coset::{TaggedCborSerializable as _, iana};
use gantry_keys::cbor_vec::VecWriter;
use gantry_keys::trust::{Role, TrustRoot};
use gantry_keys::{KeySource, PublicKey};
use minicbor::Encoder;

use super::{MAX_ASSIGNMENTS, MAX_STREAM_NAME, NONCE_MAX, NONCE_MIN, TICKET_AAD, TicketError};
use crate::Error;
use crate::device_auth::valid_device_id;

/// One assignment to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketAssignment {
    /// Stream name (container name, or `firmware`), 1-64 bytes.
    pub stream: String,
    /// SUIT digest of the manifest.
    pub manifest_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// SHA-256 of the envelope.
    pub envelope_sha256: [u8; 32],
}

/// A ticket to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The device it is for.
    pub device_id: String,
    /// The nonce the device sent (16-32 bytes).
    pub nonce: Vec<u8>,
    /// Issue time, Unix seconds.
    pub issued_at: u64,
    /// Expiry, Unix seconds (after `issued_at`).
    pub expires_at: u64,
    /// What the device should run, one entry per stream (any order: they
    /// are sorted into deterministic order when encoded).
    pub assignments: Vec<TicketAssignment>,
}

impl Ticket {
    /// The deterministic CBOR payload; refuses what a device would refuse.
    pub fn encode_payload(&self) -> Result<Vec<u8>, Error> {
        if !valid_device_id(&self.device_id) {
            return Err(Error::Build(format!("invalid device id {:?}", self.device_id)));
        }
        if !(NONCE_MIN..=NONCE_MAX).contains(&self.nonce.len()) {
            return Err(Error::Build(format!("nonce of {} bytes, 16 to 32 required", self.nonce.len())));
        }
        if self.expires_at <= self.issued_at {
            return Err(Error::Build("ticket would expire before it is issued".into()));
        }
        if self.assignments.len() > MAX_ASSIGNMENTS {
            return Err(Error::Build(format!("{} assignments, at most {MAX_ASSIGNMENTS}", self.assignments.len())));
        }
        let mut sorted: Vec<(Vec<u8>, &TicketAssignment)> = Vec::with_capacity(self.assignments.len());
        for a in &self.assignments {
            if a.stream.is_empty() || a.stream.len() > MAX_STREAM_NAME {
                return Err(Error::Build(format!("stream name {:?}: 1 to {MAX_STREAM_NAME} bytes", a.stream)));
            }
            let mut key = Encoder::new(VecWriter::default());
            let _ = key.str(&a.stream);
            sorted.push((key.into_writer().0, a));
        }
        // Deterministic order: bytewise on the encoded keys.
        sorted.sort_by(|x, y| x.0.cmp(&y.0));
        if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Build("a stream is assigned twice".into()));
        }
        let mut e = Encoder::new(VecWriter::default());
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.map(5)?;
            e.u8(1)?.str(&self.device_id)?;
            e.u8(2)?.bytes(&self.nonce)?;
            e.u8(3)?.u64(self.issued_at)?;
            e.u8(4)?.u64(self.expires_at)?;
            e.u8(5)?.map(sorted.len() as u64)?;
            for (key, a) in &sorted {
                e.writer_mut().0.extend_from_slice(key);
                e.map(3)?;
                e.u8(1)?.bytes(&a.manifest_digest)?;
                e.u8(2)?.u64(a.sequence)?;
                e.u8(3)?.bytes(&a.envelope_sha256)?;
            }
            Ok(())
        })();
        Ok(e.into_writer().0)
    }

    /// Signs the ticket with `key` (the server's online key).
    pub fn sign(&self, key: &dyn KeySource) -> Result<Vec<u8>, TicketError> {
        let payload = self.encode_payload()?;
        let signed = sign_attached(payload, TICKET_AAD, key)?;
        if signed.len() > super::MAX_TICKET_LEN {
            return Err(TicketError::TooLarge { len: signed.len() });
        }
        Ok(signed)
    }
}

/// COSE_Sign1 (tag 18) with `payload` attached, `{1: alg}` protected and
/// `{4: kid}` unprotected, signed over `aad`.
pub(crate) fn sign_attached(payload: Vec<u8>, aad: &[u8], key: &dyn KeySource) -> Result<Vec<u8>, Error> {
    let alg = iana::Algorithm::from_i64(key.algorithm().cose_id())
        .ok_or_else(|| Error::Build(format!("algorithm {} unknown to coset", key.algorithm())))?;
    let sign1 = coset::CoseSign1Builder::new()
        .protected(coset::HeaderBuilder::new().algorithm(alg).build())
        .unprotected(coset::HeaderBuilder::new().key_id(key.key_id().as_bytes().to_vec()).build())
        .payload(payload)
        .try_create_signature(aad, |tbs| key.sign(tbs))?
        .build();
    sign1.to_tagged_vec().map_err(|e| Error::Build(e.to_string()))
}

/// The keys and threshold of a trust root's `server` role, as
/// [`TicketPolicy`](super::TicketPolicy) takes them.
pub fn server_role(root: &TrustRoot) -> (Vec<PublicKey>, u32) {
    (root.role_keys(Role::Server), root.policy(Role::Server).threshold)
}
