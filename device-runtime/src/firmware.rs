//! The device's firmware, through gantry-boot on the same flash as the
//! containers: the boot decision at power-on, and the runtime's side of a
//! firmware update (stream a verified release into DFU, verify it from
//! flash, ask for it at the next boot, confirm it once healthy).
//!
//! ```text
//!  stage_firmware(envelope)   verify: boot keys, identity, not below the
//!       │                     counter, one ["firmware"] component; DFU free
//!  firmware_write(bytes)*     hashed as it streams into DFU
//!  finish_firmware()          verified from flash as the bootloader will,
//!       │                     then requested (journaled STATE write)
//!  ── restart ── boot()       gantry-boot swaps it in, on trial
//!  confirm_firmware(record)   after the health checks: counter raised
//! ```
//!
//! A host device has one trial boot ([`BOOT_POLICY`]): the runtime decides
//! within it, and a restart without a confirm reverts.

use embedded_storage::nor_flash::NorFlash;
use gantry_boot::image::{MAGIC, MAX_ENVELOPE};
use gantry_boot::{
    BootKeys, BootOutcome, BootPolicy, BootRecord, Bootloader, Control, ImageError, Measurement, Reason, SwapState,
    Workspace,
};
use gantry_signing::Policy;
use sha2::Digest as _;

use std::collections::BTreeSet;

use crate::bundle::SlotWriter;
use crate::store::{Error, KEY_FIRMWARE, PROGRESS_EVERY, Part, Store};
use crate::update::Verdict;

/// How the bootloader treats updates on a Gantry device: one trial boot,
/// and an update verified before it is swapped in.
pub const BOOT_POLICY: BootPolicy = BootPolicy { max_trial_boots: 1, check_update_before_swap: true };

/// Bytes of the boot path's page-copy buffer (divides the 4 KiB page).
const PAGE_BUF: usize = 256;

/// What runs as the device's firmware, as the runtime learned it at
/// power-on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Not booted yet in this process.
    Unknown,
    /// No firmware image at all (a host device that never had one, ACTIVE
    /// and DFU empty), or a bootloader without keys (a device provisioned
    /// before it had any): the runtime runs on its own.
    Absent,
    /// This image runs, measured by the bootloader; on trial until confirmed.
    Running(BootRecord),
    /// Nothing verifies: containers do not start; the agent can still
    /// stream a verified image into DFU and restart into it.
    Recovery(Reason),
}

impl Firmware {
    /// The measured boot record, if firmware runs.
    pub fn record(&self) -> Option<&BootRecord> {
        match self {
            Firmware::Running(r) => Some(r),
            _ => None,
        }
    }

    /// From the bootloader's decision.
    pub fn from_outcome(outcome: BootOutcome) -> Firmware {
        match outcome {
            BootOutcome::Boot(record) => Firmware::Running(record),
            BootOutcome::Recovery(ImageError::Empty) => Firmware::Absent,
            BootOutcome::Recovery(e) => Firmware::Recovery(e.reason()),
        }
    }
}

/// What `record` becomes once the runtime confirms it (as
/// `gantry_boot::Control::confirm` does it: the trial ends, the counter
/// rises to it; the slot is the one it was tried in).
pub(crate) fn confirmed(record: &BootRecord) -> BootRecord {
    BootRecord {
        trial: false,
        trial_boots: 0,
        security_counter: record.security_counter.max(record.sequence),
        ..*record
    }
}

/// What became of a firmware update, once the device knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirmwareOutcome {
    /// It runs, confirmed.
    Confirmed {
        /// Its manifest digest.
        manifest_digest: [u8; 32],
        /// Its sequence number.
        sequence: u64,
    },
    /// It does not run: its trial failed, or it was refused or never
    /// reached at boot.
    Reverted {
        /// Its manifest digest.
        manifest_digest: [u8; 32],
        /// Its sequence number.
        sequence: u64,
        /// Why.
        reason: String,
    },
}

/// The device map's firmware record: the update requested and not yet
/// settled, the last one that did not take (so it is not tried again), and
/// the download under way (so a cut one resumes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FirmwareRecord {
    pending: Option<([u8; 32], u64)>,
    failed: Option<[u8; 32]>,
    /// SHA-256 of the envelope being written into DFU, and the bytes of
    /// DFU on flash.
    writing: Option<([u8; 32], u64)>,
}

impl FirmwareRecord {
    const LEN: usize = 1 + 32 + 8 + 1 + 32 + 1 + 32 + 8;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        if let Some((digest, sequence)) = self.pending {
            b[0] = 1;
            b[1..33].copy_from_slice(&digest);
            b[33..41].copy_from_slice(&sequence.to_be_bytes());
        }
        if let Some(digest) = self.failed {
            b[41] = 1;
            b[42..74].copy_from_slice(&digest);
        }
        if let Some((digest, flushed)) = self.writing {
            b[74] = 1;
            b[75..107].copy_from_slice(&digest);
            b[107..].copy_from_slice(&flushed.to_be_bytes());
        }
        b
    }

    /// Anything but a well-formed record is an empty one (nothing pending:
    /// an outcome might go unreported, never a wrong one).
    fn decode(b: &[u8]) -> FirmwareRecord {
        let Ok(b) = <&[u8; Self::LEN]>::try_from(b) else { return FirmwareRecord::default() };
        let digest = |at: usize| -> [u8; 32] { b[at..at + 32].try_into().unwrap_or([0; 32]) };
        let number = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        FirmwareRecord {
            pending: (b[0] == 1).then(|| (digest(1), number(33))),
            failed: (b[41] == 1).then(|| digest(42)),
            writing: (b[74] == 1).then(|| (digest(75), number(107))),
        }
    }
}

/// gantry-boot's control over this store's DFU, STATE and boot map.
type BootControl<'a, F> = Control<Part<'a, F>, Part<'a, F>, Part<'a, F>>;

/// A firmware release being written into DFU.
#[derive(Debug)]
pub struct FirmwareStaging {
    writer: SlotWriter,
    /// Bytes of DFU on flash when progress was last recorded.
    recorded: u64,
    /// Digest of its envelope (which release this is).
    pub envelope_sha256: [u8; 32],
    /// Its sequence number.
    pub sequence: u64,
    /// Its image size.
    pub image_size: u64,
    /// Its image's signed SHA-256.
    pub image_sha256: [u8; 32],
}

impl FirmwareStaging {
    /// The next byte of the image expected (a resumed download starts
    /// mid-way); the image size once every byte arrived.
    pub fn position(&self) -> u64 {
        self.writer.position().map_or(self.image_size, |(_, at)| at)
    }
}

impl<F: NorFlash> Store<F> {
    fn control(&self) -> Result<BootControl<'_, F>, Error> {
        let boot = &self.layout().boot;
        Ok(Control::new(
            self.part(boot.dfu),
            self.part(boot.state),
            self.part(boot.boot_kv),
            boot.active.size as usize,
            crate::layout::PAGE as usize,
        )?)
    }

    /// The bootloader's decision at power-on, over this flash: what runs,
    /// measured, or recovery and why.
    pub fn boot(&self) -> Result<BootOutcome, Error> {
        let boot = &self.layout().boot;
        let mut bl = Bootloader::provisioned(
            BOOT_POLICY,
            self.part(boot.active),
            self.part(boot.dfu),
            self.part(boot.state),
            self.part(boot.boot_kv),
        )?;
        let (mut page, mut envelope) = ([0u8; PAGE_BUF], vec![0u8; MAX_ENVELOPE]);
        Ok(bl.boot(&mut Workspace { page: &mut page, envelope: &mut envelope })?)
    }

    /// The keys the bootloader holds (`None` on a device provisioned
    /// before it had any).
    pub fn boot_keys(&self) -> Result<Option<BootKeys>, Error> {
        Ok(self.control()?.keys()?)
    }

    /// Provisions the bootloader's keys (manufacture; the same keys again
    /// are a no-op).
    pub(crate) fn provision_boot(&self, keys: &BootKeys) -> Result<(), Error> {
        Ok(self.control()?.provision(keys)?)
    }

    /// Moves the bootloader's keys along `chain` (see
    /// `gantry_boot::Control::rotate_trust_root`); nothing on a device whose
    /// bootloader holds no keys.
    pub(crate) fn rotate_boot_keys(
        &self,
        chain: &[gantry_keys::trust::SignedTrustRoot],
        now: u64,
        running: Option<&BootRecord>,
    ) -> Result<Option<u64>, Error> {
        let mut control = self.control()?;
        if control.keys()?.is_none() {
            return Ok(None);
        }
        Ok(control.rotate_trust_root(chain, now, running)?)
    }

    /// Where embassy-boot stands: an update requested, on trial, ...
    pub fn swap_state(&self) -> Result<SwapState, Error> {
        Ok(self.boot_state()?.0)
    }

    /// Where embassy-boot stands, and what the bootloader keeps (the
    /// anti-rollback counter, boots, the last refusal or revert).
    pub fn boot_state(&self) -> Result<(SwapState, gantry_boot::BootState), Error> {
        Ok(self.control()?.status()?)
    }

    /// Starts writing a firmware release into DFU: its envelope verified
    /// under the bootloader's release keys and this device's identity, its
    /// sequence above the anti-rollback counter, one `["firmware"]`
    /// component that fits ACTIVE; refused while another update is
    /// requested or on trial, and while the device's trust root has
    /// expired at `now` (nothing new is installed then). When the same
    /// envelope was being written when the download or the power stopped,
    /// the bytes on flash are kept: the image goes on from
    /// [`FirmwareStaging::position`].
    pub fn stage_firmware(&self, envelope: &[u8], now: u64) -> Result<FirmwareStaging, Error> {
        self.trust(now)?;
        let mut control = self.control()?;
        let (swap, state) = control.status()?;
        if !matches!(swap, SwapState::Boot | SwapState::DfuDetach) {
            return Err(Error::Firmware("an update is already requested or on trial".into()));
        }
        let keys = control.keys()?.ok_or_else(|| Error::Firmware("the bootloader holds no keys".into()))?;
        let config = keys.config(BOOT_POLICY);
        // Above the counter, which a confirm raises to what runs: the same
        // or an older release is not an update.
        let policy = Policy::new(config.anchors, config.threshold)
            .min_sequence(state.security_counter.saturating_add(1))
            .identity(Some(&config.vendor_id), Some(&config.class_id));
        let verified = gantry_signing::verify(envelope, &policy).map_err(|e| Error::Firmware(e.to_string()))?;
        if !gantry_boot::check::is_firmware_manifest(verified.manifest()) {
            return Err(Error::Firmware("not a firmware release: one [\"firmware\"] component expected".into()));
        }
        let image = verified.declared_image(0).map_err(|e| Error::Firmware(e.to_string()))?;
        let (Some(sha256), Some(size)) = (image.sha256, image.size) else {
            return Err(Error::Firmware("the firmware component has no SHA-256 digest and size".into()));
        };
        let total = crate::bundle::slot_bytes(envelope.len(), [size]);
        let room = self.layout().boot.active.size as u64;
        if total > room {
            return Err(Error::Firmware(format!("a {total}-byte firmware slot image does not fit ACTIVE ({room})")));
        }
        let dfu = self.layout().boot.dfu;
        let envelope_sha256: [u8; 32] = sha2::Sha256::digest(envelope).into();
        let payloads = [(size, sha256)];
        let record = self.firmware_record()?;
        let resumed = match record.writing {
            Some((digest, flushed)) if digest == envelope_sha256 => {
                SlotWriter::resume(&mut self.part(dfu), envelope.len(), &payloads, flushed)?
            }
            _ => None,
        };
        let writer = match resumed {
            Some(w) => w,
            None => {
                // Forgotten before DFU is erased: a record never names
                // bytes that are not there.
                if record.writing.is_some() {
                    self.put_firmware_record(&FirmwareRecord { writing: None, ..record })?;
                }
                SlotWriter::begin(&mut self.part(dfu), &MAGIC, envelope, &payloads)?
            }
        };
        Ok(FirmwareStaging {
            recorded: writer.flushed(),
            writer,
            envelope_sha256,
            sequence: verified.sequence_number(),
            image_size: size,
            image_sha256: sha256,
        })
    }

    /// The next bytes of the image (from [`FirmwareStaging::position`]);
    /// refused past its end, and when its bytes do not hash to the signed
    /// digest (at the last byte: the download then starts afresh next
    /// time). Progress is recorded as it goes.
    pub fn firmware_write(&self, staging: &mut FirmwareStaging, bytes: &[u8]) -> Result<(), Error> {
        let dfu = self.layout().boot.dfu;
        for piece in bytes.chunks(PROGRESS_EVERY as usize) {
            if let Err(e) = staging.writer.write(&mut self.part(dfu), piece) {
                self.forget_writing();
                return Err(e.into());
            }
            if staging.writer.flushed() >= staging.recorded.saturating_add(PROGRESS_EVERY) {
                self.record_firmware_progress(staging)?;
            }
        }
        Ok(())
    }

    /// Keeps what a firmware download received so far (every whole word,
    /// on flash, its progress recorded), when it stopped: the next
    /// [`Store::stage_firmware`] of the same envelope goes on from there.
    pub fn checkpoint_firmware(&self, staging: &mut FirmwareStaging) -> Result<(), Error> {
        staging.writer.flush_words(&mut self.part(self.layout().boot.dfu))?;
        if staging.writer.flushed() > staging.recorded {
            self.record_firmware_progress(staging)?;
        }
        Ok(())
    }

    fn record_firmware_progress(&self, staging: &mut FirmwareStaging) -> Result<(), Error> {
        let record = self.firmware_record()?;
        let writing = Some((staging.envelope_sha256, staging.writer.flushed()));
        self.put_firmware_record(&FirmwareRecord { writing, ..record })?;
        staging.recorded = staging.writer.flushed();
        Ok(())
    }

    /// Best effort: a record left behind only lets the same envelope
    /// resume, and the image is verified from flash before it is requested.
    fn forget_writing(&self) {
        let _ = self.firmware_record().and_then(|r| match r.writing {
            Some(_) => self.put_firmware_record(&FirmwareRecord { writing: None, ..r }),
            None => Ok(()),
        });
    }

    /// Ends the write, verifies DFU from flash as the bootloader will, and
    /// asks for the update at the next boot (remembered as pending first,
    /// so its outcome is reported whatever the boot makes of it). Returns
    /// what was measured.
    pub fn finish_firmware(&self, staging: FirmwareStaging) -> Result<Measurement, Error> {
        let measured = self.verify_dfu(staging).inspect_err(|_| self.forget_writing())?;
        let mut control = self.control()?;
        // From here on a failure the bootloader records is this update's:
        // without one, a pending update that does not run was never
        // requested (see `settle_firmware`).
        control.clear_failure()?;
        let record = self.firmware_record()?;
        self.put_firmware_record(&FirmwareRecord {
            pending: Some((measured.manifest_digest, measured.sequence)),
            writing: None,
            ..record
        })?;
        control.request_update()?;
        Ok(measured)
    }

    /// Writes the rest of the image and verifies DFU from flash.
    fn verify_dfu(&self, staging: FirmwareStaging) -> Result<Measurement, Error> {
        staging.writer.finish(&mut self.part(self.layout().boot.dfu))?;
        let mut control = self.control()?;
        let keys = control.keys()?.ok_or_else(|| Error::Firmware("the bootloader holds no keys".into()))?;
        let (mut envelope, mut chunk) = (vec![0u8; MAX_ENVELOPE], vec![0u8; 64 * 1024]);
        Ok(control.verify_update(&keys.config(BOOT_POLICY), &mut envelope, &mut chunk)?)
    }

    /// Confirms the firmware this boot runs (`record`, from [`Store::boot`]):
    /// its trial ends and the anti-rollback counter rises to it. The
    /// outcome of the update that brought it, if one was pending.
    pub fn confirm_firmware(&self, record: &BootRecord) -> Result<Option<FirmwareOutcome>, Error> {
        self.control()?.confirm(record)?;
        self.settle_firmware(&Firmware::Running(confirmed(record)))
    }

    /// Settles a pending firmware update against what this power-on booted:
    /// confirmed if it runs confirmed, reverted if something else runs
    /// and the bootloader recorded why; nothing while it runs on trial.
    /// An update that does not run and did not fail was never requested (a
    /// power cut came between remembering it and asking for it): it is
    /// forgotten, not failed, so the agent fetches it again.
    pub fn settle_firmware(&self, booted: &Firmware) -> Result<Option<FirmwareOutcome>, Error> {
        let record = self.firmware_record()?;
        let Some((manifest_digest, sequence)) = record.pending else { return Ok(None) };
        let outcome = match booted {
            Firmware::Running(r) if r.manifest_digest == manifest_digest && r.trial => return Ok(None),
            Firmware::Running(r) if r.manifest_digest == manifest_digest => {
                FirmwareOutcome::Confirmed { manifest_digest, sequence }
            }
            Firmware::Running(BootRecord { last_failure: None, .. }) => {
                self.put_firmware_record(&FirmwareRecord { pending: None, ..record })?;
                return Ok(None);
            }
            other => {
                let reason = match other {
                    Firmware::Running(BootRecord { last_failure: Some(Reason::TrialExpired), .. }) => {
                        "its trial failed: the device restarted unconfirmed".into()
                    }
                    Firmware::Running(BootRecord { last_failure: Some(f), .. }) => {
                        format!("refused at boot: {}", f.code())
                    }
                    Firmware::Recovery(reason) => format!("the device is in recovery: {}", reason.code()),
                    _ => "not booted".into(),
                };
                FirmwareOutcome::Reverted { manifest_digest, sequence, reason }
            }
        };
        let failed = match outcome {
            FirmwareOutcome::Reverted { .. } => Some(manifest_digest),
            FirmwareOutcome::Confirmed { .. } => record.failed,
        };
        self.put_firmware_record(&FirmwareRecord { pending: None, failed, ..record })?;
        Ok(Some(outcome))
    }

    /// The last firmware release that did not take on this device.
    pub fn failed_firmware(&self) -> Result<Option<[u8; 32]>, Error> {
        Ok(self.firmware_record()?.failed)
    }

    fn firmware_record(&self) -> Result<FirmwareRecord, Error> {
        Ok(self.kv()?.get(KEY_FIRMWARE)?.map(FirmwareRecord::decode).unwrap_or_default())
    }

    fn put_firmware_record(&self, record: &FirmwareRecord) -> Result<(), Error> {
        Ok(self.kv()?.put(KEY_FIRMWARE, &record.encode())?)
    }
}

/// What a power-on found, before the runtime starts.
#[derive(Debug)]
pub struct PowerOn {
    /// What runs.
    pub firmware: Firmware,
    /// What became of a firmware update requested before this power-on.
    pub outcome: Option<FirmwareOutcome>,
    /// Firmware booted on trial: its probation, which the supervisor's
    /// reports feed.
    pub probation: Option<Probation>,
}

impl<F: NorFlash> Store<F> {
    /// A power-on, before the runtime starts: the bootloader's decision
    /// (swap, revert, fall forward or recovery; a device whose bootloader
    /// holds no keys manages no firmware), the outcome of a firmware update
    /// requested before it, and for firmware on trial a probation of
    /// `probation_ms` from `now_ms` over the enabled containers.
    pub fn power_on(&self, now_ms: u64, probation_ms: u64) -> Result<PowerOn, Error> {
        let firmware = match self.boot_keys()? {
            None => Firmware::Absent,
            Some(_) => Firmware::from_outcome(self.boot()?),
        };
        let outcome = self.settle_firmware(&firmware)?;
        let probation = match &firmware {
            Firmware::Running(record) if record.trial => {
                let table = self.table()?;
                let enabled = table.containers.iter().filter(|c| c.enabled && c.running().is_some());
                let trial = FirmwareTrial::start(enabled.map(|c| c.name.clone()), now_ms, probation_ms);
                Some(Probation { record: *record, trial })
            }
            _ => None,
        };
        Ok(PowerOn { firmware, outcome, probation })
    }
}

/// The probation of firmware booted on trial: a [`FirmwareTrial`], and the
/// boot record its confirm raises the anti-rollback counter to.
#[derive(Clone, Debug)]
pub struct Probation {
    record: BootRecord,
    trial: FirmwareTrial,
}

/// Where a [`Probation`] stands after a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbationStep {
    /// Still watching.
    Pending,
    /// The firmware is confirmed; the outcome of the update that brought it.
    Confirmed(Option<FirmwareOutcome>),
    /// It failed: the device must restart, and the bootloader reverts it.
    Failed(String),
}

impl Probation {
    /// The firmware on trial.
    pub fn record(&self) -> &BootRecord {
        &self.record
    }

    /// Feeds what the supervisor reported (`None`: time passed) and, when
    /// the trial passes, confirms the firmware. A confirm the flash
    /// refuses is an error, and the next step tries it again.
    pub fn step<F: NorFlash>(
        &mut self,
        store: &Store<F>,
        event: Option<&TrialEvent>,
        now_ms: u64,
    ) -> Result<ProbationStep, Error> {
        let verdict = match event {
            Some(e) => self.trial.observe(e),
            None => self.trial.tick(now_ms),
        };
        match verdict {
            Verdict::Pending => Ok(ProbationStep::Pending),
            Verdict::Confirm => Ok(ProbationStep::Confirmed(store.confirm_firmware(&self.record)?)),
            Verdict::Revert(why) => Ok(ProbationStep::Failed(why)),
        }
    }
}

/// How long new firmware is watched before it is confirmed, unless the
/// device is told otherwise (`gantry-device run --firmware-probation`).
pub const DEFAULT_FIRMWARE_PROBATION_MS: u64 = 30_000;

/// The probation of firmware booted on trial, sans IO: fed what the
/// supervisor reports and the time, it decides. New firmware is confirmed
/// when its probation ends with every enabled container started and none
/// given up or reverted meanwhile; a container that gives up or reverts
/// fails it at once. A device without containers confirms at the end.
#[derive(Clone, Debug)]
pub struct FirmwareTrial {
    deadline_ms: u64,
    waiting: BTreeSet<String>,
    failed: Option<String>,
}

/// What a [`FirmwareTrial`] hears from the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrialEvent {
    /// The container's entry point started.
    Started(String),
    /// The container was given up (crash loop, no thread) or reverted.
    Failed {
        /// Container.
        name: String,
        /// Why.
        reason: String,
    },
}

#[cfg(feature = "runtime")]
impl TrialEvent {
    /// What a firmware trial hears of a supervisor report.
    pub fn from_report(r: &crate::supervisor::Report) -> Option<TrialEvent> {
        use crate::supervisor::Report;
        use crate::update::UpdateEvent;
        match r {
            Report::Started { name, .. } => Some(TrialEvent::Started(name.clone())),
            Report::GaveUp { name, reason } | Report::Update(UpdateEvent::Reverted { name, reason, .. }) => {
                Some(TrialEvent::Failed { name: name.clone(), reason: reason.clone() })
            }
            _ => None,
        }
    }
}

impl FirmwareTrial {
    /// A trial from `now_ms` for `probation_ms`, expecting `containers`
    /// (the enabled ones) to start.
    pub fn start(containers: impl IntoIterator<Item = String>, now_ms: u64, probation_ms: u64) -> FirmwareTrial {
        FirmwareTrial {
            deadline_ms: now_ms.saturating_add(probation_ms),
            waiting: containers.into_iter().collect(),
            failed: None,
        }
    }

    /// Something the supervisor reported.
    pub fn observe(&mut self, event: &TrialEvent) -> Verdict {
        match event {
            TrialEvent::Started(name) => {
                self.waiting.remove(name);
            }
            TrialEvent::Failed { name, reason } => {
                self.failed.get_or_insert_with(|| format!("container {name} failed under the new firmware: {reason}"));
            }
        }
        match &self.failed {
            Some(why) => Verdict::Revert(why.clone()),
            None => Verdict::Pending,
        }
    }

    /// Time passes.
    pub fn tick(&self, now_ms: u64) -> Verdict {
        if let Some(why) = &self.failed {
            return Verdict::Revert(why.clone());
        }
        if now_ms < self.deadline_ms {
            return Verdict::Pending;
        }
        match self.waiting.first() {
            None => Verdict::Confirm,
            Some(name) => Verdict::Revert(format!("container {name} did not start within the firmware probation")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(name: &str) -> TrialEvent {
        TrialEvent::Started(name.into())
    }

    #[test]
    fn the_firmware_record_round_trips_and_anything_else_reads_as_empty() {
        let r = FirmwareRecord {
            pending: Some(([3; 32], u64::MAX)),
            failed: Some([4; 32]),
            writing: Some(([5; 32], u64::MAX - 1)),
        };
        assert_eq!(FirmwareRecord::decode(&r.encode()), r);
        let bytes = r.encode();
        for len in 0..bytes.len() {
            assert_eq!(FirmwareRecord::decode(&bytes[..len]), FirmwareRecord::default(), "{len} bytes");
        }
        assert_eq!(FirmwareRecord::decode(&[0xFF; FirmwareRecord::LEN + 1]), FirmwareRecord::default());
        let flags_only = [&[1u8][..], &[0; 40], &[7], &[0; 32], &[9], &[0; 40]].concat();
        let pending_only = FirmwareRecord { pending: Some(([0; 32], 0)), ..FirmwareRecord::default() };
        assert_eq!(FirmwareRecord::decode(&flags_only), pending_only, "a flag other than 1 is none");
    }

    #[test]
    fn confirmed_at_the_end_once_every_container_started() {
        let mut t = FirmwareTrial::start(["a".to_string(), "b".to_string()], 1_000, 30_000);
        assert_eq!(t.observe(&started("a")), Verdict::Pending);
        assert_eq!(t.observe(&started("b")), Verdict::Pending);
        assert_eq!(t.tick(30_999), Verdict::Pending, "not before the probation ends");
        assert_eq!(t.tick(31_000), Verdict::Confirm);
        assert_eq!(FirmwareTrial::start([], 0, 5).tick(5), Verdict::Confirm, "no containers: confirmed at the end");
    }

    #[test]
    fn a_container_that_never_starts_or_fails_reverts_the_firmware() {
        let mut t = FirmwareTrial::start(["a".to_string(), "b".to_string()], 0, 100);
        t.observe(&started("a"));
        assert_eq!(t.tick(100), Verdict::Revert("container b did not start within the firmware probation".into()));

        let mut t = FirmwareTrial::start(["a".to_string()], 0, 100);
        t.observe(&started("a"));
        let failed = TrialEvent::Failed { name: "a".into(), reason: "crash loop".into() };
        let verdict = t.observe(&failed);
        assert_eq!(verdict, Verdict::Revert("container a failed under the new firmware: crash loop".into()));
        assert_eq!(t.observe(&started("a")), verdict, "a failure is not forgotten");
        assert_eq!(t.tick(u64::MAX), verdict);
    }
}
