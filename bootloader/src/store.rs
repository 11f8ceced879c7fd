//! Gantry's boot state: one fixed-size record in a sequential-storage map,
//! so every update of it is atomic across power cuts.

use embassy_embedded_hal::adapter::BlockingAsync;
use embedded_storage::nor_flash::{NorFlash, NorFlashError};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

use crate::error::{Reason, StoreError};
use crate::keys::{BootKeys, MAX_KEYS_RECORD};

const KEY_BOOT_STATE: u8 = 0;
const KEY_KEYS: u8 = 1;
const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 24;

/// What the bootloader keeps between boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// Anti-rollback: the lowest sequence number that may boot. Raised only
    /// when the runtime confirms an image; never lowered.
    pub security_counter: u64,
    /// Boots handed over so far.
    pub boot_count: u32,
    /// Confirmed updates so far; its parity names the logical slot (A/B).
    pub generation: u32,
    /// Boots the image on trial has had.
    pub trial_boots: u16,
    /// Journal: the STATE magic an interrupted erase must end with.
    pub pending_magic: Option<u8>,
    /// Why the last update was refused or reverted, until the next one.
    pub last_failure: Option<Reason>,
}

impl BootState {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[0] = RECORD_VERSION;
        r[1] = self.pending_magic.map_or(0, |m| m);
        r[2] = self.last_failure.map_or(0, |f| f as u8);
        r[4..6].copy_from_slice(&self.trial_boots.to_le_bytes());
        r[8..12].copy_from_slice(&self.boot_count.to_le_bytes());
        r[12..16].copy_from_slice(&self.generation.to_le_bytes());
        r[16..24].copy_from_slice(&self.security_counter.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> Result<Self, StoreError> {
        if r.len() != RECORD_LEN || r[0] != RECORD_VERSION {
            return Err(StoreError::BadRecord);
        }
        let mut b = [0u8; 8];
        let mut le = |range: core::ops::Range<usize>| {
            b = [0; 8];
            b[..range.len()].copy_from_slice(&r[range]);
            u64::from_le_bytes(b)
        };
        let failure = match r[2] {
            0 => None,
            f => Some(Reason::from_u8(f).ok_or(StoreError::BadRecord)?),
        };
        Ok(BootState {
            pending_magic: (r[1] != 0).then_some(r[1]),
            last_failure: failure,
            trial_boots: le(4..6) as u16,
            boot_count: le(8..12) as u32,
            generation: le(12..16) as u32,
            security_counter: le(16..24),
        })
    }
}

/// A key-value map of byte strings on its own partition (sequential-storage):
/// every `put` is atomic across power cuts. `N` bounds a key plus its value;
/// values are read into an internal buffer, so nothing is allocated.
pub struct Kv<F: NorFlash, const N: usize> {
    map: MapStorage<u8, BlockingAsync<F>, Cache<Uncached, Uncached, Uncached, u8>>,
    buf: [u8; N],
}

impl<F: NorFlash, const N: usize> Kv<F, N> {
    /// Opens the map over the whole of `flash` (at least two pages).
    pub fn new(flash: F) -> Result<Self, StoreError> {
        let end = flash.capacity() as u32;
        let config =
            MapConfig::try_new(0..end).map_err(|_| StoreError::Other("a map needs at least two whole pages"))?;
        Ok(Kv { map: MapStorage::new(BlockingAsync::new(flash), config, Cache::new_uncached()), buf: [0; N] })
    }

    /// The value stored under `key`, if any.
    pub fn get(&mut self, key: u8) -> Result<Option<&[u8]>, StoreError> {
        embassy_futures::block_on(self.map.fetch_item::<&[u8]>(&mut self.buf, &key)).map_err(map_error)
    }

    /// Replaces the value under `key` (atomically: a power cut leaves the old or the new).
    pub fn put(&mut self, key: u8, value: &[u8]) -> Result<(), StoreError> {
        embassy_futures::block_on(self.map.store_item(&mut self.buf, &key, &value)).map_err(map_error)
    }
}

/// The boot state map on its own partition: the boot state and the keys.
pub struct Store<K: NorFlash> {
    kv: Kv<K, { MAX_KEYS_RECORD + 8 }>,
}

impl<K: NorFlash> Store<K> {
    /// Opens the map over the whole of `flash` (at least two pages).
    pub fn new(flash: K) -> Result<Self, StoreError> {
        Ok(Store { kv: Kv::new(flash)? })
    }

    /// The stored state, or the factory default on a blank map.
    pub fn load(&mut self) -> Result<BootState, StoreError> {
        self.kv.get(KEY_BOOT_STATE)?.map_or(Ok(BootState::default()), BootState::decode)
    }

    /// Replaces the stored state (atomically: a power cut leaves the old or the new).
    pub fn save(&mut self, state: &BootState) -> Result<(), StoreError> {
        self.kv.put(KEY_BOOT_STATE, &state.encode())
    }

    /// The provisioned keys; `None` if none were, and a record that does
    /// not decode is [`StoreError::BadRecord`].
    pub fn load_keys(&mut self) -> Result<Option<BootKeys>, StoreError> {
        self.kv.get(KEY_KEYS)?.map(|b| BootKeys::decode(b).map_err(|_| StoreError::BadRecord)).transpose()
    }

    /// Replaces the keys (atomically).
    pub fn save_keys(&mut self, keys: &BootKeys) -> Result<(), StoreError> {
        let mut buf = [0u8; MAX_KEYS_RECORD];
        let n = keys.encode(&mut buf).map_err(|_| StoreError::BadRecord)?;
        self.kv.put(KEY_KEYS, &buf[..n])
    }
}

fn map_error<E: NorFlashError>(e: sequential_storage::Error<E>) -> StoreError {
    use sequential_storage::Error as E;
    match e {
        E::Storage { value, .. } => StoreError::Flash(value.kind()),
        E::Corrupted { .. } => StoreError::Corrupted,
        E::FullStorage => StoreError::Other("storage full"),
        E::LogicBug { .. } => StoreError::Other("logic bug"),
        E::BufferTooBig | E::BufferTooSmall(_) | E::ItemTooBig => StoreError::Other("buffer size"),
        E::SerializationError(_) => StoreError::BadRecord,
        _ => StoreError::Other("unknown error"),
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::SimFlash;

    #[test]
    fn round_trip_and_blank_default() {
        let mut store = Store::new(SimFlash::<4, 1024>::new(2048)).unwrap();
        assert_eq!(store.load().unwrap(), BootState::default());
        let s = BootState {
            security_counter: u64::MAX - 1,
            boot_count: 7,
            generation: 3,
            trial_boots: 2,
            pending_magic: Some(0xF0),
            last_failure: Some(Reason::Rollback),
        };
        for _ in 0..200 {
            store.save(&s).unwrap();
        }
        assert_eq!(store.load().unwrap(), s);
        assert_eq!(BootState::decode(&[2; RECORD_LEN]), Err(StoreError::BadRecord));
        let mut bad = s.encode();
        bad[2] = 200;
        assert_eq!(BootState::decode(&bad), Err(StoreError::BadRecord));
        assert!(Store::new(SimFlash::<4, 1024>::new(1024)).is_err(), "one page is not enough");
    }
}
