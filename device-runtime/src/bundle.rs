//! A container release in a flash slot, and how it is checked.
//!
//! A release is a signed envelope plus the payloads its manifest names by
//! URI: the module and any blobs (the config travels inside the envelope).
//! In a slot it is stored like a firmware image (`gantry_boot::image`), with
//! the container magic: header, envelope, then the payloads back to back in
//! component order. Verifying a slot re-checks everything from flash: the
//! envelope against the trust root's release keys, the config against its
//! signed digest, and every payload region against its signed digest and
//! size, so a torn or mixed slot can never pass.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use gantry_boot::ImageError;
use gantry_boot::image::{CONTAINER_MAGIC, FIXED_HEADER, Header, MAX_ENVELOPE};
use gantry_keys::PublicKey;
use gantry_signing::config::ContainerConfig;
use gantry_signing::{Policy, VerifiedManifest};
use sha2::{Digest as _, Sha256};

/// Hashing and copying chunk.
const CHUNK: usize = 64 * 1024;

/// Who may sign releases for this device, and which device it is.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The trust root's `release` keys.
    pub anchors: Vec<PublicKey>,
    /// How many of them must sign.
    pub threshold: usize,
    /// This device's vendor id.
    pub vendor_id: [u8; 16],
    /// This device's class id.
    pub class_id: [u8; 16],
}

impl Trust {
    fn policy(&self, min_sequence: u64) -> Policy<'_> {
        Policy::new(&self.anchors, self.threshold)
            .min_sequence(min_sequence)
            .identity(Some(&self.vendor_id), Some(&self.class_id))
    }
}

/// Why a release or a slot is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The envelope failed verification.
    #[error("{0}")]
    Manifest(#[from] gantry_signing::Error),
    /// The slot header is missing or malformed.
    #[error("slot: {0}")]
    Slot(#[from] ImageError),
    /// The manifest is not a Gantry container release.
    #[error("not a container release: {0}")]
    NotAContainer(String),
    /// A payload does not match its signed digest and size.
    #[error("payload of component {component} does not match its signed digest and size")]
    PayloadMismatch {
        /// Component index.
        component: usize,
    },
    /// The payloads given do not match the components the manifest names.
    #[error("the manifest names {expected} payloads, {given} were given")]
    PayloadCount {
        /// Named by the manifest.
        expected: usize,
        /// Given.
        given: usize,
    },
    /// The release does not fit a slot.
    #[error("release of {size} bytes does not fit a {slot}-byte slot")]
    TooLarge {
        /// Bytes needed.
        size: u64,
        /// Slot size.
        slot: u64,
    },
    /// Flash failed.
    #[error("flash: {0:?}")]
    Flash(embedded_storage::nor_flash::NorFlashErrorKind),
}

fn flash_err<E: embedded_storage::nor_flash::NorFlashError>(e: E) -> BundleError {
    BundleError::Flash(e.kind())
}

/// One payload stored in the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Index of its component in the manifest.
    pub component: usize,
    /// Blob name (`None` for the module).
    pub blob: Option<String>,
    /// Offset in the slot.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Signed SHA-256.
    pub sha256: [u8; 32],
}

/// A release checked in full.
#[derive(Clone, Debug)]
pub struct VerifiedRelease {
    /// SHA-256 of the bstr-wrapped manifest.
    pub manifest_digest: [u8; 32],
    /// Sequence number.
    pub sequence: u64,
    /// The signed config.
    pub config: ContainerConfig,
    /// Module first, then blobs, in component order.
    pub payloads: Vec<Payload>,
}

impl VerifiedRelease {
    /// The module's payload.
    pub fn module(&self) -> &Payload {
        &self.payloads[0]
    }
}

/// How an envelope is checked.
#[derive(Clone, Copy)]
enum Check<'a> {
    /// Its signatures, under the trust root's release role: what may be
    /// installed.
    Signed(&'a Trust, u64),
    /// Its manifest digest, as recorded when it was installed: what already
    /// runs ([`gantry_signing::verify_pinned`]).
    Pinned(&'a Pin),
}

/// What a slot must hold to run again: the manifest digest the slot table
/// recorded when the release was verified and installed, for this device.
#[derive(Clone, Copy, Debug)]
pub struct Pin {
    /// SHA-256 of the bstr-wrapped manifest.
    pub manifest_digest: [u8; 32],
    /// This device's vendor id.
    pub vendor_id: [u8; 16],
    /// This device's class id.
    pub class_id: [u8; 16],
}

/// Verifies `envelope` and lays out its payloads from `payload_offset` on.
fn check_envelope(envelope: &[u8], check: Check<'_>, payload_offset: u64) -> Result<VerifiedRelease, BundleError> {
    let m = match check {
        Check::Signed(trust, min_sequence) => gantry_signing::verify(envelope, &trust.policy(min_sequence))?,
        Check::Pinned(pin) => gantry_signing::verify_pinned(
            envelope,
            &pin.manifest_digest,
            &Policy::new(&[], 0).identity(Some(&pin.vendor_id), Some(&pin.class_id)),
        )?,
    };
    let config = ContainerConfig::from_verified(&m)?
        .ok_or_else(|| BundleError::NotAContainer("the envelope carries no #config".into()))?;
    let payloads = layout(&m, &config, payload_offset)?;
    Ok(VerifiedRelease { manifest_digest: *m.digest(), sequence: m.sequence_number(), config, payloads })
}

fn layout(m: &VerifiedManifest<'_>, config: &ContainerConfig, mut offset: u64) -> Result<Vec<Payload>, BundleError> {
    let name = config.name.as_bytes();
    let mut payloads = Vec::new();
    for (i, id) in m.manifest().components().enumerate() {
        let declared = m.declared_image(i)?;
        if declared.uri.is_some_and(|u| u.starts_with('#')) {
            continue; // integrated: the config, already checked
        }
        let segments: Vec<&[u8]> = id.segments().collect();
        let blob = match segments.as_slice() {
            [n, b"module"] if *n == name && i == 0 => None,
            [n, b"blob", b] if *n == name => Some(String::from_utf8_lossy(b).into_owned()),
            _ => return Err(BundleError::NotAContainer(format!("unexpected component {id}"))),
        };
        let (Some(sha256), Some(len)) = (declared.sha256, declared.size) else {
            return Err(BundleError::NotAContainer(format!("component {id} has no SHA-256 digest and size")));
        };
        payloads.push(Payload { component: i, blob, offset, len, sha256 });
        offset = offset.saturating_add(len);
    }
    if payloads.first().is_none_or(|p| p.blob.is_some()) {
        return Err(BundleError::NotAContainer("component 0 must be the module".into()));
    }
    Ok(payloads)
}

/// Verifies an envelope on its own, before any payload is fetched: what it
/// lists (digests and sizes) bounds what a download may accept.
pub fn verify_envelope(envelope: &[u8], trust: &Trust, min_sequence: u64) -> Result<VerifiedRelease, BundleError> {
    check_envelope(envelope, Check::Signed(trust, min_sequence), 0)
}

/// Verifies a release given as bytes (before it is written anywhere), with
/// `payloads` in component order, module first.
pub fn verify_release(
    envelope: &[u8],
    payloads: &[&[u8]],
    trust: &Trust,
    min_sequence: u64,
) -> Result<VerifiedRelease, BundleError> {
    let release = check_envelope(envelope, Check::Signed(trust, min_sequence), 0)?;
    if release.payloads.len() != payloads.len() {
        return Err(BundleError::PayloadCount { expected: release.payloads.len(), given: payloads.len() });
    }
    for (p, bytes) in release.payloads.iter().zip(payloads) {
        if bytes.len() as u64 != p.len || Sha256::digest(bytes)[..] != p.sha256 {
            return Err(BundleError::PayloadMismatch { component: p.component });
        }
    }
    Ok(release)
}

/// Bytes a release takes in a slot: its envelope of `envelope_len` bytes
/// and payloads of the given lengths (known before any is read: from the
/// files' sizes, or from the signed manifest before a download).
pub fn slot_bytes(envelope_len: usize, payload_lens: impl IntoIterator<Item = u64>) -> u64 {
    let header = FIXED_HEADER.saturating_add(envelope_len).next_multiple_of(gantry_boot::image::PAYLOAD_ALIGN) as u64;
    payload_lens.into_iter().fold(header, u64::saturating_add)
}

fn lens<'a>(payloads: &'a [&[u8]]) -> impl Iterator<Item = u64> + 'a {
    payloads.iter().map(|p| p.len() as u64)
}

/// Writes a release into an erased-or-not `slot`: erases the pages it needs,
/// then writes header, envelope and payloads.
pub fn write_slot<F: NorFlash>(slot: &mut F, envelope: &[u8], payloads: &[&[u8]]) -> Result<(), BundleError> {
    if envelope.len() > MAX_ENVELOPE {
        return Err(ImageError::EnvelopeTooLarge { len: envelope.len() as u32, max: MAX_ENVELOPE as u32 }.into());
    }
    let header = gantry_boot::image::pack_with_magic(&CONTAINER_MAGIC, envelope, &[])?;
    let total = slot_bytes(envelope.len(), lens(payloads));
    let capacity = slot.capacity() as u64;
    if total > capacity {
        return Err(BundleError::TooLarge { size: total, slot: capacity });
    }
    let page = F::ERASE_SIZE as u64;
    slot.erase(0, (total.div_ceil(page) * page) as u32).map_err(flash_err)?;
    let mut w = Writer { slot, at: 0, pending: Vec::with_capacity(CHUNK) };
    w.put(&header)?;
    for p in payloads {
        w.put(p)?;
    }
    w.finish()
}

/// Buffers writes into whole words.
struct Writer<'s, F> {
    slot: &'s mut F,
    at: u32,
    pending: Vec<u8>,
}

impl<F: NorFlash> Writer<'_, F> {
    fn put(&mut self, mut data: &[u8]) -> Result<(), BundleError> {
        while !data.is_empty() {
            let n = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BundleError> {
        self.slot.write(self.at, &self.pending).map_err(flash_err)?;
        self.at += self.pending.len() as u32;
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(), BundleError> {
        let padded = self.pending.len().next_multiple_of(F::WRITE_SIZE);
        self.pending.resize(padded, 0xFF);
        self.flush()
    }
}

/// Verifies the release stored in `slot` under the trust root, reading
/// everything back from flash.
pub fn verify_slot<F: ReadNorFlash>(
    slot: &mut F,
    trust: &Trust,
    min_sequence: u64,
) -> Result<VerifiedRelease, BundleError> {
    check_slot(slot, Check::Signed(trust, min_sequence))
}

/// Verifies that `slot` still holds, intact, the release `pin` names,
/// reading everything back from flash: what a device runs after its trust
/// root expired or rotated its release keys away.
pub fn verify_slot_pinned<F: ReadNorFlash>(slot: &mut F, pin: &Pin) -> Result<VerifiedRelease, BundleError> {
    check_slot(slot, Check::Pinned(pin))
}

fn check_slot<F: ReadNorFlash>(slot: &mut F, check: Check<'_>) -> Result<VerifiedRelease, BundleError> {
    let capacity = slot.capacity();
    let header = Header::read_with_magic(slot, capacity, &CONTAINER_MAGIC)?;
    let mut envelope = vec![0u8; header.envelope_len as usize];
    slot.read(FIXED_HEADER as u32, &mut envelope).map_err(flash_err)?;
    let release = check_envelope(&envelope, check, header.payload_offset as u64)?;
    let mut buf = vec![0u8; CHUNK];
    for p in &release.payloads {
        if p.offset.saturating_add(p.len) > capacity as u64 {
            return Err(BundleError::TooLarge { size: p.offset.saturating_add(p.len), slot: capacity as u64 });
        }
        if hash_region(slot, p.offset, p.len, &mut buf)? != p.sha256 {
            return Err(BundleError::PayloadMismatch { component: p.component });
        }
    }
    Ok(release)
}

/// SHA-256 of `len` bytes of `slot` from `offset`.
pub fn hash_region<F: ReadNorFlash>(
    slot: &mut F,
    offset: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<[u8; 32], BundleError> {
    let mut sha = Sha256::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        slot.read((offset + done) as u32, &mut buf[..n]).map_err(flash_err)?;
        sha.update(&buf[..n]);
        done += n as u64;
    }
    Ok(sha.finalize().into())
}

/// Reads one payload out of the slot.
pub fn read_payload<F: ReadNorFlash>(slot: &mut F, p: &Payload) -> Result<Vec<u8>, BundleError> {
    let mut out = vec![0u8; p.len as usize];
    slot.read(p.offset as u32, &mut out).map_err(flash_err)?;
    Ok(out)
}
