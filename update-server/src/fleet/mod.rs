//! The fleet as check-ins see it, in memory: each device's key, whether it
//! is disabled, what it should run (with its ETag) and the hash of its
//! last inventory, so a check-in that changes nothing reads nothing from
//! the database and writes nothing to it. Last-seen times are collected
//! here and written in batches by a background task.
//!
//! Memory is what bounds it: at a million devices every byte per entry is
//! a megabyte. So an entry keeps the device's key as its stored COSE_Key
//! (decoded again at login, which is rare, rather than held decoded, which
//! is four times larger), and devices that should run the same thing share
//! one [`Desired`].
//!
//! Several nodes may share one database: every change to what a device
//! should run bumps a generation counter in the database; each node polls
//! it and reloads entries cached under an older generation.
//!
//! The chain of trust roots (what a device behind on rotations is sent) is
//! cached too, reloaded when this node installs a root and at most
//! [`TRUST_ROOTS_REFRESH`] after another node did.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use gantry_keys::{PublicKey, decode_cose_key};
use gantry_signing::ticket::TicketAssignment;
use sha2::{Digest as _, Sha256};

use crate::store::{DesiredRow, Store, StoreError};

const SHARDS: usize = 16;

/// How stale the cached chain of trust roots may get when another node
/// installs a root.
pub const TRUST_ROOTS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Every trust root installed, oldest first, and when it was read.
#[derive(Default)]
struct TrustRoots {
    read_at: Option<std::time::Instant>,
    chain: Arc<Vec<(u64, Vec<u8>)>>,
}

/// A device's cached state.
#[derive(Clone, Debug)]
pub struct CachedDevice {
    /// Its enrolled key, as a COSE_Key (checked when the entry was loaded).
    pub cose_key: Arc<[u8]>,
    /// Refused at login and check-in.
    pub disabled: bool,
    /// What it should run.
    pub desired: Arc<Desired>,
    /// SHA-256 of its last stored inventory.
    pub inventory_hash: Option<[u8; 32]>,
    generation: i64,
}

impl CachedDevice {
    /// Its enrolled key, decoded.
    pub fn public_key(&self) -> Result<PublicKey, StoreError> {
        decode_cose_key(&self.cose_key).map_err(|e| StoreError::Corrupt(format!("device public key: {e}")))
    }
}

/// What one device should run.
#[derive(Debug, PartialEq, Eq)]
pub struct Desired {
    /// Quoted strong ETag of this desired state.
    pub etag: String,
    /// The rows, by stream.
    pub rows: Vec<DesiredRow>,
    /// The same, as ticket assignments.
    pub assignments: Vec<TicketAssignment>,
}

impl Desired {
    fn new(rows: Vec<DesiredRow>) -> Result<Self, StoreError> {
        let mut h = Sha256::new();
        let mut assignments = Vec::with_capacity(rows.len());
        for r in &rows {
            for part in [r.stream.as_str(), &r.manifest_digest, &r.envelope_sha256] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
            let digest = |hex_str: &str| -> Result<[u8; 32], StoreError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hex_str, &mut out)
                    .map_err(|e| StoreError::Corrupt(format!("digest {hex_str}: {e}")))?;
                Ok(out)
            };
            assignments.push(TicketAssignment {
                stream: r.stream.clone(),
                manifest_digest: digest(&r.manifest_digest)?,
                sequence: r.sequence as u64,
                envelope_sha256: digest(&r.envelope_sha256)?,
            });
        }
        let etag = format!("\"{}\"", hex::encode(&h.finalize()[..16]));
        Ok(Desired { etag, rows, assignments })
    }
}

/// The in-memory fleet.
pub struct Fleet {
    shards: Vec<Mutex<HashMap<String, CachedDevice>>>,
    hasher: RandomState,
    generation: AtomicI64,
    last_seen: Mutex<HashMap<String, i64>>,
    shared: Mutex<SharedDesired>,
    trust_roots: Mutex<TrustRoots>,
}

/// The desired states cached entries point to, by ETag, so that a fleet
/// running a handful of releases holds a handful of copies.
#[derive(Default)]
struct SharedDesired {
    by_etag: HashMap<String, Arc<Desired>>,
    /// Size at which states no entry uses any more are dropped.
    prune_at: usize,
}

impl SharedDesired {
    fn share(&mut self, desired: Desired) -> Arc<Desired> {
        if let Some(d) = self.by_etag.get(&desired.etag)
            && **d == desired
        {
            return d.clone();
        }
        if self.by_etag.len() >= self.prune_at {
            self.by_etag.retain(|_, d| Arc::strong_count(d) > 1);
            // Doubling keeps pruning amortised when most states are in use.
            self.prune_at = (self.by_etag.len() * 2).max(1024);
        }
        let d = Arc::new(desired);
        self.by_etag.insert(d.etag.clone(), d.clone());
        d
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            generation: AtomicI64::new(0),
            last_seen: Mutex::new(HashMap::new()),
            shared: Mutex::new(SharedDesired::default()),
            trust_roots: Mutex::new(TrustRoots::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a map, which is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    fn shard(&self, id: &str) -> &Mutex<HashMap<String, CachedDevice>> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// The device `id`, from memory, or loaded if it is not cached or was
    /// cached under an older generation. `None`: not enrolled.
    pub async fn device(&self, store: &Store, id: &str) -> Result<Option<CachedDevice>, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(d) = lock(self.shard(id)).get(id)
            && d.generation >= generation
        {
            return Ok(Some(d.clone()));
        }
        let Some(record) = store.device(id).await? else {
            lock(self.shard(id)).remove(id);
            return Ok(None);
        };
        decode_cose_key(&record.public_key).map_err(|e| StoreError::Corrupt(format!("device {id} public key: {e}")))?;
        let desired = Desired::new(store.desired(id).await?)?;
        let desired = lock(&self.shared).share(desired);
        let inventory_hash = record.inventory_hash.as_deref().and_then(|h| h.try_into().ok());
        let entry = CachedDevice {
            cose_key: record.public_key.into(),
            disabled: record.disabled,
            desired,
            inventory_hash,
            generation,
        };
        lock(self.shard(id)).insert(id.to_owned(), entry.clone());
        Ok(Some(entry))
    }

    /// Drops `id` from the cache (after a change made through this node).
    pub fn invalidate(&self, id: &str) {
        lock(self.shard(id)).remove(id);
    }

    /// Records that `id`'s stored inventory now hashes to `hash`.
    pub fn set_inventory_hash(&self, id: &str, hash: [u8; 32]) {
        if let Some(d) = lock(self.shard(id)).get_mut(id) {
            d.inventory_hash = Some(hash);
        }
    }

    /// Notes a check-in; written to the database by the next flush.
    pub fn touch(&self, id: &str, now: i64) {
        let mut seen = lock(&self.last_seen);
        match seen.get_mut(id) {
            Some(t) => *t = (*t).max(now),
            None => {
                seen.insert(id.to_owned(), now);
            }
        }
    }

    /// The last-seen times collected since the previous call.
    pub fn take_last_seen(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *lock(&self.last_seen)).into_iter().collect()
    }

    /// Adopts the database's desired-state generation; entries cached under
    /// an older one are reloaded at their next use.
    pub fn set_generation(&self, generation: i64) {
        self.generation.fetch_max(generation, Ordering::AcqRel);
    }

    /// The trust roots newer than `version`, oldest first, at most `max`
    /// (from memory; see the module documentation).
    pub async fn trust_roots_after(&self, store: &Store, version: u64, max: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let cached = {
            let t = lock(&self.trust_roots);
            t.read_at.filter(|at| at.elapsed() < TRUST_ROOTS_REFRESH).map(|_| t.chain.clone())
        };
        let chain = match cached {
            Some(chain) => chain,
            None => {
                let chain = Arc::new(store.trust_roots().await?);
                *lock(&self.trust_roots) =
                    TrustRoots { read_at: Some(std::time::Instant::now()), chain: chain.clone() };
                chain
            }
        };
        Ok(chain.iter().filter(|(v, _)| *v > version).take(max).map(|(_, doc)| doc.clone()).collect())
    }

    /// A trust root was installed: the next check-in reads the chain again.
    pub fn invalidate_trust_roots(&self) {
        lock(&self.trust_roots).read_at = None;
    }

    /// Number of cached devices.
    pub fn cached(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(digest: char) -> DesiredRow {
        DesiredRow {
            stream: "app".into(),
            manifest_digest: digest.to_string().repeat(64),
            sequence: 1,
            envelope_sha256: "e".repeat(64),
            envelope_size: 10,
        }
    }

    #[test]
    fn devices_that_should_run_the_same_share_one_copy() {
        let mut shared = SharedDesired::default();
        let a = shared.share(Desired::new(vec![row('a')]).unwrap());
        let b = shared.share(Desired::new(vec![row('a')]).unwrap());
        let c = shared.share(Desired::new(vec![row('b')]).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        // States nobody uses any more go at the next prune.
        drop((a, b, c));
        for i in 0..2000u32 {
            let mut r = row('c');
            r.sequence = i64::from(i);
            r.stream = format!("s{i}");
            drop(shared.share(Desired::new(vec![r]).unwrap()));
        }
        assert!(shared.by_etag.len() <= 1024, "{} kept", shared.by_etag.len());
    }
}
