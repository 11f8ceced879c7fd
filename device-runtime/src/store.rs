//! The container store: the update engine driven against flash. Every step
//! persists the next slot table (one atomic map write) before acting on it.

use std::cell::RefCell;

use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use gantry_boot::image::CONTAINER_MAGIC;
use gantry_boot::layout::Region;
use gantry_boot::{Kv, Slot, StoreError};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustError, VerifiedTrustRoot};

use embedded_storage::nor_flash::NorFlash;
use sha2::Digest as _;

use crate::bundle::{self, BundleError, Pin, SlotWriter, Trust, VerifiedRelease};
use crate::layout::{DeviceLayout, Geometry};
use crate::table::{Installed, Phase, Record, RevertReason, SlotTable, TableError, index, other};
use crate::update::{self, Refusal, UpdateEvent};

/// The device flash: 4-byte words, 4 KiB pages.
/// The host build's flash: the NOR simulator on a file (or in memory, for
/// tests), with power-cut injection.
#[cfg(feature = "sim")]
pub type HostFlash = gantry_boot::sim::SimFlash<{ crate::layout::WORD as usize }, { crate::layout::PAGE as usize }>;
pub(crate) type Part<'a, F> = BlockingPartition<'a, CriticalSectionRawMutex, F>;

/// A key plus value in the device map, at most (one flash page less overhead).
const KV_BUF: usize = 4096;
const KEY_IDENTITY: u8 = 1;
const KEY_TRUST_ROOT: u8 = 2;
/// The whole slot table, as firmware before per-pair records wrote it:
/// read for the pairs that have no record yet, never written.
const KEY_LEGACY_TABLE: u8 = 3;
const KEY_ARTIFACTS: u8 = 4;
/// Issue time of the last deployment ticket accepted (u64, big-endian):
/// an older ticket is stale even with a valid signature and nonce.
const KEY_LAST_TICKET: u8 = 5;
/// The install under way, so a power cut or restart resumes it instead of
/// fetching it all again: SHA-256 of its envelope, slot pair, slot, and the
/// bytes of the slot on flash (u64, big-endian); empty when there is none.
const KEY_STAGING: u8 = 6;
/// The firmware update under way and the last one that failed
/// (`firmware::FirmwareRecord`).
pub(crate) const KEY_FIRMWARE: u8 = 7;
/// How often an install's progress is recorded (a resume sends at most
/// this much again, plus a page).
pub(crate) const PROGRESS_EVERY: u64 = 256 * 1024;
/// Artifact digests remembered (the oldest is forgotten first).
const MAX_ARTIFACTS: usize = 32;
/// Slot pair `p`'s records live under `KEY_RECORDS + 2p` and `+ 1`, in turn.
const KEY_RECORDS: u8 = 0x40;
const _: () = assert!(KEY_RECORDS as usize + 2 * crate::table::MAX_CONTAINERS as usize <= 256);

fn record_key(pair: u8, which: u8) -> u8 {
    KEY_RECORDS + 2 * pair + which
}

/// A slot-table record that could not be read. The device goes on with the
/// pair's previous record (or, for a legacy table, without it), and the
/// fault is reported; the next write of the pair replaces the bad record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {error}", match pair { Some(p) => format!("slot pair {p}"), None => "legacy table".into() })]
pub struct TableFault {
    /// The slot pair (`None`: the legacy whole-table record).
    pub pair: Option<u8>,
    /// Why it does not decode.
    pub error: TableError,
}

/// A pair's newest record that decodes, with which of its two keys holds
/// it, and the records that do not decode.
type PairRecord = (Option<(u8, Record)>, Vec<TableFault>);

/// The newest record of `pair` that decodes and which of the pair's two
/// keys holds it, plus the records that do not decode.
fn pair_record<F: NorFlash>(kv: &mut Kv<F, KV_BUF>, pair: u8) -> Result<PairRecord, Error> {
    let mut best: Option<(u8, Record)> = None;
    let mut faults = Vec::new();
    for which in 0..2 {
        let Some(bytes) = kv.get(record_key(pair, which))? else { continue };
        match Record::decode(bytes) {
            Ok(r) if best.as_ref().is_none_or(|(_, b)| r.generation > b.generation) => best = Some((which, r)),
            Ok(_) => {}
            Err(error) => faults.push(TableFault { pair: Some(pair), error }),
        }
    }
    Ok((best, faults))
}

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
    /// The trust root is malformed or under-signed, or has expired (which
    /// refuses new installs, never what runs), or a successor was refused.
    #[error("trust root: {0}")]
    Trust(#[from] TrustError),
    /// The device is not provisioned (`gantry-device init`).
    #[error("the device is not provisioned: run `gantry-device init`")]
    NotProvisioned,
    /// No such container.
    #[error("no container named {0:?}")]
    Unknown(String),
    /// The layout does not fit.
    #[error("layout: {0}")]
    Layout(#[from] gantry_boot::LayoutError),
    /// The geometry asks for more than the device map can hold.
    #[error("geometry: {0}")]
    Geometry(String),
    /// Something that must hold does not (the table names a slot that does not verify, ...).
    #[error("{0}")]
    Inconsistent(String),
    /// A firmware release refused, or a firmware step out of turn.
    #[error("firmware: {0}")]
    Firmware(String),
    /// The bootloader failed (flash, layout), not a verification.
    #[error("boot: {0}")]
    Boot(#[from] gantry_boot::BootError),
    /// The bootloader's control (DFU, STATE, boot map) failed or refused.
    #[error("firmware: {0}")]
    Control(#[from] gantry_boot::ControlError),
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

/// The [`KEY_STAGING`] record.
#[derive(Debug, PartialEq, Eq)]
struct Progress {
    envelope_sha256: [u8; 32],
    pair: u8,
    slot: Slot,
    flushed: u64,
}

impl Progress {
    const LEN: usize = 32 + 1 + 1 + 8;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..32].copy_from_slice(&self.envelope_sha256);
        b[32] = self.pair;
        b[33] = index(self.slot) as u8;
        b[34..].copy_from_slice(&self.flushed.to_be_bytes());
        b
    }

    /// Anything but a well-formed record (an empty one included) is none:
    /// the install then starts afresh.
    fn decode(b: &[u8]) -> Option<Progress> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let slot = match b[33] {
            0 => Slot::A,
            1 => Slot::B,
            _ => return None,
        };
        Some(Progress {
            envelope_sha256: b[..32].try_into().ok()?,
            pair: b[32],
            slot,
            flushed: u64::from_be_bytes(b[34..].try_into().ok()?),
        })
    }
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

/// An install under way: its envelope verified, its standby slot being
/// written from a stream ([`Store::stage`], [`Store::stage_write`]).
#[derive(Debug)]
pub struct Staging {
    release: VerifiedRelease,
    envelope_sha256: [u8; 32],
    pair: u8,
    slot: Slot,
    writer: SlotWriter,
    recorded: u64,
}

impl Staging {
    /// The release (its envelope verified; its payloads not yet).
    pub fn release(&self) -> &VerifiedRelease {
        &self.release
    }

    /// The next byte it needs: (payload index, offset in that payload);
    /// `None` once every payload arrived.
    pub fn position(&self) -> Option<(usize, u64)> {
        self.writer.position()
    }
}

/// What [`Store::stage`] decided.
#[derive(Debug)]
pub enum Stage {
    /// Send the payloads from [`Staging::position`] on.
    Writing(Box<Staging>),
    /// Refused, with nothing written.
    Refused(UpdateEvent),
}

/// A release written to its standby slot and verified from flash, not yet
/// switched to ([`Store::finish`], then [`Store::commit`]).
#[derive(Debug)]
pub struct Staged {
    /// What the slot holds.
    pub release: VerifiedRelease,
    pair: u8,
    slot: Slot,
}

/// The container store over a device's NOR flash: any
/// `embedded-storage` `NorFlash` with [`crate::layout::PAGE`]-byte erase
/// pages (an MCU's flash driver, or [`HostFlash`] on a host).
pub struct Store<F: NorFlash> {
    flash: Mutex<CriticalSectionRawMutex, RefCell<F>>,
    layout: DeviceLayout,
}

impl<F: NorFlash> Store<F> {
    /// Opens the store on `flash` laid out as `geometry`.
    pub fn open(flash: F, geometry: Geometry) -> Result<Store<F>, Error> {
        let layout = DeviceLayout::new(geometry)?;
        layout.check_device_map().map_err(Error::Geometry)?;
        if F::ERASE_SIZE != crate::layout::PAGE as usize
            || !(crate::layout::WORD as usize).is_multiple_of(F::WRITE_SIZE)
        {
            return Err(Error::Inconsistent(format!(
                "the flash erases {} and writes {} bytes at a time; the layout needs {}-byte pages and {}-byte words",
                F::ERASE_SIZE,
                F::WRITE_SIZE,
                crate::layout::PAGE,
                crate::layout::WORD
            )));
        }
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
    pub fn with_flash<R>(&self, f: impl FnOnce(&mut F) -> R) -> R {
        self.flash.lock(|c| f(&mut c.borrow_mut()))
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash.into_inner().into_inner()
    }

    pub(crate) fn part(&self, r: Region) -> Part<'_, F> {
        BlockingPartition::new(&self.flash, r.offset, r.size)
    }

    pub(crate) fn kv(&self) -> Result<Kv<Part<'_, F>, KV_BUF>, Error> {
        Ok(Kv::new(self.part(self.layout.device_kv))?)
    }

    /// Writes identity and trust root (`gantry-device init`), and the
    /// bootloader's keys from that root. The trust root must be
    /// self-signed by a threshold of its root keys and unexpired at `now`.
    pub fn provision(&self, identity: &Identity, trust_root: &[u8], now: u64) -> Result<(), Error> {
        let verified = SignedTrustRoot::from_bytes(trust_root)?.verify_self_signed(now)?;
        let keys = gantry_boot::BootKeys::from_trust_root(verified.root(), identity.vendor_id, identity.class_id)
            .map_err(|e| Error::Firmware(e.to_string()))?;
        self.provision_boot(&keys)?;
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

    /// The trust root the device holds, its signatures checked, whatever its
    /// expiry.
    pub fn trust_root(&self) -> Result<VerifiedTrustRoot, Error> {
        let bytes = self.kv()?.get(KEY_TRUST_ROOT)?.ok_or(Error::NotProvisioned)?.to_vec();
        Ok(SignedTrustRoot::from_bytes(&bytes)?.verify_signatures_only()?)
    }

    /// The trust root, refused if it has expired at `now`: past its expiry
    /// a root accepts nothing new (releases, tickets), only its successor,
    /// and an expired root is what a freeze attack looks like.
    fn unexpired_root(&self, now: u64) -> Result<VerifiedTrustRoot, Error> {
        let root = self.trust_root()?;
        root.check_unexpired(now)?;
        Ok(root)
    }

    /// Who may sign releases, from the trust root (unexpired at `now`).
    pub fn trust(&self, now: u64) -> Result<Trust, Error> {
        let identity = self.identity()?;
        let verified = self.unexpired_root(now)?;
        let policy = verified.root().policy(Role::Release);
        Ok(Trust {
            anchors: verified.root().role_keys(Role::Release),
            threshold: policy.threshold as usize,
            vendor_id: identity.vendor_id,
            class_id: identity.class_id,
        })
    }

    /// The keys of the trust root's `server` role and its threshold: who
    /// may sign deployment tickets (the root unexpired at `now`).
    pub fn server_keys(&self, now: u64) -> Result<(Vec<gantry_keys::PublicKey>, u32), Error> {
        let verified = self.unexpired_root(now)?;
        Ok((verified.root().role_keys(Role::Server), verified.root().policy(Role::Server).threshold))
    }

    /// Moves to the newest root of `chain` (oldest first, CBOR documents;
    /// roots not newer than the one held are skipped), if each is a valid
    /// successor of the one before: a threshold of the previous root's and
    /// of its own root keys signed it, and the last has not expired at
    /// `now`. The root held may have expired. Returns the new version, or
    /// `None` when `chain` holds nothing newer.
    ///
    /// The bootloader's keys move first, by the same rule from the root
    /// role it holds (keeping the firmware `running` bootable under its
    /// retired key), then the device map: one atomic write each, and a cut
    /// between them leaves the bootloader ahead, which the next rotation
    /// (the server sends the chain again) finds done. Refused while a
    /// firmware update is requested or on trial: a revert would land on an
    /// image the retired key does not cover.
    pub fn rotate_trust_root(
        &self,
        chain: &[Vec<u8>],
        now: u64,
        running: Option<&gantry_boot::BootRecord>,
    ) -> Result<Option<u64>, Error> {
        let held = self.trust_root()?;
        let chain = chain.iter().map(|b| SignedTrustRoot::from_bytes(b)).collect::<Result<Vec<_>, _>>()?;
        if chain.iter().all(|r| r.unverified_content().version <= held.root().version) {
            return Ok(None);
        }
        let next = held.verify_successors(&chain, now)?;
        if !matches!(self.swap_state()?, gantry_boot::SwapState::Boot | gantry_boot::SwapState::DfuDetach) {
            return Err(Error::Firmware(
                "a firmware update is under way: the trust root rotates once it is confirmed or reverted".into(),
            ));
        }
        self.rotate_boot_keys(&chain, now, running)?;
        self.kv()?.put(KEY_TRUST_ROOT, next.to_bytes())?;
        Ok(Some(next.root().version))
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

    /// The slot table (empty on a new device). A record that does not
    /// decode is passed over (see [`Store::table_faults`]).
    pub fn table(&self) -> Result<SlotTable, Error> {
        Ok(self.load()?.0)
    }

    /// The records of the slot table that do not decode right now.
    pub fn table_faults(&self) -> Result<Vec<TableFault>, Error> {
        Ok(self.load()?.1)
    }

    /// Each pair's newest record that decodes; a pair without any record
    /// takes its entry from the legacy table, if there is one.
    fn load(&self) -> Result<(SlotTable, Vec<TableFault>), Error> {
        let mut kv = self.kv()?;
        let mut faults = Vec::new();
        let legacy = match kv.get(KEY_LEGACY_TABLE)?.map(SlotTable::decode_legacy) {
            None => SlotTable::default(),
            Some(Ok(t)) => t,
            Some(Err(error)) => {
                faults.push(TableFault { pair: None, error });
                SlotTable::default()
            }
        };
        let mut table = SlotTable::default();
        for pair in 0..self.layout.max_containers {
            let (best, bad) = pair_record(&mut kv, pair)?;
            let never_written = best.is_none() && bad.is_empty();
            faults.extend(bad);
            let entry = match best {
                Some((_, record)) => record.container,
                None if never_written => legacy.in_pair(pair).cloned(),
                None => None,
            };
            let Some(c) = entry else { continue };
            if c.pair != pair || table.get(&c.name).is_some() {
                faults.push(TableFault { pair: Some(pair), error: TableError("a name or slot pair is used twice") });
                continue;
            }
            table.containers.push(c);
        }
        Ok((table, faults))
    }

    /// Persists the step from `before` to `after`: one atomic record write
    /// per slot pair that changed (a step of the update flow changes one).
    fn put_table(&self, before: &SlotTable, after: &SlotTable) -> Result<(), Error> {
        for pair in 0..self.layout.max_containers {
            let entry = after.in_pair(pair);
            if before.in_pair(pair) != entry {
                self.write_pair(pair, entry)?;
            }
        }
        Ok(())
    }

    /// Writes `pair`'s next record into the key that does not hold its
    /// newest good one, so that one stays until this write is complete.
    fn write_pair(&self, pair: u8, entry: Option<&crate::table::Container>) -> Result<(), Error> {
        let mut kv = self.kv()?;
        let (which, generation) = match pair_record(&mut kv, pair)?.0 {
            Some((which, r)) => (1 - which, r.generation.saturating_add(1)),
            None => (0, 1),
        };
        let bytes = Record { generation, container: entry.cloned() }.encode()?;
        Ok(kv.put(record_key(pair, which), &bytes)?)
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

    /// Installs a release given whole: [`Store::stage`], every payload in
    /// turn, [`Store::finish`] and [`Store::commit`]. `payloads`: module
    /// first, then blobs, in component order. A refusal
    /// (`Ok(UpdateEvent::Refused)`) writes nothing.
    pub fn install(&self, envelope: &[u8], payloads: &[&[u8]], now: u64) -> Result<UpdateEvent, Error> {
        let mut staging = match self.stage(envelope, now)? {
            Stage::Writing(s) => s,
            Stage::Refused(event) => return Ok(event),
        };
        if let Some(reason) = self.write_all(&mut staging, payloads)? {
            let name = staging.release.config.name.clone();
            return Ok(UpdateEvent::Refused { name, reason });
        }
        let staged = self.finish(staging, now)?;
        self.commit(staged)
    }

    /// Starts (or resumes) an install: verifies the envelope, refuses a
    /// release that does not fit or is not newer, and readies the standby
    /// slot. When the same envelope was being written into the same slot
    /// when the device stopped, the bytes on flash are kept: the install
    /// goes on from [`Staging::position`].
    pub fn stage(&self, envelope: &[u8], now: u64) -> Result<Stage, Error> {
        let trust = self.trust(now)?;
        let table = self.table()?;
        let refused =
            |name: &str, reason: Refusal| Ok(Stage::Refused(UpdateEvent::Refused { name: name.to_owned(), reason }));
        let release = match bundle::verify_envelope(envelope, &trust, 0) {
            Ok(r) => r,
            Err(e) => return refused("?", Refusal::Unverified(e.to_string())),
        };
        let name = release.config.name.clone();
        let size = bundle::slot_bytes(envelope.len(), release.payloads.iter().map(|p| p.len));
        if size > self.layout.slot_size as u64 {
            return refused(&name, Refusal::TooLarge { size, slot: self.layout.slot_size as u64 });
        }
        let plan = match update::plan_install(&table, &name, release.sequence, self.layout.max_containers) {
            Ok(p) => p,
            Err(reason) => return refused(&name, reason),
        };
        let envelope_sha256: [u8; 32] = sha2::Sha256::digest(envelope).into();
        let payloads: Vec<(u64, [u8; 32])> = release.payloads.iter().map(|p| (p.len, p.sha256)).collect();
        let region = self.layout.slot(plan.pair, plan.slot);
        let resumed = match self.progress()? {
            Some(p)
                if p.envelope_sha256 == envelope_sha256
                    && (p.pair, p.slot) == (plan.pair, plan.slot)
                    && plan.table.get(&name) == table.get(&name) =>
            {
                SlotWriter::resume(&mut self.part(region), envelope.len(), &payloads, p.flushed)?
            }
            _ => None,
        };
        let writer = match resumed {
            Some(w) => w,
            None => {
                self.abandon_record()?;
                self.put_table(&table, &plan.table)?;
                SlotWriter::begin(&mut self.part(region), &CONTAINER_MAGIC, envelope, &payloads)?
            }
        };
        let recorded = writer.flushed();
        Ok(Stage::Writing(Box::new(Staging {
            release,
            envelope_sha256,
            pair: plan.pair,
            slot: plan.slot,
            writer,
            recorded,
        })))
    }

    /// Writes every payload of an install, given whole; a refusal when
    /// they are not the ones signed (the install is then abandoned).
    pub fn write_all(&self, s: &mut Staging, payloads: &[&[u8]]) -> Result<Option<Refusal>, Error> {
        let signed = &s.release.payloads;
        if signed.len() != payloads.len() || signed.iter().zip(payloads).any(|(p, g)| p.len != g.len() as u64) {
            self.abandon(&s.release.config.name);
            let e = BundleError::PayloadCount { expected: signed.len(), given: payloads.len() };
            return Ok(Some(Refusal::Unverified(format!("{e}, of the signed sizes"))));
        }
        while let Some((i, at)) = s.position() {
            match self.stage_write(s, &payloads[i][at as usize..]) {
                Ok(()) => {}
                Err(Error::Bundle(e @ BundleError::PayloadMismatch { .. })) => {
                    return Ok(Some(Refusal::Unverified(e.to_string())));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Writes the next bytes of an install (from [`Staging::position`]
    /// on), hashing each payload as it arrives. A payload that does not
    /// hash to its signed digest is refused, and the install starts afresh
    /// next time.
    pub fn stage_write(&self, s: &mut Staging, data: &[u8]) -> Result<(), Error> {
        let region = self.layout.slot(s.pair, s.slot);
        for piece in data.chunks(PROGRESS_EVERY as usize) {
            if let Err(e) = s.writer.write(&mut self.part(region), piece) {
                self.abandon(&s.release.config.name);
                return Err(e.into());
            }
            if s.writer.flushed() >= s.recorded.saturating_add(PROGRESS_EVERY) {
                self.record_progress(s)?;
            }
        }
        Ok(())
    }

    /// Keeps what an install received so far (every whole word, on flash,
    /// with its progress recorded), when its download stopped: the next
    /// [`Store::stage`] of the same envelope goes on from there.
    pub fn checkpoint(&self, s: &mut Staging) -> Result<(), Error> {
        s.writer.flush_words(&mut self.part(self.layout.slot(s.pair, s.slot)))?;
        if s.writer.flushed() > s.recorded {
            self.record_progress(s)?;
        }
        Ok(())
    }

    fn record_progress(&self, s: &mut Staging) -> Result<(), Error> {
        let flushed = s.writer.flushed();
        let p = Progress { envelope_sha256: s.envelope_sha256, pair: s.pair, slot: s.slot, flushed };
        self.kv()?.put(KEY_STAGING, &p.encode())?;
        s.recorded = flushed;
        Ok(())
    }

    /// Ends the writing: every payload arrived; the slot is verified from
    /// flash under the trust root (nothing is switched yet).
    pub fn finish(&self, s: Box<Staging>, now: u64) -> Result<Staged, Error> {
        let region = self.layout.slot(s.pair, s.slot);
        let result = s.writer.finish(&mut self.part(region)).map_err(Error::from).and_then(|()| {
            let trust = self.trust(now)?;
            Ok(bundle::verify_slot(&mut self.part(region), &trust, 0)?)
        });
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                self.abandon(&s.release.config.name);
                return Err(e);
            }
        };
        if written.manifest_digest != s.release.manifest_digest {
            self.abandon(&s.release.config.name);
            return Err(Error::Inconsistent("the slot does not hold what was written".into()));
        }
        Ok(Staged { release: written, pair: s.pair, slot: s.slot })
    }

    /// Switches to a staged release, on probation.
    pub fn commit(&self, s: Staged) -> Result<UpdateEvent, Error> {
        let table = self.table()?;
        let installed = Installed {
            manifest_digest: s.release.manifest_digest,
            sequence: s.release.sequence,
            version: s.release.config.version.clone(),
        };
        let (next, event) = update::switch(&table, &s.release.config.name, s.slot, installed)
            .ok_or_else(|| Error::Inconsistent("the planned container vanished".into()))?;
        self.put_table(&table, &next)?;
        self.abandon_record()?;
        Ok(event)
    }

    /// Gives up the install of `name` under way: its standby slot stays
    /// empty, and a container that was new is forgotten (nothing of it was
    /// installed).
    pub fn abandon(&self, name: &str) {
        // Best effort: a record left behind only lets the same envelope
        // resume, and every resumed slot is verified from flash again; an
        // entry left behind has nothing to run and is reused by the next
        // install of that name.
        let _ = self.abandon_record();
        let _ = self.table().and_then(|before| {
            let mut t = before.clone();
            t.containers.retain(|c| c.name != name || c.slots.iter().any(Option::is_some));
            self.put_table(&before, &t)
        });
    }

    fn abandon_record(&self) -> Result<(), Error> {
        if self.progress()?.is_some() {
            self.kv()?.put(KEY_STAGING, &[])?;
        }
        Ok(())
    }

    fn progress(&self) -> Result<Option<Progress>, Error> {
        Ok(self.kv()?.get(KEY_STAGING)?.and_then(Progress::decode))
    }

    /// A payload of a staged release, read from its slot and checked
    /// against its signed digest again.
    pub fn read_staged(&self, s: &Staged, payload: &bundle::Payload) -> Result<Vec<u8>, Error> {
        self.read_from(s.pair, s.slot, payload)
    }

    fn read_from(&self, pair: u8, slot: Slot, payload: &bundle::Payload) -> Result<Vec<u8>, Error> {
        let bytes = bundle::read_payload(&mut self.part(self.layout.slot(pair, slot)), payload)?;
        if sha2::Sha256::digest(&bytes)[..] != payload.sha256 {
            return Err(BundleError::PayloadMismatch { component: payload.component }.into());
        }
        Ok(bytes)
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
        let before = self.table()?;
        let mut t = before.clone();
        t.get_mut(name).ok_or_else(|| Error::Unknown(name.to_owned()))?.enabled = enabled;
        self.put_table(&before, &t)
    }

    /// Forgets `name` (its slots are reused by the next install).
    pub fn remove(&self, name: &str) -> Result<UpdateEvent, Error> {
        let before = self.table()?;
        let mut t = before.clone();
        t.containers.retain(|c| c.name != name);
        if t.containers.len() == before.containers.len() {
            return Err(Error::Unknown(name.to_owned()));
        }
        self.put_table(&before, &t)?;
        Ok(UpdateEvent::Removed { name: name.to_owned() })
    }

    fn apply(
        &self,
        f: impl FnOnce(&SlotTable) -> Option<(SlotTable, UpdateEvent)>,
    ) -> Result<Option<UpdateEvent>, Error> {
        let t = self.table()?;
        match f(&t) {
            Some((next, event)) => {
                self.put_table(&t, &next)?;
                Ok(Some(event))
            }
            None => Ok(None),
        }
    }

    /// At runtime start: count the restart against probations (reverting
    /// those that ran out), then verify every enabled container's active
    /// slot from flash. A container whose active slot does not verify falls
    /// back to its standby slot if that one does, and is reported.
    pub fn start(&self) -> Result<(Vec<Runnable>, Vec<UpdateEvent>), Error> {
        let identity = self.identity()?;
        let before = self.table()?;
        let (mut table, mut events) = update::on_runtime_start(&before);
        let mut runnable = Vec::new();
        for i in 0..table.containers.len() {
            let c = &table.containers[i];
            // Disabled, or new with its first install under way: nothing to run.
            if !c.enabled || c.running().is_none() {
                continue;
            }
            let (name, pair, active) = (c.name.clone(), c.pair, c.active);
            match self.verify_installed(&table, &name, pair, active, &identity) {
                Ok(release) => runnable.push(Runnable { name, slot: active, release }),
                Err(e) => {
                    let standby = other(active);
                    let reason = RevertReason::new(&format!("active slot does not verify: {e}"));
                    match self.verify_installed(&table, &name, pair, standby, &identity) {
                        Ok(release) => {
                            let c = &mut table.containers[i];
                            c.active = standby;
                            c.phase = Phase::Reverted { reason: reason.clone() };
                            events.push(UpdateEvent::Reverted {
                                name: name.clone(),
                                from: 0,
                                to: Some(release.sequence),
                                reason: reason.to_string(),
                            });
                            runnable.push(Runnable { name, slot: standby, release });
                        }
                        Err(_) => {
                            let c = &mut table.containers[i];
                            c.enabled = false;
                            c.phase = Phase::Reverted { reason: reason.clone() };
                            events.push(UpdateEvent::Reverted { name, from: 0, to: None, reason: reason.to_string() });
                        }
                    }
                }
            }
        }
        self.put_table(&before, &table)?;
        Ok((runnable, events))
    }

    /// `name`'s active slot verified from flash, if it is enabled and verifies.
    pub fn runnable(&self, name: &str) -> Result<Option<Runnable>, Error> {
        let identity = self.identity()?;
        let table = self.table()?;
        let Some(c) = table.get(name).filter(|c| c.enabled && c.running().is_some()) else { return Ok(None) };
        let release = self.verify_installed(&table, name, c.pair, c.active, &identity)?;
        Ok(Some(Runnable { name: name.to_owned(), slot: c.active, release }))
    }

    /// Verifies from flash that the slot holds, intact, the release the
    /// table recorded when it was installed (by its manifest digest: the
    /// keys that signed it may have been rotated away since, and the trust
    /// root may have expired; neither stops what the device verified).
    fn verify_installed(
        &self,
        table: &SlotTable,
        name: &str,
        pair: u8,
        slot: Slot,
        identity: &Identity,
    ) -> Result<VerifiedRelease, Error> {
        let c = table.get(name).ok_or_else(|| Error::Unknown(name.to_owned()))?;
        let expected = c.slots[index(slot)].as_ref().ok_or_else(|| Error::Inconsistent("the slot is empty".into()))?;
        let pin = Pin {
            manifest_digest: expected.manifest_digest,
            vendor_id: identity.vendor_id,
            class_id: identity.class_id,
        };
        let release = bundle::verify_slot_pinned(&mut self.part(self.layout.slot(pair, slot)), &pin)?;
        if release.config.name != name {
            return Err(Error::Inconsistent("the slot holds another release than the table says".into()));
        }
        Ok(release)
    }

    /// A payload of a verified release, read from its slot and checked
    /// against its signed digest again (the slot could have changed since).
    pub fn read_payload(&self, r: &Runnable, payload: &bundle::Payload) -> Result<Vec<u8>, Error> {
        let pair = self.table()?.get(&r.name).ok_or_else(|| Error::Unknown(r.name.clone()))?.pair;
        self.read_from(pair, r.slot, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Container, MAX_REASON, encode_legacy};

    fn store() -> Store<HostFlash> {
        store_of(2)
    }

    fn store_of(max_containers: u8) -> Store<HostFlash> {
        let geometry = Geometry { firmware_pages: 1, device_kv_pages: 4, max_containers, slot_size: 8192 };
        let size = DeviceLayout::new(geometry).unwrap().size() as usize;
        Store::open(HostFlash::new(size), geometry).unwrap()
    }

    fn container(name: &str, pair: u8, phase: Phase) -> Container {
        let installed = Installed { manifest_digest: [pair; 32], sequence: 4, version: "4".into() };
        Container {
            name: name.into(),
            pair,
            active: Slot::A,
            phase,
            slots: [Some(installed), None],
            counter: 4,
            enabled: true,
        }
    }

    /// Earlier firmware wrote the whole table with an unbounded revert
    /// reason and then could not read it back: every command failed and
    /// no install could ever fix it. It is read leniently and migrated one
    /// pair at a time.
    #[test]
    fn a_legacy_table_with_a_long_reason_is_read_and_migrated() {
        let s = store();
        // What earlier firmware wrote: the reason whole, 3,000 bytes.
        let reason = format!("entry point \"{}\" is not exported", "e".repeat(2990));
        let long = Phase::Reverted { reason: RevertReason::unbounded(reason) };
        let legacy = SlotTable { containers: vec![container("app", 0, long), container("ml", 1, Phase::Confirmed)] };
        let bytes = encode_legacy(&legacy);
        s.kv().unwrap().put(KEY_LEGACY_TABLE, &bytes).unwrap();
        let t = s.table().unwrap();
        let Phase::Reverted { reason: read } = &t.get("app").unwrap().phase else { panic!("{t:?}") };
        assert!(read.as_str().starts_with("entry point") && read.as_str().len() <= MAX_REASON);
        assert_eq!(s.table_faults().unwrap(), vec![]);

        // A step on one container writes its record; the other still comes
        // from the legacy table.
        s.set_enabled("ml", false).unwrap();
        let t = s.table().unwrap();
        assert!(!t.get("ml").unwrap().enabled);
        assert!(t.get("app").is_some());
        s.remove("app").unwrap();
        assert!(
            s.table().unwrap().get("app").is_none(),
            "a removed container does not come back from the legacy table"
        );
    }

    #[test]
    fn a_record_that_does_not_decode_falls_back_to_the_previous_one_and_is_reported() {
        let s = store();
        let v1 = SlotTable { containers: vec![container("app", 0, Phase::Confirmed)] };
        s.put_table(&SlotTable::default(), &v1).unwrap();
        let mut v2 = v1.clone();
        v2.containers[0].enabled = false;
        s.put_table(&v1, &v2).unwrap();
        assert_eq!(s.table().unwrap(), v2);

        // The newest record (the second key) is damaged.
        s.kv().unwrap().put(record_key(0, 1), b"\x83\x02\x02\xff").unwrap();
        assert_eq!(s.table().unwrap(), v1, "the last good record");
        let faults = s.table_faults().unwrap();
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].pair, Some(0));
        assert!(faults[0].to_string().starts_with("slot pair 0: malformed slot table"), "{}", faults[0]);

        // The next step replaces the bad record and the fault is gone.
        s.put_table(&v1, &v2).unwrap();
        assert_eq!(s.table().unwrap(), v2);
        assert_eq!(s.table_faults().unwrap(), vec![]);

        // Neither record decodes: the pair is free again, and reported.
        s.kv().unwrap().put(record_key(0, 0), b"junk").unwrap();
        s.kv().unwrap().put(record_key(0, 1), b"junk").unwrap();
        assert_eq!(s.table().unwrap(), SlotTable::default());
        assert_eq!(s.table_faults().unwrap().len(), 2);
    }

    #[test]
    fn a_legacy_table_that_does_not_decode_is_reported_not_fatal() {
        let s = store();
        s.kv().unwrap().put(KEY_LEGACY_TABLE, b"\x82\x01\x81\x00").unwrap();
        assert_eq!(s.table().unwrap(), SlotTable::default());
        assert_eq!(s.table_faults().unwrap()[0].pair, None);
    }

    /// The smallest device map the geometry check allows holds the worst
    /// case: as many containers as it allows, with every string at its
    /// bound, rewritten many times, beside a full artifact list and the
    /// trust root's largest size.
    #[test]
    fn the_progress_record_round_trips_and_anything_else_is_none() {
        let p = Progress { envelope_sha256: [7; 32], pair: 3, slot: Slot::B, flushed: 1 << 40 };
        assert_eq!(Progress::decode(&p.encode()), Some(p));
        let mut bad_slot = Progress { envelope_sha256: [7; 32], pair: 0, slot: Slot::A, flushed: 0 }.encode();
        bad_slot[33] = 2;
        for b in [&[][..], &bad_slot[..], &[0; Progress::LEN + 1][..], &[0; Progress::LEN - 1][..]] {
            assert_eq!(Progress::decode(b), None);
        }
    }

    #[test]
    fn the_smallest_device_map_holds_the_worst_case() {
        let s = store_of(3);
        s.kv().unwrap().put(KEY_TRUST_ROOT, &[0xA5; KV_BUF - 64]).unwrap();
        for i in 0..MAX_ARTIFACTS as u8 + 4 {
            s.record_artifact(&[i; 32], &[i; 32]).unwrap();
        }
        let wide = |name: char, pair: u8, n: u64| {
            let mut c = container(&name.to_string().repeat(crate::table::MAX_NAME), pair, Phase::Confirmed);
            c.phase = Phase::Reverted { reason: RevertReason::new(&"é".repeat(MAX_REASON)) };
            let installed = Installed { manifest_digest: [0xFF; 32], sequence: u64::MAX - n, version: "v".repeat(64) };
            c.slots = [Some(installed.clone()), Some(installed)];
            c.counter = u64::MAX - n;
            c
        };
        let mut before = SlotTable::default();
        for n in 0..500 {
            let after = SlotTable { containers: vec![wide('a', 0, n), wide('b', 1, n), wide('c', 2, n)] };
            s.put_table(&before, &after).unwrap();
            let progress = Progress { envelope_sha256: [n as u8; 32], pair: 2, slot: Slot::A, flushed: n << 18 };
            s.kv().unwrap().put(KEY_STAGING, &progress.encode()).unwrap();
            before = after;
        }
        assert_eq!(s.table().unwrap(), before);
        assert_eq!(s.progress().unwrap().map(|p| p.flushed), Some(499 << 18));
        let too_many = Geometry { firmware_pages: 1, device_kv_pages: 4, max_containers: 4, slot_size: 8192 };
        let size = DeviceLayout::new(too_many).unwrap().size() as usize;
        assert!(matches!(Store::open(HostFlash::new(size), too_many), Err(Error::Geometry(_))));
    }
}
