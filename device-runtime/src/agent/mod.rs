//! The pull agent: enrolls with the update server, polls it with jitter
//! and back-off, and installs what a fresh deployment ticket and the
//! release signatures both allow (DESIGN.md: the ticket is signed by the
//! server's online key, the release by offline keys; one is never enough).
//!
//! One [`Agent::cycle`]: log in if needed (a signed challenge) → check in
//! with the inventory and a fresh nonce (304 when nothing changed) → verify
//! the ticket (server key of the provisioned trust root, this device, this
//! nonce, not expired, not older than the last one) → for each assignment
//! the device does not run yet: fetch the envelope by its digest, verify it
//! against the trust root, check the ticket names exactly its manifest,
//! fetch each payload under the signed length and digest (resuming), and
//! install through the update flow (probation, confirm or revert). Every
//! step reports to the server; nothing unverified is written to flash.

mod client;
mod fetch;
mod schedule;

use std::path::Path;
use std::time::{Duration, Instant};

use gantry_keys::{FileKeySource, KeySource, KeyType, SigningKey};
use gantry_protocol::{LoginResponse, MAX_INVENTORY, ValidationError};
use gantry_signing::device_auth::LoginProof;
use gantry_signing::ticket::{Assignment, TicketPolicy, verify_ticket};
use rand_core::{OsRng, RngCore as _};

pub use fetch::{Caps, FetchError};
pub use gantry_protocol::{InventoryItem, InventoryState, Report, ReportState};
pub use schedule::{Poller, Schedule};

use crate::bundle;
use crate::device::{Device, DeviceError};
use crate::store::Stage;
use crate::supervisor::unix_now;
use crate::table::{Container, Phase, SlotTable};
use crate::update::UpdateEvent;
use client::{Checkin, Client};

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
    /// Seconds the server asked to wait.
    pub poll_after: Option<u64>,
}

/// The agent of one device.
pub struct Agent {
    config: AgentConfig,
    client: Client,
    device_id: String,
    key: FileKeySource,
    token: Option<(String, Instant)>,
    etag: Option<String>,
    /// Reports that failed where no event callback was at hand; told at
    /// the end of the next cycle.
    report_failures: Vec<AgentEvent>,
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

/// A SHA-256 digest from the server's hex (either case), if it is one.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
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
            })
        })
        .take(MAX_INVENTORY)
        .collect()
}

/// The report the agent sends: its detail cut to what the server takes.
fn report_body(stream: &str, digest: &[u8; 32], state: ReportState, detail: Option<&str>) -> Report {
    let report = Report::new(stream, hex::encode(digest), state);
    match detail {
        Some(d) => report.with_detail(d),
        None => report,
    }
}

/// When a token from `login` must be renewed. Its lifetime is a number
/// from the network: clamped (`MAX_TOKEN_TTL`), it cannot overflow the clock.
fn token_deadline(now: Instant, login: &LoginResponse) -> Instant {
    now.checked_add(login.expires_in_clamped()).unwrap_or(now)
}

/// Whether an assignment needs an install, or why not.
fn wanted(c: Option<&Container>, a: &Assignment<'_>) -> Result<bool, String> {
    let Some(c) = c else { return Ok(true) };
    if c.running().is_some_and(|i| i.manifest_digest == a.manifest_digest) {
        return Ok(false);
    }
    if matches!(c.phase, Phase::Reverted { .. }) && c.standby().is_some_and(|i| i.manifest_digest == a.manifest_digest)
    {
        return Err("this release was reverted on this device".into());
    }
    match c.running() {
        Some(i) if i.sequence >= a.sequence => {
            Err(format!("sequence {} is not above the installed {} (rollback refused)", a.sequence, i.sequence))
        }
        _ => Ok(true),
    }
}

impl Agent {
    /// An agent for the device in `state`.
    pub fn new(config: AgentConfig, device: &Device, state: &Path) -> Result<Agent, AgentError> {
        let client = Client::new(&config.server, config.call_timeout)?;
        // Payloads once waited in files here; they now stream into flash.
        let _ = std::fs::remove_dir_all(state.join("downloads"));
        Ok(Agent {
            client,
            device_id: device_id(device)?,
            key: device_key(state)?,
            token: None,
            etag: None,
            report_failures: Vec::new(),
            config,
        })
    }

    /// Its poll timing rules.
    pub fn schedule(&self) -> Schedule {
        self.config.schedule
    }

    /// The device's id on the server.
    pub fn id(&self) -> &str {
        &self.device_id
    }

    /// The device's public key as SPKI PEM (what an operator pre-authorizes).
    pub fn public_key_pem(&self) -> String {
        self.key.public_key().to_spki_pem()
    }

    fn proof(&self, challenge: &[u8]) -> Result<Vec<u8>, AgentError> {
        let proof =
            LoginProof { device_id: self.device_id.clone(), challenge: challenge.to_vec(), timestamp: unix_now() };
        proof.sign(&self.key).map_err(|e| AgentError::Config(format!("signing the login proof: {e}")))
    }

    /// A valid bearer token: logs in (or enrolls) when there is none.
    fn session(&mut self, events: &mut dyn FnMut(AgentEvent)) -> Result<String, AgentError> {
        if let Some((t, until)) = &self.token
            && Instant::now() + Duration::from_secs(10) < *until
        {
            return Ok(t.clone());
        }
        let challenge = self.client.challenge(&self.device_id)?;
        let proof = self.proof(&challenge)?;
        let (login, enrolled) = match self.client.login(&self.device_id, &challenge, &proof) {
            Ok(l) => (l, false),
            Err(AgentError::Unauthorized(why)) => {
                let Some(token) = self.config.enrollment_token.clone() else {
                    return Err(AgentError::Unauthorized(format!(
                        "{why}; pre-authorize device {} with its key, or give an enrollment token",
                        self.device_id
                    )));
                };
                let challenge = self.client.challenge(&self.device_id)?;
                let proof = self.proof(&challenge)?;
                (self.client.enroll(&self.device_id, &self.public_key_pem(), &token, &challenge, &proof)?, true)
            }
            Err(e) => return Err(e),
        };
        events(AgentEvent::LoggedIn { enrolled });
        self.token = Some((login.token.clone(), token_deadline(Instant::now(), &login)));
        Ok(login.token)
    }

    /// Sends a report. Reports are best effort (the next check-in's
    /// inventory says the same), but one that does not get through is not
    /// dropped in silence: it becomes an [`AgentEvent::ReportFailed`] at
    /// the end of the cycle.
    fn report(&mut self, token: &str, stream: &str, digest: &[u8; 32], state: ReportState, detail: Option<String>) {
        let r = report_body(stream, digest, state, detail.as_deref());
        if let Err(e) = self.client.report(token, &r) {
            self.report_failed(stream, state, &e);
        }
    }

    fn report_failed(&mut self, stream: &str, state: ReportState, e: &AgentError) {
        let failure = AgentEvent::ReportFailed { stream: stream.to_owned(), state, reason: e.to_string() };
        self.report_failures.push(failure);
    }

    /// Reports an update outcome the supervisor reached (confirm, revert).
    /// A report that does not get through is told at the end of the next
    /// cycle ([`AgentEvent::ReportFailed`]).
    pub fn report_event(&mut self, device: &Device, event: &UpdateEvent) {
        let (name, state, detail) = match event {
            UpdateEvent::Confirmed { name, .. } => (name, ReportState::Installed, None),
            UpdateEvent::Reverted { name, reason, .. } => (name, ReportState::Reverted, Some(reason.clone())),
            _ => return,
        };
        let table = match device.store().table() {
            Ok(t) => t,
            Err(e) => return self.report_failed(name, state, &DeviceError::from(e).into()),
        };
        let digest = match event {
            UpdateEvent::Reverted { .. } => table.get(name).and_then(|c| c.standby()).map(|i| i.manifest_digest),
            _ => table.get(name).and_then(|c| c.running()).map(|i| i.manifest_digest),
        };
        // Nothing to report on a container that is gone.
        let Some(d) = digest else { return };
        let mut ignore = |_| {};
        match self.session(&mut ignore) {
            Ok(token) => self.report(&token, name, &d, state, detail),
            Err(e) => self.report_failed(name, state, &e),
        }
    }

    /// One poll: check in and install what the ticket assigns. After a
    /// failure the connections are dropped, so a broken or hostile one is
    /// not reused.
    pub fn cycle(&mut self, device: &Device, events: &mut dyn FnMut(AgentEvent)) -> Result<Cycle, AgentError> {
        let result = self.check_in(device, events);
        for failure in self.report_failures.drain(..) {
            events(failure);
        }
        if result.is_err() {
            self.client = Client::new(&self.config.server, self.config.call_timeout)?;
        }
        result
    }

    fn check_in(&mut self, device: &Device, events: &mut dyn FnMut(AgentEvent)) -> Result<Cycle, AgentError> {
        let token = self.session(events)?;
        let table = device.store().table().map_err(DeviceError::from)?;
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let held = device.store().trust_root().map_err(DeviceError::from)?.root().version;
        let answer = match self.client.checkin(&token, &nonce, &inventory(&table), held, self.etag.as_deref()) {
            Err(e @ AgentError::Unauthorized(_)) => {
                self.token = None;
                return Err(e);
            }
            other => other?,
        };
        let response = match answer {
            Checkin::Unchanged { poll_after } => {
                events(AgentEvent::Unchanged);
                return Ok(Cycle { switched: Vec::new(), poll_after });
            }
            Checkin::Changed(r) => r,
        };
        // Before the ticket: a device whose root expired (or was rotated
        // away from the server's key) catches up first. Each successor is
        // checked against the root held; a refusal changes nothing.
        if !response.trust_roots.is_empty() {
            events(self.rotate_trust_root(device, &response.trust_roots));
        }
        let ticket_bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &response.ticket)
            .map_err(|_| AgentError::Protocol("ticket: not base64".into()))?;
        let now = unix_now();
        let (server_keys, threshold) = device.store().server_keys(now).map_err(DeviceError::from)?;
        let last = device.store().last_ticket().map_err(DeviceError::from)?;
        let policy = TicketPolicy {
            server_keys: &server_keys,
            server_threshold: threshold,
            device_id: &self.device_id,
            nonce: &nonce,
            now: Some(now),
            last_issued_at: last,
        };
        let ticket =
            verify_ticket(&ticket_bytes, &policy).map_err(|e| AgentError::Ticket(format!("{e} ({})", e.code())))?;
        // Remembered as of this device's clock at the latest: a ticket dated
        // ahead (one signed with a stolen server key, say) would otherwise
        // make every later genuine ticket "stale", a freeze that outlives
        // the attack. Replays are refused by the nonce in any case.
        device.store().accept_ticket(ticket.issued_at().min(now)).map_err(DeviceError::from)?;
        events(AgentEvent::Ticket { assignments: ticket.contents().assignment_count() });

        let mut cycle = Cycle { switched: Vec::new(), poll_after: Some(response.poll_after_clamped()) };
        let mut all_done = true;
        for a in ticket.assignments() {
            let skip = |reason: String| AgentEvent::Skipped { stream: a.stream.to_owned(), reason };
            if a.stream.as_bytes() == gantry_signing::FIRMWARE_COMPONENT {
                events(skip("firmware updates are installed through the bootloader, not by this agent yet".into()));
                continue;
            }
            let table = device.store().table().map_err(DeviceError::from)?;
            match wanted(table.get(a.stream), &a) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(reason) => {
                    self.report(&token, a.stream, &a.manifest_digest, ReportState::Failed, Some(reason.clone()));
                    events(skip(reason));
                    continue;
                }
            }
            let size = response
                .assignments
                .iter()
                .find(|v| v.stream == a.stream && unhex32(&v.envelope.sha256) == Some(a.envelope_sha256))
                .map(|v| v.envelope.size);
            match self.apply(device, &token, &a, size) {
                Ok(event) => {
                    if let UpdateEvent::Switched { name, .. } = &event {
                        cycle.switched.push(name.clone());
                    }
                    events(AgentEvent::Update(event));
                }
                Err(e) => {
                    all_done = false;
                    self.report(&token, a.stream, &a.manifest_digest, ReportState::Failed, Some(e.to_string()));
                    events(skip(e.to_string()));
                }
            }
        }
        // Only a fully handled state is acknowledged: after a failure the
        // next check-in gets a fresh ticket and tries again.
        self.etag = if all_done { Some(response.etag) } else { None };
        Ok(cycle)
    }

    fn rotate_trust_root(&self, device: &Device, chain: &[String]) -> AgentEvent {
        let decoded: Result<Vec<Vec<u8>>, _> = chain
            .iter()
            .take(gantry_protocol::MAX_TRUST_ROOTS)
            .map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b))
            .collect();
        let result = match decoded {
            Err(_) => Err("a trust root is not base64".to_owned()),
            Ok(chain) => device.store().rotate_trust_root(&chain, unix_now()).map_err(|e| e.to_string()),
        };
        match result {
            Ok(accepted) => AgentEvent::TrustRoot { accepted, refused: None },
            Err(why) => AgentEvent::TrustRoot { accepted: None, refused: Some(why) },
        }
    }

    /// Fetches, verifies and installs one assignment.
    fn apply(
        &mut self,
        device: &Device,
        token: &str,
        a: &Assignment<'_>,
        envelope_size: Option<u64>,
    ) -> Result<UpdateEvent, AgentError> {
        // The unsigned listing only says how big the envelope is; the ticket
        // names which one counts.
        let size = envelope_size.ok_or_else(|| {
            AgentError::Protocol(format!("{}: the check-in does not list the envelope the ticket names", a.stream))
        })?;
        if size > MAX_ENVELOPE {
            return Err(AgentError::Protocol(format!("{}: envelope of {size} bytes, above {MAX_ENVELOPE}", a.stream)));
        }
        let caps = self.config.caps;
        let envelope = fetch::fetch_small(&self.client, &a.envelope_sha256, size, &caps).map_err(fetch)?;
        let trust = device.store().trust(unix_now()).map_err(DeviceError::from)?;
        let release = bundle::verify_envelope(&envelope, &trust, 0)
            .map_err(|e| AgentError::Release(format!("{}: the envelope does not verify: {e}", a.stream)))?;
        if release.manifest_digest != a.manifest_digest || release.config.name != a.stream {
            return Err(AgentError::Release(format!(
                "{}: the envelope is not the release the ticket names (mix-and-match refused)",
                a.stream
            )));
        }
        // Sizes first: `stage` refuses a release that does not fit a slot
        // before a byte of its payloads is downloaded, and resumes one the
        // device was writing when it stopped.
        let mut staging = match device.stage(&envelope, unix_now())? {
            Stage::Writing(s) => s,
            Stage::Refused(event) => return Ok(self.refused(token, a, event)),
        };
        self.report(token, a.stream, &a.manifest_digest, ReportState::Downloading, None);
        while let Some((i, at)) = staging.position() {
            let p = &staging.release().payloads[i];
            let (sha256, len) = (p.sha256, p.len);
            let mut sink = |bytes: &[u8]| Ok(device.stage_write(&mut staging, bytes)?);
            fetch::stream(&self.client, &sha256, at, len, &caps, &mut sink).map_err(fetch)?;
        }
        self.report(token, a.stream, &a.manifest_digest, ReportState::Installing, None);
        let event = device.finish(staging, unix_now())?;
        Ok(self.refused(token, a, event))
    }

    /// Reports a refusal (and hands on any event).
    fn refused(&mut self, token: &str, a: &Assignment<'_>, event: UpdateEvent) -> UpdateEvent {
        if let UpdateEvent::Refused { reason, .. } = &event {
            self.report(token, a.stream, &a.manifest_digest, ReportState::Failed, Some(reason.to_string()));
        }
        event
    }
}

fn fetch(e: FetchError) -> AgentError {
    match e {
        FetchError::Sink(e) => AgentError::Device(e),
        e => AgentError::Transport(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Installed;
    use gantry_boot::Slot;

    fn container(phase: Phase, running: u64, standby: Option<u64>) -> Container {
        let inst = |s: u64| Installed { manifest_digest: [s as u8; 32], sequence: s, version: s.to_string() };
        Container {
            name: "app".into(),
            pair: 0,
            active: Slot::A,
            phase,
            slots: [Some(inst(running)), standby.map(inst)],
            counter: running,
            enabled: true,
        }
    }

    fn assignment(seq: u64) -> Assignment<'static> {
        Assignment { stream: "app", manifest_digest: [seq as u8; 32], sequence: seq, envelope_sha256: [0; 32] }
    }

    #[test]
    fn what_needs_an_install() {
        assert_eq!(wanted(None, &assignment(1)), Ok(true));
        let c = container(Phase::Confirmed, 2, Some(1));
        assert_eq!(wanted(Some(&c), &assignment(2)), Ok(false), "already runs it");
        assert_eq!(wanted(Some(&c), &assignment(3)), Ok(true));
        assert!(wanted(Some(&c), &assignment(1)).unwrap_err().contains("rollback"));
        let reverted = container(Phase::Reverted { reason: "crash".into() }, 1, Some(2));
        assert!(wanted(Some(&reverted), &assignment(2)).unwrap_err().contains("reverted"));
        assert_eq!(wanted(Some(&reverted), &assignment(3)), Ok(true), "a newer fix is welcome");
    }

    #[test]
    fn a_token_lifetime_from_the_network_cannot_overflow_the_clock() {
        let now = Instant::now();
        let login = LoginResponse { device_id: "d".into(), token: "t".into(), expires_in: u64::MAX };
        let until = token_deadline(now, &login);
        assert_eq!(until - now, Duration::from_secs(gantry_protocol::MAX_TOKEN_TTL));
        let short = LoginResponse { expires_in: 900, ..login };
        assert_eq!(token_deadline(now, &short) - now, Duration::from_secs(900));
    }

    #[test]
    fn the_longest_report_detail_is_one_the_server_takes() {
        // 5,000 characters of 1 to 4 bytes, as a revert reason might carry.
        let reason: String = "e\u{e9}\u{20ac}\u{1f600}".repeat(1250);
        let r = report_body("app", &[7; 32], ReportState::Reverted, Some(&reason));
        assert!(r.detail().unwrap().len() <= gantry_protocol::MAX_DETAIL);
        // The server's check (update-server/src/api/device.rs) is this one.
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(serde_json::to_value(&r).unwrap()["state"], "reverted");
    }

    #[test]
    fn the_inventory_names_each_state_and_fits_the_server() {
        let mut disabled = container(Phase::Confirmed, 1, None);
        disabled.enabled = false;
        let table = SlotTable {
            containers: vec![
                container(Phase::Confirmed, 1, None),
                container(Phase::Probation { restarts: 0 }, 1, None),
                container(Phase::Reverted { reason: "crash".into() }, 1, None),
                disabled,
            ],
        };
        let states: Vec<_> = inventory(&table).into_iter().map(|i| i.state).collect();
        let expected =
            [InventoryState::Confirmed, InventoryState::Probation, InventoryState::Reverted, InventoryState::Disabled];
        assert_eq!(states, expected.map(Some));
    }

    #[test]
    fn hex_round_trip() {
        let d = [0xabu8; 32];
        assert_eq!(unhex32(&hex::encode(d)), Some(d));
        assert_eq!(unhex32(&hex::encode_upper(d)), Some(d));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}
