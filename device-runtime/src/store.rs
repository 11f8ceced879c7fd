//! The container store: the update engine driven against flash. Every step
//! persists the next slot table (one atomic map write) before acting on it.

use std::cell::RefCell;

use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use gantry_boot::layout::Region;
use gantry_boot::sim::SimFlash;
use gantry_boot::{Kv, Slot, StoreError};
use gantry_keys::trust::{Role, SignedTrustRoot};

use sha2::Digest as _;

use crate::bundle::{self, BundleError, Trust, VerifiedRelease};
use crate::layout::{DeviceLayout, Geometry};
use crate::table::{Installed, Phase, SlotTable, TableError, index, other};
use crate::update::{self, UpdateEvent};

/// The device flash: 4-byte words, 4 KiB pages.
pub type Flash = SimFlash<4, 4096>;
type Part<'a> = BlockingPartition<'a, CriticalSectionRawMutex, Flash>;

/// A key plus value in the device map, at most (one flash page less overhead).
const KV_BUF: usize = 4096;
const KEY_IDENTITY: u8 = 1;
const KEY_TRUST_ROOT: u8 = 2;
const KEY_TABLE: u8 = 3;
const KEY_ARTIFACTS: u8 = 4;
/// Issue time of the last deployment ticket accepted (u64, big-endian):
/// an older ticket is stale even with a valid signature and nonce.
const KEY_LAST_TICKET: u8 = 5;
/// Artifact digests remembered (the oldest is forgotten first).
const MAX_ARTIFACTS: usize = 32;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device map failed.
    #[error("device map: {0}")]
    Map(#[from] StoreError),
    /// The slot table does not decode.
    #[error("{0}")]
    Table(#[from] TableError),
    /// A release or slot failed verification.
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// The trust root is missing, malformed, expired or under-signed.
    #[error("trust root: {0}")]
    Trust(String),
    /// The device is not provisioned (`gantry-device init`).
    #[error("the device is not provisioned: run `gantry-device init`")]
    NotProvisioned,
    /// No such container.
    #[error("no container named {0:?}")]
    Unknown(String),
    /// The layout does not fit.
    #[error("layout: {0}")]
    Layout(#[from] gantry_boot::LayoutError),
    /// Something that must hold does not (the table names a slot that does not verify, ...).
    #[error("{0}")]
    Inconsistent(String),
}

/// Who the device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Device id (random at provisioning).
    pub device_id: [u8; 16],
    /// SUIT vendor id.
    pub vendor_id: [u8; 16],
    /// SUIT class id.
    pub class_id: [u8; 16],
}

impl Identity {
    fn encode(&self) -> Vec<u8> {
        [&self.device_id[..], &self.vendor_id, &self.class_id].concat()
    }

    fn decode(b: &[u8]) -> Option<Identity> {
        if b.len() != 48 {
            return None;
        }
        let part = |i: usize| b[i * 16..(i + 1) * 16].try_into().ok();
        Some(Identity { device_id: part(0)?, vendor_id: part(1)?, class_id: part(2)? })
    }
}

/// A container the runtime may start: its verified active slot.
#[derive(Clone, Debug)]
pub struct Runnable {
    /// Container name.
    pub name: String,
    /// The slot it runs from.
    pub slot: Slot,
    /// What the slot holds, verified from flash at this start.
    pub release: VerifiedRelease,
}

/// The container store over a device flash.
pub struct Store {
    flash: Mutex<CriticalSectionRawMutex, RefCell<Flash>>,
    layout: DeviceLayout,
}

impl Store {
    /// Opens the store on `flash` laid out as `geometry`.
    pub fn open(flash: Flash, geometry: Geometry) -> Result<Store, Error> {
        let layout = DeviceLayout::new(geometry)?;
        use embedded_storage::nor_flash::ReadNorFlash as _;
        if (flash.capacity() as u64) < layout.size() {
            return Err(Error::Inconsistent(format!(
                "the flash holds {} bytes; the layout needs {}",
                flash.capacity(),
                layout.size()
            )));
        }
        Ok(Store { flash: Mutex::new(RefCell::new(flash)), layout })
    }

    /// The layout.
    pub fn layout(&self) -> &DeviceLayout {
        &self.layout
    }

    /// Runs `f` on the raw flash (tests: power cuts, statistics).
    pub fn with_flash<R>(&self, f: impl FnOnce(&mut Flash) -> R) -> R {
        self.flash.lock(|c| f(&mut c.borrow_mut()))
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> Flash {
        self.flash.into_inner().into_inner()
    }

    fn part(&self, r: Region) -> Part<'_> {
        BlockingPartition::new(&self.flash, r.offset, r.size)
    }

    fn kv(&self) -> Result<Kv<Part<'_>, KV_BUF>, Error> {
        Ok(Kv::new(self.part(self.layout.device_kv))?)
    }

    /// Writes identity and trust root (`gantry-device init`). The trust root
    /// must be self-signed by a threshold of its root keys and unexpired at `now`.
    pub fn provision(&self, identity: &Identity, trust_root: &[u8], now: u64) -> Result<(), Error> {
        let root = SignedTrustRoot::from_bytes(trust_root).map_err(|e| Error::Trust(e.to_string()))?;
        root.verify_self_signed(now).map_err(|e| Error::Trust(e.to_string()))?;
        let mut kv = self.kv()?;
        kv.put(KEY_IDENTITY, &identity.encode())?;
        kv.put(KEY_TRUST_ROOT, trust_root)?;
        Ok(())
    }

    /// The device's identity.
    pub fn identity(&self) -> Result<Identity, Error> {
        let mut kv = self.kv()?;
        let bytes = kv.get(KEY_IDENTITY)?.ok_or(Error::NotProvisioned)?;
        Identity::decode(bytes).ok_or_else(|| Error::Inconsistent("malformed identity record".into()))
    }

    /// Who may sign releases, from the provisioned trust root (checked at `now`).
    pub fn trust(&self, now: u64) -> Result<Trust, Error> {
        let identity = self.identity()?;
        let mut kv = self.kv()?;
        let bytes = kv.get(KEY_TRUST_ROOT)?.ok_or(Error::NotProvisioned)?.to_vec();
        let root = SignedTrustRoot::from_bytes(&bytes).map_err(|e| Error::Trust(e.to_string()))?;
        let verified = root.verify_self_signed(now).map_err(|e| Error::Trust(e.to_string()))?;
        let policy = verified.root().policy(Role::Release);
        Ok(Trust {
            anchors: verified.root().role_keys(Role::Release),
            threshold: policy.threshold as usize,
            vendor_id: identity.vendor_id,
            class_id: identity.class_id,
        })
    }

    /// The keys of the provisioned trust root's `server` role and its
    /// threshold: who may sign deployment tickets (checked at `now`).
    pub fn server_keys(&self, now: u64) -> Result<(Vec<gantry_keys::PublicKey>, u32), Error> {
        let bytes = self.kv()?.get(KEY_TRUST_ROOT)?.ok_or(Error::NotProvisioned)?.to_vec();
        let root = SignedTrustRoot::from_bytes(&bytes).map_err(|e| Error::Trust(e.to_string()))?;
        let verified = root.verify_self_signed(now).map_err(|e| Error::Trust(e.to_string()))?;
        Ok((verified.root().role_keys(Role::Server), verified.root().policy(Role::Server).threshold))
    }

    /// Issue time of the last deployment ticket this device accepted.
    pub fn last_ticket(&self) -> Result<Option<u64>, Error> {
        let mut kv = self.kv()?;
        Ok(kv.get(KEY_LAST_TICKET)?.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes))
    }

    /// Records that a ticket issued at `issued_at` was accepted; never
    /// moves backwards.
    pub fn accept_ticket(&self, issued_at: u64) -> Result<(), Error> {
        if self.last_ticket()?.is_some_and(|t| t >= issued_at) {
            return Ok(());
        }
        Ok(self.kv()?.put(KEY_LAST_TICKET, &issued_at.to_be_bytes())?)
    }

    /// The slot table (empty on a new device).
    pub fn table(&self) -> Result<SlotTable, Error> {
        let mut kv = self.kv()?;
        match kv.get(KEY_TABLE)? {
            None => Ok(SlotTable::default()),
            Some(b) => Ok(SlotTable::decode(b)?),
        }
    }

    fn put_table(&self, table: &SlotTable) -> Result<(), Error> {
        Ok(self.kv()?.put(KEY_TABLE, &table.encode())?)
    }

    /// Remembers the SHA-256 of the compiled artifact of a module: the
    /// sandbox loads an artifact only if it hashes to this.
    pub fn record_artifact(&self, module: &[u8; 32], artifact: &[u8; 32]) -> Result<(), Error> {
        let mut kv = self.kv()?;
        let mut list: Vec<u8> = kv.get(KEY_ARTIFACTS)?.map(<[u8]>::to_vec).unwrap_or_default();
        let mut entries: Vec<[u8; 64]> = list.chunks_exact(64).filter_map(|c| c.try_into().ok()).collect();
        entries.retain(|e| e[..32] != module[..]);
        let mut entry = [0u8; 64];
        entry[..32].copy_from_slice(module);
        entry[32..].copy_from_slice(artifact);
        entries.push(entry);
        let skip = entries.len().saturating_sub(MAX_ARTIFACTS);
        list = entries[skip..].concat();
        Ok(kv.put(KEY_ARTIFACTS, &list)?)
    }

    /// The recorded artifact digest of a module.
    pub fn artifact(&self, module: &[u8; 32]) -> Result<Option<[u8; 32]>, Error> {
        let mut kv = self.kv()?;
        let list = kv.get(KEY_ARTIFACTS)?.unwrap_or_default();
        Ok(list.chunks_exact(64).find(|e| e[..32] == module[..]).and_then(|e| e[32..].try_into().ok()))
    }

    /// Installs a release: verify, refuse a lower sequence number, write the
    /// standby slot, verify it from flash, switch to it on probation.
    /// `payloads`: module first, then blobs, in component order. A refusal
    /// (`Ok(UpdateEvent::Refused)`) writes nothing.
    pub fn install(&self, envelope: &[u8], payloads: &[&[u8]], now: u64) -> Result<UpdateEvent, Error> {
        let trust = self.trust(now)?;
        let table = self.table()?;
        let refused = |name: &str, reason: String| Ok(UpdateEvent::Refused { name: name.to_owned(), reason });
        let release = match bundle::verify_release(envelope, payloads, &trust, 0) {
            Ok(r) => r,
            Err(e) => return refused("?", e.to_string()),
        };
        let name = release.config.name.clone();
        let size = bundle::slot_bytes(envelope, payloads);
        if size > self.layout.slot_size as u64 {
            return refused(
                &name,
                format!("release of {size} bytes does not fit a {}-byte slot", self.layout.slot_size),
            );
        }
        let plan = match update::plan_install(&table, &name, release.sequence, self.layout.max_containers) {
            Ok(p) => p,
            Err(reason) => return refused(&name, reason),
        };
        self.put_table(&plan.table)?;
        let region = self.layout.slot(plan.pair, plan.slot);
        bundle::write_slot(&mut self.part(region), envelope, payloads)?;
        let written = bundle::verify_slot(&mut self.part(region), &trust, 0)?;
        if written.manifest_digest != release.manifest_digest {
            return Err(Error::Inconsistent("the slot does not hold what was written".into()));
        }
        let installed = Installed {
            manifest_digest: release.manifest_digest,
            sequence: release.sequence,
            version: release.config.version.clone(),
        };
        let (next, event) = update::switch(&plan.table, &name, plan.slot, installed)
            .ok_or_else(|| Error::Inconsistent("the planned container vanished".into()))?;
        self.put_table(&next)?;
        Ok(event)
    }

    /// Ends `name`'s probation successfully.
    pub fn confirm(&self, name: &str) -> Result<Option<UpdateEvent>, Error> {
        self.apply(|t| update::confirm(t, name))
    }

    /// Ends `name`'s probation by going back to the previous version.
    pub fn revert(&self, name: &str, reason: &str) -> Result<Option<UpdateEvent>, Error> {
        self.apply(|t| update::revert(t, name, reason))
    }

    /// Wants `name` running or not.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), Error> {
        let mut t = self.table()?;
        t.get_mut(name).ok_or_else(|| Error::Unknown(name.to_owned()))?.enabled = enabled;
        self.put_table(&t)
    }

    /// Forgets `name` (its slots are reused by the next install).
    pub fn remove(&self, name: &str) -> Result<UpdateEvent, Error> {
        let mut t = self.table()?;
        let before = t.containers.len();
        t.containers.retain(|c| c.name != name);
        if t.containers.len() == before {
            return Err(Error::Unknown(name.to_owned()));
        }
        self.put_table(&t)?;
        Ok(UpdateEvent::Removed { name: name.to_owned() })
    }

    fn apply(
        &self,
        f: impl FnOnce(&SlotTable) -> Option<(SlotTable, UpdateEvent)>,
    ) -> Result<Option<UpdateEvent>, Error> {
        let t = self.table()?;
        match f(&t) {
            Some((next, event)) => {
                self.put_table(&next)?;
                Ok(Some(event))
            }
            None => Ok(None),
        }
    }

    /// At runtime start: count the restart against probations (reverting
    /// those that ran out), then verify every enabled container's active
    /// slot from flash. A container whose active slot does not verify falls
    /// back to its standby slot if that one does, and is reported.
    pub fn start(&self, now: u64) -> Result<(Vec<Runnable>, Vec<UpdateEvent>), Error> {
        let trust = self.trust(now)?;
        let (mut table, mut events) = update::on_runtime_start(&self.table()?);
        let mut runnable = Vec::new();
        for i in 0..table.containers.len() {
            let c = &table.containers[i];
            if !c.enabled {
                continue;
            }
            let (name, pair, active) = (c.name.clone(), c.pair, c.active);
            match self.verify_installed(&table, &name, pair, active, &trust) {
                Ok(release) => runnable.push(Runnable { name, slot: active, release }),
                Err(e) => {
                    let standby = other(active);
                    let reason = format!("active slot does not verify: {e}");
                    match self.verify_installed(&table, &name, pair, standby, &trust) {
                        Ok(release) => {
                            let c = &mut table.containers[i];
                            c.active = standby;
                            c.phase = Phase::Reverted { reason: reason.clone() };
                            events.push(UpdateEvent::Reverted {
                                name: name.clone(),
                                from: 0,
                                to: Some(release.sequence),
                                reason,
                            });
                            runnable.push(Runnable { name, slot: standby, release });
                        }
                        Err(_) => {
                            let c = &mut table.containers[i];
                            c.enabled = false;
                            c.phase = Phase::Reverted { reason: reason.clone() };
                            events.push(UpdateEvent::Reverted { name, from: 0, to: None, reason });
                        }
                    }
                }
            }
        }
        self.put_table(&table)?;
        Ok((runnable, events))
    }

    /// `name`'s active slot verified from flash, if it is enabled and verifies.
    pub fn runnable(&self, name: &str, now: u64) -> Result<Option<Runnable>, Error> {
        let trust = self.trust(now)?;
        let table = self.table()?;
        let Some(c) = table.get(name).filter(|c| c.enabled) else { return Ok(None) };
        let release = self.verify_installed(&table, name, c.pair, c.active, &trust)?;
        Ok(Some(Runnable { name: name.to_owned(), slot: c.active, release }))
    }

    /// Verifies the slot from flash and that it holds what the table says.
    fn verify_installed(
        &self,
        table: &SlotTable,
        name: &str,
        pair: u8,
        slot: Slot,
        trust: &Trust,
    ) -> Result<VerifiedRelease, Error> {
        let c = table.get(name).ok_or_else(|| Error::Unknown(name.to_owned()))?;
        let expected = c.slots[index(slot)].as_ref().ok_or_else(|| Error::Inconsistent("the slot is empty".into()))?;
        let release = bundle::verify_slot(&mut self.part(self.layout.slot(pair, slot)), trust, 0)?;
        if release.manifest_digest != expected.manifest_digest || release.config.name != name {
            return Err(Error::Inconsistent("the slot holds another release than the table says".into()));
        }
        Ok(release)
    }

    /// A payload of a verified release, read from its slot and checked
    /// against its signed digest again (the slot could have changed since).
    pub fn read_payload(&self, r: &Runnable, payload: &bundle::Payload) -> Result<Vec<u8>, Error> {
        let pair = self.table()?.get(&r.name).ok_or_else(|| Error::Unknown(r.name.clone()))?.pair;
        let bytes = bundle::read_payload(&mut self.part(self.layout.slot(pair, r.slot)), payload)?;
        if sha2::Sha256::digest(&bytes)[..] != payload.sha256 {
            return Err(BundleError::PayloadMismatch { component: payload.component }.into());
        }
        Ok(bytes)
    }
}
