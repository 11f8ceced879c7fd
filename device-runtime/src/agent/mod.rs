//! The pull agent: enrolls with the update server, polls it with jitter
//! and back-off, and installs what a fresh deployment ticket and the
//! release signatures both allow (DESIGN.md: the ticket is signed by the
//! server's online key, the release by offline keys; one is never enough).
//!
//! The protocol's decisions are a sans-IO state machine
//! (`machine.rs`, its picture in its module doc); [`Agent`]
//! is its driver: it runs each action with the HTTP client (`client`,
//! `fetch`), the device and its store, and feeds the answers back. One
//! [`Agent::cycle`]: log in if needed (a signed challenge) → check in with
//! the inventory and a fresh nonce (304 when nothing changed) → verify the
//! ticket → for each assignment the device does not run yet: fetch the
//! envelope, verify it, check the ticket names exactly its manifest, stream
//! each payload into the standby slot under the signed length and digest
//! (resuming), and install through the update flow (probation, confirm or
//! revert). Every step reports to the server; nothing unverified is written
//! to flash.

mod client;
mod fetch;
mod machine;
mod schedule;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use gantry_keys::{FileKeySource, KeySource, KeyType, SigningKey};
use gantry_protocol::{BootMeasurement, BootSlot, LoginResponse, MAX_INVENTORY, ValidationError};
use gantry_signing::device_auth::LoginProof;
use rand_core::{OsRng, RngCore as _};

pub use fetch::{Caps, FetchError};
pub use gantry_protocol::{InventoryItem, InventoryState, Report, ReportState};
pub use schedule::{Poller, Schedule};

use crate::device::{Device, DeviceError};
use crate::firmware::{Firmware, FirmwareOutcome, FirmwareStaging};
use crate::store::{Identity, Stage, Staging};
use crate::supervisor::unix_now;
use crate::table::{Phase, SlotTable};
use crate::update::UpdateEvent;
use client::Client;
use machine::{Action, Checkin, FIRMWARE_STREAM, FirmwareView, Input, Machine, Now, StoreView};

/// Largest envelope fetched (envelopes are a few KiB; payloads travel apart).
pub const MAX_ENVELOPE: u64 = 64 * 1024;

/// Why a cycle failed. The device keeps running what it ran.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The network or HTTP layer.
    #[error("connection: {0}")]
    Transport(String),
    /// The server refused the device's credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The server refused the request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Another error status.
    #[error("{what}: HTTP {status}: {detail}")]
    Status {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        detail: String,
    },
    /// The server is busy or over this device's rate (`429`, `503`): the
    /// next attempt waits at least `retry_after`, when it said.
    #[error("{what}: HTTP {status} (busy{}): {detail}", retry_hint(.retry_after))]
    Busy {
        /// The call.
        what: String,
        /// HTTP status: 429 or 503.
        status: u16,
        /// The server's `Retry-After` (delta-seconds, at most
        /// [`gantry_protocol::MAX_POLL_AFTER`]), if it sent one that parses.
        retry_after: Option<Duration>,
        /// The server's message.
        detail: String,
    },
    /// The server's answer is malformed.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A request the server would refuse, not sent (`gantry-protocol`'s
    /// `validate()`, the server's own check).
    #[error("not sent, the server would refuse it: {0}")]
    Invalid(#[from] ValidationError),
    /// The ticket was refused (attack or misconfiguration).
    #[error("ticket refused: {0}")]
    Ticket(String),
    /// A verified ticket named a release whose envelope was refused: it
    /// does not verify under the trust root's release role, or it is not
    /// the release the ticket names.
    #[error("release refused: {0}")]
    Release(String),
    /// Local files.
    #[error("{0}")]
    Io(String),
    /// A cycle panicked (a bug): caught, reported, and the loop goes on.
    #[error("the update cycle failed unexpectedly: {0}")]
    Panicked(String),
    /// The device.
    #[error("{0}")]
    Device(#[from] DeviceError),
}

impl AgentError {
    /// How long the server asked the device to wait before it tries again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AgentError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default()
}

/// What the agent needs to know.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Base URL of the update server.
    pub server: String,
    /// A one-time enrollment token, for a device the operator did not
    /// pre-authorize.
    pub enrollment_token: Option<String>,
    /// Poll timing.
    pub schedule: Schedule,
    /// Download limits.
    pub caps: Caps,
    /// Deadline of one API call (login, check-in, report).
    pub call_timeout: Duration,
}

/// Something the agent did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// Logged in (or enrolled).
    LoggedIn {
        /// Whether this was a first enrollment.
        enrolled: bool,
    },
    /// The server has nothing new.
    Unchanged,
    /// A ticket was verified; it names this many assignments.
    Ticket {
        /// Assignments.
        assignments: usize,
    },
    /// An assignment was not installed.
    Skipped {
        /// Stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// An install ran through the update flow.
    Update(UpdateEvent),
    /// The server sent successors of the trust root the device holds.
    TrustRoot {
        /// The version now held, if they were accepted.
        accepted: Option<u64>,
        /// Why not, if they were refused (an attack, or a broken chain).
        refused: Option<String>,
    },
    /// A firmware release was written into DFU, verified and requested:
    /// the device restarts into it.
    FirmwareRequested {
        /// Its sequence number.
        sequence: u64,
    },
    /// A report did not reach the server (the next check-in's inventory
    /// still tells what the device runs).
    ReportFailed {
        /// Stream.
        stream: String,
        /// The state it reported.
        state: ReportState,
        /// Why.
        reason: String,
    },
}

/// What a cycle achieved.
#[derive(Debug, Default)]
pub struct Cycle {
    /// Containers switched to a new version (to be restarted on probation).
    pub switched: Vec<String>,
    /// Firmware was requested: the device must restart (the bootloader
    /// boots it on trial).
    pub restart: bool,
}

/// The agent of one device: the driver of its protocol machine.
pub struct Agent {
    config: AgentConfig,
    client: Client,
    device_id: String,
    /// Who the device is; its vendor and class ids go with every check-in.
    identity: Identity,
    key: FileKeySource,
    machine: Machine,
    next_check_in: Instant,
}

/// The device's own key, created on first use: `STATE/device.key` (0600).
/// The server knows the device by it (pre-authorization or enrollment).
pub fn device_key(state: &Path) -> Result<FileKeySource, AgentError> {
    let path = state.join("device.key");
    if !path.exists() {
        SigningKey::generate(KeyType::P256)
            .write_pkcs8_file(&path)
            .map_err(|e| AgentError::Io(format!("{}: {e}", path.display())))?;
    }
    FileKeySource::open(&path).map_err(|e| AgentError::Io(format!("{}: {e}", path.display())))
}

/// The id the server knows this device by: its 16-byte identity, in hex.
pub fn device_id(device: &Device) -> Result<String, AgentError> {
    Ok(hex::encode(device.store().identity().map_err(DeviceError::from)?.device_id))
}

/// What the device runs, as a check-in reports it: at most the
/// [`MAX_INVENTORY`] entries the server takes (a device with more
/// containers still checks in and gets its updates).
pub fn inventory(table: &SlotTable) -> Vec<InventoryItem> {
    table
        .containers
        .iter()
        .filter_map(|c| {
            let i = c.running()?;
            let state = match (&c.phase, c.enabled) {
                (_, false) => InventoryState::Disabled,
                (Phase::Confirmed, _) => InventoryState::Confirmed,
                (Phase::Probation { .. }, _) => InventoryState::Probation,
                (Phase::Reverted { .. }, _) => InventoryState::Reverted,
            };
            Some(InventoryItem {
                stream: c.name.clone(),
                manifest_digest: hex::encode(i.manifest_digest),
                sequence: i.sequence,
                state: Some(state),
                boot: None,
            })
        })
        .take(MAX_INVENTORY)
        .collect()
}

/// The firmware as a check-in reports it, if firmware runs: what the
/// bootloader measured at this boot.
pub fn firmware_item(firmware: &Firmware) -> Option<InventoryItem> {
    let r = firmware.record()?;
    Some(InventoryItem {
        stream: FIRMWARE_STREAM.into(),
        manifest_digest: hex::encode(r.manifest_digest),
        sequence: r.sequence,
        state: Some(if r.trial { InventoryState::Probation } else { InventoryState::Confirmed }),
        boot: Some(BootMeasurement {
            image_digest: hex::encode(r.image_digest),
            image_size: r.image_size.into(),
            boot_count: r.boot_count.into(),
            slot: match r.slot {
                gantry_boot::Slot::A => BootSlot::A,
                gantry_boot::Slot::B => BootSlot::B,
            },
            trial_boots: r.trial_boots.into(),
            security_counter: r.security_counter,
            last_failure: r.last_failure.map(|f| f.code().to_owned()),
        }),
    })
}

fn store_error(e: crate::store::Error) -> AgentError {
    DeviceError::from(e).into()
}

fn now() -> Now {
    Now { at: Instant::now(), unix: unix_now() }
}

impl Agent {
    /// An agent for the device in `state`.
    pub fn new(config: AgentConfig, device: &Device, state: &Path) -> Result<Agent, AgentError> {
        let client = Client::new(&config.server, config.call_timeout)?;
        // Payloads once waited in files here; they now stream into flash.
        let _ = std::fs::remove_dir_all(state.join("downloads"));
        let identity = device.store().identity().map_err(store_error)?;
        let device_id = hex::encode(identity.device_id);
        let machine = Machine::new(device_id.clone(), config.enrollment_token.clone(), config.schedule);
        let key = device_key(state)?;
        Ok(Agent { client, device_id, identity, key, machine, next_check_in: Instant::now(), config })
    }

    /// The device's id on the server.
    pub fn id(&self) -> &str {
        &self.device_id
    }

    /// The device's public key as SPKI PEM (what an operator pre-authorizes).
    pub fn public_key_pem(&self) -> String {
        self.key.public_key().to_spki_pem()
    }

    /// When the agent wants to check in next: the server's interval after a
    /// cycle that worked, a back-off with jitter after one that failed, at
    /// once after a supervisor outcome was reported.
    pub fn next_check_in(&self) -> Instant {
        self.next_check_in
    }

    /// One poll: check in and install what the ticket assigns. After a
    /// failure the connections are dropped, so a broken or hostile one is
    /// not reused.
    pub fn cycle(&mut self, device: &Device, events: &mut dyn FnMut(AgentEvent)) -> Result<Cycle, AgentError> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        self.drive(device, Input::Wake { nonce, jitter: OsRng.next_u64() }, events)
    }

    /// Ends a cycle that panicked (a bug, caught by the caller): it fails
    /// with [`AgentError::Panicked`] and the agent backs off.
    pub fn panicked(&mut self, device: &Device, why: String) -> Result<Cycle, AgentError> {
        self.drive(device, Input::Panicked(why), &mut |_| {})
    }

    /// Reports an update outcome the supervisor reached (confirm, revert)
    /// and brings the next check-in forward. A report that does not get
    /// through is told at the start of the next cycle
    /// ([`AgentEvent::ReportFailed`]).
    pub fn report_event(&mut self, device: &Device, event: &UpdateEvent) {
        let (UpdateEvent::Confirmed { name, .. } | UpdateEvent::Reverted { name, .. }) = event else { return };
        let container = device.store().table().map(|t| t.get(name).cloned()).map_err(store_error);
        let _ = self.drive(device, Input::Outcome { event: event.clone(), container }, &mut |_| {});
    }

    /// Reports what became of a firmware update (confirmed, or reverted
    /// and why) and brings the next check-in forward.
    pub fn report_firmware(&mut self, device: &Device, outcome: &FirmwareOutcome) {
        let _ = self.drive(device, Input::FirmwareOutcome(outcome.clone()), &mut |_| {});
    }

    /// Runs the machine from `input` until it asks nothing more. An
    /// action's answer is handled before the actions queued after it, so
    /// they run in the order the machine decided them.
    fn drive(
        &mut self,
        device: &Device,
        input: Input,
        events: &mut dyn FnMut(AgentEvent),
    ) -> Result<Cycle, AgentError> {
        let mut run = Run { events, cycle: Cycle::default(), failed: None, staging: None, firmware: None };
        let mut todo = VecDeque::from(self.machine.handle(now(), input));
        while let Some(action) = todo.pop_front() {
            if let Some(answer) = self.execute(device, &mut run, action) {
                for next in self.machine.handle(now(), answer).into_iter().rev() {
                    todo.push_front(next);
                }
            }
        }
        run.failed.map_or(Ok(run.cycle), Err)
    }

    /// Runs one action; the answer, if it asked for one.
    fn execute(&mut self, device: &Device, run: &mut Run<'_>, action: Action) -> Option<Input> {
        let store = || device.store();
        Some(match action {
            Action::Login => Input::LoggedIn(self.login(None)),
            Action::Enroll(token) => Input::Enrolled(self.login(Some(&token))),
            Action::CheckIn { token, nonce, etag } => {
                Input::CheckedIn(self.check_in(device, &token, &nonce, etag.as_deref()))
            }
            Action::RotateTrustRoot(chain) => {
                Input::TrustRootRotated(device.rotate_trust_root(&chain, unix_now()).map_err(|e| e.to_string()))
            }
            Action::ReadStore => Input::StoreRead(read_store(device).map_err(store_error)),
            Action::AcceptTicket(issued_at) => {
                Input::TicketAccepted(store().accept_ticket(issued_at).map_err(store_error))
            }
            Action::FetchEnvelope { sha256, size } => Input::EnvelopeFetched(
                fetch::fetch_small(&self.client, &sha256, size, &self.config.caps).map_err(fetch),
            ),
            Action::Stage(envelope) => Input::Staged(match device.stage(&envelope, unix_now()) {
                Ok(Stage::Writing(s)) => {
                    run.staging = Some(s);
                    Ok(None)
                }
                Ok(Stage::Refused(event)) => Ok(Some(event)),
                Err(e) => Err(e.into()),
            }),
            Action::Download => Input::Downloaded(match (&mut run.staging, &mut run.firmware) {
                (Some(s), _) => self.download(device, s),
                (None, Some(f)) => self.download_firmware(device, f),
                (None, None) => Err(AgentError::Io("no install under way to download".into())),
            }),
            Action::Finish => Input::Installed(match run.staging.take() {
                Some(s) => device.finish(s, unix_now()).map_err(Into::into),
                None => Err(AgentError::Io("no install under way to finish".into())),
            }),
            Action::StageFirmware(envelope) => {
                Input::Staged(device.store().stage_firmware(&envelope, unix_now()).map_err(store_error).map(|s| {
                    run.firmware = Some(s);
                    None
                }))
            }
            Action::FinishFirmware => Input::FirmwareRequested(match run.firmware.take() {
                Some(s) => device.store().finish_firmware(s).map(|m| m.sequence).map_err(store_error),
                None => Err(AgentError::Io("no firmware install under way to finish".into())),
            }),
            Action::Restart => {
                run.cycle.restart = true;
                return None;
            }
            Action::Report { token, report } => {
                let error = self.client.report(&token, &report).err()?;
                Input::ReportFailed { report, error }
            }
            Action::Emit(e) => {
                (run.events)(e);
                return None;
            }
            Action::Reload(name) => {
                run.cycle.switched.push(name);
                return None;
            }
            Action::Sleep(wait) => {
                self.next_check_in = Instant::now() + wait;
                return None;
            }
            Action::Failed(e) => {
                // A broken or hostile connection is not reused.
                if let Ok(fresh) = Client::new(&self.config.server, self.config.call_timeout) {
                    self.client = fresh;
                }
                run.failed = Some(e);
                return None;
            }
        })
    }

    /// A check-in with what the device runs and the trust root it holds.
    fn check_in(&self, device: &Device, token: &str, nonce: &[u8], etag: Option<&str>) -> Result<Checkin, AgentError> {
        let table = device.store().table().map_err(store_error)?;
        let held = device.store().trust_root().map_err(store_error)?.root().version;
        let mut items = inventory(&table);
        if let Some(item) = firmware_item(&device.firmware()) {
            items.truncate(MAX_INVENTORY - 1);
            items.insert(0, item);
        }
        self.client.checkin(token, &self.identity, nonce, &items, held, etag)
    }

    /// A token: a signed challenge, for a login or (with an enrollment
    /// token) an enrollment.
    fn login(&self, enrollment_token: Option<&str>) -> Result<LoginResponse, AgentError> {
        let challenge = self.client.challenge(&self.device_id)?;
        let proof =
            LoginProof { device_id: self.device_id.clone(), challenge: challenge.clone(), timestamp: unix_now() };
        let proof = proof.sign(&self.key).map_err(|e| AgentError::Config(format!("signing the login proof: {e}")))?;
        match enrollment_token {
            None => self.client.login(&self.device_id, &challenge, &proof),
            Some(t) => self.client.enroll(&self.device_id, &self.public_key_pem(), t, &challenge, &proof),
        }
    }

    /// Streams a firmware image into DFU from where DFU stands (a resumed
    /// download starts mid-way); what came of a cut one is kept.
    fn download_firmware(&self, device: &Device, staging: &mut FirmwareStaging) -> Result<(), AgentError> {
        let (sha256, len, at) = (staging.image_sha256, staging.image_size, staging.position());
        let mut sink = |bytes: &[u8]| Ok(device.store().firmware_write(staging, bytes).map_err(DeviceError::from)?);
        match fetch::stream(&self.client, &sha256, at, len, &self.config.caps, &mut sink) {
            Ok(()) => Ok(()),
            Err(e @ FetchError::Sink(_)) => Err(fetch(e)),
            Err(e) => {
                let _ = device.store().checkpoint_firmware(staging);
                Err(fetch(e))
            }
        }
    }

    /// Streams each payload of the staged release into its slot, from
    /// where the slot stands (a resumed install starts mid-way).
    fn download(&self, device: &Device, staging: &mut Staging) -> Result<(), AgentError> {
        while let Some((i, at)) = staging.position() {
            let p = &staging.release().payloads[i];
            let (sha256, len) = (p.sha256, p.len);
            let mut sink = |bytes: &[u8]| Ok(device.stage_write(staging, bytes)?);
            match fetch::stream(&self.client, &sha256, at, len, &self.config.caps, &mut sink) {
                Ok(()) => {}
                // The slot refused the bytes: the store gave the install up.
                Err(e @ FetchError::Sink(_)) => return Err(fetch(e)),
                // The connection failed: what came is kept for the next
                // cycle, which resumes with a Range request.
                Err(e) => {
                    let _ = device.checkpoint(staging);
                    return Err(fetch(e));
                }
            }
        }
        Ok(())
    }
}

/// What one [`Agent::drive`] collects: the events go to the caller, the
/// install under way stays in the driver between its steps.
struct Run<'e> {
    events: &'e mut dyn FnMut(AgentEvent),
    cycle: Cycle,
    failed: Option<AgentError>,
    staging: Option<Box<Staging>>,
    firmware: Option<FirmwareStaging>,
}

/// What a ticket and its releases are checked against, as of now.
fn read_store(device: &Device) -> Result<StoreView, crate::store::Error> {
    let store = device.store();
    let now = unix_now();
    let (server_keys, server_threshold) = store.server_keys(now)?;
    Ok(StoreView {
        server_keys,
        server_threshold,
        last_ticket: store.last_ticket()?,
        release_trust: store.trust(now)?,
        table: store.table()?,
        firmware: match store.boot_keys()? {
            None => None,
            Some(_) => Some(FirmwareView {
                running: device.firmware().record().map(|r| (r.manifest_digest, r.sequence)),
                failed: store.failed_firmware()?,
                security_counter: store.boot_state()?.1.security_counter,
            }),
        },
    })
}

fn fetch(e: FetchError) -> AgentError {
    match e {
        FetchError::Sink(e) => AgentError::Device(e),
        FetchError::Busy { status, retry_after } => {
            AgentError::Busy { what: "download".into(), status, retry_after, detail: "try again later".into() }
        }
        e => AgentError::Transport(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Container, Installed};
    use gantry_boot::Slot;

    fn container(phase: Phase, running: u64) -> Container {
        let inst = Installed { manifest_digest: [running as u8; 32], sequence: running, version: running.to_string() };
        Container {
            name: "app".into(),
            pair: 0,
            active: Slot::A,
            phase,
            slots: [Some(inst), None],
            counter: running,
            enabled: true,
        }
    }

    #[test]
    fn the_inventory_names_each_state_and_fits_the_server() {
        let mut disabled = container(Phase::Confirmed, 1);
        disabled.enabled = false;
        let table = SlotTable {
            containers: vec![
                container(Phase::Confirmed, 1),
                container(Phase::Probation { restarts: 0 }, 1),
                container(Phase::Reverted { reason: "crash".into() }, 1),
                disabled,
            ],
        };
        let states: Vec<_> = inventory(&table).into_iter().map(|i| i.state).collect();
        let expected =
            [InventoryState::Confirmed, InventoryState::Probation, InventoryState::Reverted, InventoryState::Disabled];
        assert_eq!(states, expected.map(Some));
    }
}
