//! The measured boot record the bootloader hands to the runtime, which
//! reports it in its attestation evidence (DESIGN.md, measurements).
//!
//! On a microcontroller it travels in a RAM section both link; on the host,
//! as bytes. Encoded as a CBOR map with small integer keys (docs/formats.md).

use minicbor::encode::write::Cursor;
use minicbor::{Decoder, Encoder};

use crate::error::Reason;

/// Which logical slot the running image came from. embassy-boot always runs
/// the image in ACTIVE; A and B name the two images an update alternates
/// between, so an attestation can tell a revert from an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Even generations.
    A,
    /// Odd generations.
    B,
}

impl Slot {
    pub(crate) fn of(generation: u32) -> Slot {
        if generation.is_multiple_of(2) { Slot::A } else { Slot::B }
    }
}

/// What was booted, measured by the bootloader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRecord {
    /// SHA-256 of the booted manifest (bstr-wrapped).
    pub manifest_digest: [u8; 32],
    /// SHA-256 of the booted image.
    pub image_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// Image size in bytes.
    pub image_size: u32,
    /// Boots handed over since the device was provisioned, this one included.
    pub boot_count: u32,
    /// Logical slot of the running image.
    pub slot: Slot,
    /// Whether the image is an update on trial (the runtime must confirm it).
    pub trial: bool,
    /// Trial boots so far, this one included (0 when not on trial).
    pub trial_boots: u16,
    /// The anti-rollback counter.
    pub security_counter: u64,
    /// Why the last update was refused or reverted, if it was.
    pub last_failure: Option<Reason>,
}

/// A record that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The output buffer is too small.
    #[error("buffer too small for the boot record")]
    BufferTooSmall,
    /// Malformed CBOR, a wrong type, a missing or unknown member.
    #[error("malformed boot record: {0}")]
    Malformed(&'static str),
}

/// Upper bound of an encoded record (the widest is 139 bytes: every number
/// at its maximum and the longest failure name).
pub const MAX_RECORD_LEN: usize = 160;

const K_MANIFEST: u8 = 1;
const K_IMAGE: u8 = 2;
const K_SEQUENCE: u8 = 3;
const K_SIZE: u8 = 4;
const K_BOOT_COUNT: u8 = 5;
const K_SLOT: u8 = 6;
const K_TRIAL: u8 = 7;
const K_TRIAL_BOOTS: u8 = 8;
const K_COUNTER: u8 = 9;
const K_FAILURE: u8 = 10;

impl BootRecord {
    /// Encodes into `buf`, returning the bytes used.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], RecordError> {
        let mut e = Encoder::new(Cursor::new(&mut *buf));
        let slot = match self.slot {
            Slot::A => "A",
            Slot::B => "B",
        };
        let mut write = || -> Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>> {
            e.map(9 + u64::from(self.last_failure.is_some()))?;
            e.u8(K_MANIFEST)?.bytes(&self.manifest_digest)?;
            e.u8(K_IMAGE)?.bytes(&self.image_digest)?;
            e.u8(K_SEQUENCE)?.u64(self.sequence)?;
            e.u8(K_SIZE)?.u32(self.image_size)?;
            e.u8(K_BOOT_COUNT)?.u32(self.boot_count)?;
            e.u8(K_SLOT)?.str(slot)?;
            e.u8(K_TRIAL)?.bool(self.trial)?;
            e.u8(K_TRIAL_BOOTS)?.u16(self.trial_boots)?;
            e.u8(K_COUNTER)?.u64(self.security_counter)?;
            if let Some(f) = self.last_failure {
                e.u8(K_FAILURE)?.str(f.code())?;
            }
            Ok(())
        };
        write().map_err(|_| RecordError::BufferTooSmall)?;
        let len = e.into_writer().position();
        Ok(&buf[..len])
    }

    /// Decodes a record; every member but the failure is required, once.
    pub fn decode(bytes: &[u8]) -> Result<BootRecord, RecordError> {
        let bad = |what| move |_| RecordError::Malformed(what);
        let mut d = Decoder::new(bytes);
        let n = d.map().map_err(bad("not a map"))?.ok_or(RecordError::Malformed("indefinite map"))?;
        if n > 10 {
            return Err(RecordError::Malformed("too many members"));
        }
        let mut seen = 0u16;
        let mut r = BootRecord {
            manifest_digest: [0; 32],
            image_digest: [0; 32],
            sequence: 0,
            image_size: 0,
            boot_count: 0,
            slot: Slot::A,
            trial: false,
            trial_boots: 0,
            security_counter: 0,
            last_failure: None,
        };
        let digest = |d: &mut Decoder<'_>| -> Result<[u8; 32], RecordError> {
            d.bytes().map_err(bad("digest"))?.try_into().map_err(|_| RecordError::Malformed("digest length"))
        };
        for _ in 0..n {
            let k = d.u8().map_err(bad("key"))?;
            if k == 0 || k > K_FAILURE || seen & (1 << k) != 0 {
                return Err(RecordError::Malformed("unknown or repeated key"));
            }
            seen |= 1 << k;
            match k {
                K_MANIFEST => r.manifest_digest = digest(&mut d)?,
                K_IMAGE => r.image_digest = digest(&mut d)?,
                K_SEQUENCE => r.sequence = d.u64().map_err(bad("sequence"))?,
                K_SIZE => r.image_size = d.u32().map_err(bad("image size"))?,
                K_BOOT_COUNT => r.boot_count = d.u32().map_err(bad("boot count"))?,
                K_SLOT => {
                    r.slot = match d.str().map_err(bad("slot"))? {
                        "A" => Slot::A,
                        "B" => Slot::B,
                        _ => return Err(RecordError::Malformed("slot")),
                    }
                }
                K_TRIAL => r.trial = d.bool().map_err(bad("trial"))?,
                K_TRIAL_BOOTS => r.trial_boots = d.u16().map_err(bad("trial boots"))?,
                K_COUNTER => r.security_counter = d.u64().map_err(bad("security counter"))?,
                _ => {
                    let code = d.str().map_err(bad("failure"))?;
                    r.last_failure = Some(
                        Reason::ALL.into_iter().find(|f| f.code() == code).ok_or(RecordError::Malformed("failure"))?,
                    );
                }
            }
        }
        if d.position() != bytes.len() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        if seen | (1 << K_FAILURE) != 0b111_1111_1110 {
            return Err(RecordError::Malformed("missing member"));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootRecord {
        BootRecord {
            manifest_digest: [1; 32],
            image_digest: [2; 32],
            sequence: u64::MAX,
            image_size: 65536,
            boot_count: u32::MAX,
            slot: Slot::B,
            trial: true,
            trial_boots: 3,
            security_counter: 41,
            last_failure: Some(Reason::TrialExpired),
        }
    }

    #[test]
    fn round_trip_fits_the_bound() {
        let mut buf = [0u8; MAX_RECORD_LEN];
        for r in [sample(), BootRecord { last_failure: None, ..sample() }] {
            let bytes = r.encode(&mut buf).unwrap().to_vec();
            assert_eq!(BootRecord::decode(&bytes), Ok(r));
        }
        assert_eq!(sample().encode(&mut [0u8; 40]), Err(RecordError::BufferTooSmall));
    }

    #[test]
    fn the_widest_record_fits_the_bound() {
        let longest = Reason::ALL.into_iter().max_by_key(|r| r.code().len()).unwrap();
        let widest = BootRecord {
            security_counter: u64::MAX,
            trial_boots: u16::MAX,
            image_size: u32::MAX,
            last_failure: Some(longest),
            ..sample()
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = widest.encode(&mut buf).expect("fits").len();
        assert_eq!(len, 139);
        assert_eq!(BootRecord::decode(&buf[..len]), Ok(widest));
    }

    #[test]
    fn malformed_records_are_refused() {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let good = sample().encode(&mut buf).unwrap().to_vec();
        for cut in 0..good.len() {
            assert!(BootRecord::decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(BootRecord::decode(&trailing), Err(RecordError::Malformed("trailing bytes")));
        assert!(BootRecord::decode(&[0xA0]).is_err(), "empty map misses members");
        assert!(BootRecord::decode(&[0xBF, 0xFF]).is_err(), "indefinite map");
    }
}
