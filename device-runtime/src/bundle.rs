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

    /// The blob named `name`, if the release carries it (every blob its
    /// config names, it does: checked when it was verified).
    pub fn blob(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.blob.as_deref() == Some(name))
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
    if let Some(missing) = config.blobs().find(|b| !payloads.iter().any(|p| p.blob.as_deref() == Some(*b))) {
        return Err(BundleError::NotAContainer(format!("the config names blob {missing:?}, which the release lacks")));
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

/// Writes a release into an erased-or-not `slot`: erases the pages it needs,
/// then writes header, envelope and payloads.
pub fn write_slot<F: NorFlash>(slot: &mut F, envelope: &[u8], payloads: &[&[u8]]) -> Result<(), BundleError> {
    let lens: Vec<(u64, [u8; 32])> = payloads.iter().map(|p| (p.len() as u64, Sha256::digest(p).into())).collect();
    let mut w = SlotWriter::begin(slot, &CONTAINER_MAGIC, envelope, &lens)?;
    for p in payloads {
        w.write(slot, p)?;
    }
    w.finish(slot)
}

/// Streams a release into a slot: header and envelope first, then the
/// payloads in component order as they arrive, each hashed as it goes, so
/// the RAM it needs is one chunk whatever the release's size. A payload
/// whose bytes do not hash to its signed digest is refused the moment its
/// last byte arrives; the slot is verified from flash again before anyone
/// uses it.
#[derive(Debug)]
pub struct SlotWriter {
    /// Each payload's signed (length, SHA-256), in component order.
    payloads: Vec<(u64, [u8; 32])>,
    /// Where the payloads start (after the header and envelope).
    base: u64,
    /// Bytes on flash.
    flushed: u64,
    /// Bytes waiting for a whole chunk.
    pending: Vec<u8>,
    /// The payload being received, and the hash of its bytes so far.
    current: usize,
    sha: Sha256,
}

impl SlotWriter {
    /// A writer whose first `flushed` bytes are on flash, before any payload.
    fn at(payloads: &[(u64, [u8; 32])], base: u64, flushed: u64) -> SlotWriter {
        SlotWriter {
            payloads: payloads.to_vec(),
            base,
            flushed,
            pending: Vec::with_capacity(CHUNK),
            current: 0,
            sha: Sha256::new(),
        }
    }

    /// Bytes the release takes in the slot.
    fn total(&self) -> u64 {
        self.payloads.iter().fold(self.base, |t, p| t.saturating_add(p.0))
    }

    /// Starts a release afresh: erases the pages it needs and writes its
    /// header (with `magic`: a container's, or a firmware image's) and
    /// envelope. `payloads`: each one's signed length and digest.
    pub fn begin<F: NorFlash>(
        slot: &mut F,
        magic: &[u8; 8],
        envelope: &[u8],
        payloads: &[(u64, [u8; 32])],
    ) -> Result<SlotWriter, BundleError> {
        if envelope.len() > MAX_ENVELOPE {
            return Err(ImageError::EnvelopeTooLarge { len: envelope.len() as u32, max: MAX_ENVELOPE as u32 }.into());
        }
        let header = gantry_boot::image::pack_with_magic(magic, envelope, &[])?;
        let mut w = SlotWriter::at(payloads, slot_bytes(envelope.len(), []), 0);
        let total = w.total();
        let capacity = slot.capacity() as u64;
        if total > capacity {
            return Err(BundleError::TooLarge { size: total, slot: capacity });
        }
        slot.erase(0, round_up(total, F::ERASE_SIZE)).map_err(flash_err)?;
        w.pending.extend_from_slice(&header);
        w.skip_empty();
        Ok(w)
    }

    /// Takes up a release whose first `flushed` bytes a previous writer put
    /// on flash (a [`SlotWriter::flushed`] it reported): the page holding
    /// that point and everything after it are erased again, since a power
    /// cut may have left them half-written, and the payload bytes from
    /// [`SlotWriter::position`] on must be sent again. `None` when there is
    /// nothing worth keeping (the point lies in the header).
    pub fn resume<F: NorFlash>(
        slot: &mut F,
        envelope_len: usize,
        payloads: &[(u64, [u8; 32])],
        flushed: u64,
    ) -> Result<Option<SlotWriter>, BundleError> {
        let base = slot_bytes(envelope_len, []);
        let from = flushed / F::ERASE_SIZE as u64 * F::ERASE_SIZE as u64;
        let mut w = SlotWriter::at(payloads, base, from);
        let total = w.total();
        if from < base || from > total || total > slot.capacity() as u64 {
            return Ok(None);
        }
        slot.erase(from as u32, round_up(total, F::ERASE_SIZE).max(from as u32)).map_err(flash_err)?;
        // Find the payload the point lies in, and hash its part on flash.
        let mut start = base;
        while w.current < w.payloads.len() && start + w.payloads[w.current].0 <= from {
            start += w.payloads[w.current].0;
            w.current += 1;
        }
        let mut buf = vec![0u8; CHUNK];
        let mut at = start;
        while at < from {
            let n = (from - at).min(CHUNK as u64) as usize;
            slot.read(at as u32, &mut buf[..n]).map_err(flash_err)?;
            w.sha.update(&buf[..n]);
            at += n as u64;
        }
        Ok(Some(w))
    }

    /// Bytes on flash so far (a point [`SlotWriter::resume`] can take up).
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// The next byte expected: (payload index, offset in it); `None` once
    /// every payload is complete.
    pub fn position(&self) -> Option<(usize, u64)> {
        let mut start = self.base;
        for (i, p) in self.payloads.iter().enumerate() {
            if i == self.current {
                let at = self.flushed + self.pending.len() as u64;
                return Some((i, at.saturating_sub(start)));
            }
            start += p.0;
        }
        None
    }

    /// Skips payloads of length zero (their digest is checked at once).
    fn skip_empty(&mut self) {
        while self.payloads.get(self.current).is_some_and(|p| p.0 == 0) {
            self.current += 1;
        }
    }

    /// Appends bytes of the current payload (and those after it). Refuses
    /// bytes past the last payload, and a payload whose bytes do not hash
    /// to its signed digest.
    pub fn write<F: NorFlash>(&mut self, slot: &mut F, mut data: &[u8]) -> Result<(), BundleError> {
        while !data.is_empty() {
            let Some((i, into)) = self.position() else {
                return Err(BundleError::TooLarge {
                    size: self.total().saturating_add(data.len() as u64),
                    slot: self.total(),
                });
            };
            let (len, digest) = self.payloads[i];
            let n = (len - into).min(data.len() as u64).min((CHUNK - self.pending.len()) as u64) as usize;
            self.sha.update(&data[..n]);
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if into + n as u64 == len {
                let sha = std::mem::replace(&mut self.sha, Sha256::new());
                if sha.finalize()[..] != digest {
                    return Err(BundleError::PayloadMismatch { component: i });
                }
                self.current += 1;
                self.skip_empty();
            }
            if self.pending.len() == CHUNK {
                self.flush(slot)?;
            }
        }
        Ok(())
    }

    /// Puts on flash every whole word received so far (a download that
    /// stopped keeps what came, for [`SlotWriter::resume`]).
    pub fn flush_words<F: NorFlash>(&mut self, slot: &mut F) -> Result<(), BundleError> {
        let n = self.pending.len() / F::WRITE_SIZE * F::WRITE_SIZE;
        if n > 0 {
            slot.write(self.flushed as u32, &self.pending[..n]).map_err(flash_err)?;
            self.flushed += n as u64;
            self.pending.drain(..n);
        }
        Ok(())
    }

    fn flush<F: NorFlash>(&mut self, slot: &mut F) -> Result<(), BundleError> {
        slot.write(self.flushed as u32, &self.pending).map_err(flash_err)?;
        self.flushed += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes what is left, once every payload arrived.
    pub fn finish<F: NorFlash>(mut self, slot: &mut F) -> Result<(), BundleError> {
        if let Some((i, _)) = self.position() {
            return Err(BundleError::PayloadMismatch { component: i });
        }
        let padded = self.pending.len().next_multiple_of(F::WRITE_SIZE);
        self.pending.resize(padded, 0xFF);
        self.flush(slot)
    }
}

fn round_up(n: u64, page: usize) -> u32 {
    (n.div_ceil(page as u64) * page as u64) as u32
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
