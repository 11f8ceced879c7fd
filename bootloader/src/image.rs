//! The slot image: the signed envelope travels in the same slot as the
//! firmware it describes, so a swap moves both together and they can never
//! be mixed and matched.
//!
//! ```text
//! offset 0   "GANTRYFW"                  8-byte magic
//!        8   payload offset, u32 LE       where the firmware starts (a multiple of PAYLOAD_ALIGN)
//!       12   envelope length, u32 LE
//!       16   SUIT envelope                signed; names the firmware's digest and size
//!  payload   firmware image               exactly the size the manifest says
//! ```
//!
//! The header itself is not signed and needs not be: a wrong offset moves
//! the payload and fails its digest; a wrong length fails the envelope.

use embedded_storage::nor_flash::ReadNorFlash;

use crate::error::ImageError;

/// First bytes of a firmware slot image.
pub const MAGIC: [u8; 8] = *b"GANTRYFW";
/// First bytes of a container slot image (the device runtime's): the same
/// layout, a different magic, so neither can pass for the other.
pub const CONTAINER_MAGIC: [u8; 8] = *b"GANTRYCT";
/// Bytes of the fixed header before the envelope.
pub const FIXED_HEADER: usize = 16;
/// The payload starts on this boundary, so the firmware's vector table can
/// be linked at a fixed offset from the slot start.
pub const PAYLOAD_ALIGN: usize = 256;
/// Largest envelope a slot image may carry.
pub const MAX_ENVELOPE: usize = 8192;

/// The parsed fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Where the firmware starts in the slot.
    pub payload_offset: u32,
    /// Length of the envelope at offset 16.
    pub envelope_len: u32,
}

impl Header {
    /// Reads and checks the fixed header of the firmware image at the start
    /// of `flash`, whose first `limit` bytes the image may occupy.
    pub fn read<F: ReadNorFlash>(flash: &mut F, limit: usize) -> Result<Header, ImageError> {
        Self::read_with_magic(flash, limit, &MAGIC)
    }

    /// [`Header::read`] for an image that starts with `magic`.
    pub fn read_with_magic<F: ReadNorFlash>(
        flash: &mut F,
        limit: usize,
        magic: &[u8; 8],
    ) -> Result<Header, ImageError> {
        let mut fixed = [0u8; FIXED_HEADER];
        if limit < FIXED_HEADER {
            return Err(ImageError::BadHeader("slot smaller than the header"));
        }
        flash.read(0, &mut fixed).map_err(ImageError::flash)?;
        if fixed[..8] != magic[..] {
            return Err(if fixed.iter().all(|&b| b == 0xFF) {
                ImageError::Empty
            } else {
                ImageError::BadHeader("wrong magic")
            });
        }
        let word = |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let (payload_offset, envelope_len) = (word(8), word(12));
        if envelope_len as usize > MAX_ENVELOPE {
            return Err(ImageError::EnvelopeTooLarge { len: envelope_len, max: MAX_ENVELOPE as u32 });
        }
        if (payload_offset as usize) < FIXED_HEADER + envelope_len as usize {
            return Err(ImageError::BadHeader("payload offset inside the envelope"));
        }
        if payload_offset as usize > limit {
            return Err(ImageError::BadHeader("payload offset past the end of the slot"));
        }
        Ok(Header { payload_offset, envelope_len })
    }
}

/// Packs `envelope` and `firmware` into a firmware slot image.
#[cfg(feature = "std")]
pub fn pack(envelope: &[u8], firmware: &[u8]) -> Result<Vec<u8>, ImageError> {
    pack_with_magic(&MAGIC, envelope, firmware)
}

/// Packs `envelope` and `payload` into a slot image starting with `magic`.
#[cfg(feature = "std")]
pub fn pack_with_magic(magic: &[u8; 8], envelope: &[u8], payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    if envelope.len() > MAX_ENVELOPE {
        return Err(ImageError::EnvelopeTooLarge { len: envelope.len() as u32, max: MAX_ENVELOPE as u32 });
    }
    let payload_offset = (FIXED_HEADER + envelope.len()).next_multiple_of(PAYLOAD_ALIGN);
    let mut image = Vec::with_capacity(payload_offset + payload.len());
    image.extend_from_slice(magic);
    image.extend_from_slice(&(payload_offset as u32).to_le_bytes());
    image.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
    image.extend_from_slice(envelope);
    image.resize(payload_offset, 0xFF);
    image.extend_from_slice(payload);
    Ok(image)
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::SimFlash;
    use embedded_storage::nor_flash::NorFlash as _;

    fn flash_with(bytes: &[u8]) -> SimFlash<4, 1024> {
        let mut f = SimFlash::new(4096);
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(4), 0xFF);
        f.write(0, &padded).unwrap();
        f
    }

    #[test]
    fn pack_and_read_back() {
        let image = pack(&[0xA5; 40], b"firmware").unwrap();
        assert_eq!(image.len(), 256 + 8);
        let h = Header::read(&mut flash_with(&image), 4096).unwrap();
        assert_eq!(h, Header { payload_offset: 256, envelope_len: 40 });
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(matches!(Header::read(&mut flash_with(&[]), 4096), Err(ImageError::Empty)));
        assert!(matches!(Header::read(&mut flash_with(b"NOTGANTRY......."), 4096), Err(ImageError::BadHeader(_))));
        let mut h = pack(&[0; 40], b"x").unwrap();
        h[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Header::read(&mut flash_with(&h), 4096), Err(ImageError::EnvelopeTooLarge { .. })));
        let mut h = pack(&[0; 40], b"x").unwrap();
        h[8..12].copy_from_slice(&20u32.to_le_bytes());
        assert!(matches!(Header::read(&mut flash_with(&h), 4096), Err(ImageError::BadHeader(_))));
        let h = pack(&[0; 40], b"x").unwrap();
        assert!(matches!(Header::read(&mut flash_with(&h), 200), Err(ImageError::BadHeader(_))));
        assert!(pack(&[0; MAX_ENVELOPE + 1], b"x").is_err());
        let container = pack_with_magic(&CONTAINER_MAGIC, &[0; 40], b"x").unwrap();
        assert!(matches!(Header::read(&mut flash_with(&container), 4096), Err(ImageError::BadHeader(_))));
        assert!(Header::read_with_magic(&mut flash_with(&container), 4096, &CONTAINER_MAGIC).is_ok());
    }
}
