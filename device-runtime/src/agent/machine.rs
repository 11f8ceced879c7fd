//! The pull protocol, sans IO: every decision of the agent (when to log in,
//! what a check-in answer means, whether a ticket and a release may be
//! installed, what to report, how long to wait) as a state machine fed
//! with [`Input`]s, the answers of the world, and returning [`Action`]s,
//! what to do next. It opens no socket, reads no flash and no clock: the
//! driver ([`super::Agent`]) does that and passes the time in ([`Now`]) and
//! the randomness ([`Input::Wake`]), so every rule is tested without a
//! network and with a clock the test turns.
//!
//! Each action that asks something (login, check-in, a store read, a
//! download, an install step) is answered by exactly one input; reports,
//! events, reloads and sleeps are answered by nothing (a report that does
//! not get through comes back as [`Input::ReportFailed`]).
//!
//! ```text
//!  Wake ─► token fresh? ──no──► Login ─► (401 and an enrollment token) Enroll
//!            │ yes                 │ ok
//!            ▼                     ▼
//!          CheckIn{nonce, etag} ◄──┘
//!            │ 304: Emit(Unchanged), Sleep(poll_after)
//!            │ 401: drop the token ─────────────────────────► Failed, Sleep(back-off)
//!            ▼ 200
//!          RotateTrustRoot(chain)   (only if the server sent successors)
//!            ▼
//!          ReadStore ─► verify the ticket: server keys, this device,
//!            │          this nonce, unexpired, not older than the last ─► Failed
//!            ▼
//!          AcceptTicket(min(issued_at, now))
//!            ▼
//!  ┌──► next assignment (containers first, the firmware last): already
//!  │      │  runs ─► skip;  rollback, reverted here ─► Report(failed), skip
//!  │      ▼
//!  │    FetchEnvelope ─► verify, the ticket's release? ─► Stage ─► Report(downloading),
//!  │      Download ─► Report(installing), Finish ─► Reload (switched)
//!  │      firmware: StageFirmware … FinishFirmware ─► Restart (the cycle ends;
//!  │      the state is not acknowledged)
//!  │      any failure: Report(failed), Skipped, the ETag is not acknowledged
//!  └──────┘  none left: remember the ETag if all were handled, Sleep(poll_after)
//! ```
//!
//! A firmware outcome ([`Input::FirmwareOutcome`], learned at the power-on
//! after the restart or at the confirm) is reported like a container's.
//!
//! Between cycles, a supervisor outcome ([`Input::Outcome`]) becomes a
//! report (logging in first if the token is stale) and a `Sleep(0)`: the
//! next check-in comes at once and carries the new inventory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_keys::PublicKey;
use gantry_protocol::{CheckinResponse, LoginResponse, MAX_TRUST_ROOTS, Report, ReportState};
use gantry_signing::ticket::{TicketError, TicketPolicy, VerifiedTicket, verify_ticket};

use super::{AgentError, AgentEvent, MAX_ENVELOPE, Poller, Schedule};
use crate::bundle::{self, BundleError, Trust};
use crate::firmware::FirmwareOutcome;
use crate::table::{Container, Phase, SlotTable};
use crate::update::UpdateEvent;
pub(crate) use gantry_protocol::FIRMWARE_STREAM;

/// A token is renewed this long before the server said it expires, so it
/// does not expire in the middle of a cycle's first call.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// The time as the driver read it: a monotonic instant for the token's
/// lifetime, the wall clock (Unix seconds) for signed times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    /// For durations.
    pub(crate) at: Instant,
    /// For tickets.
    pub(crate) unix: u64,
}

/// What a check-in answered.
#[derive(Debug)]
pub(crate) enum Checkin {
    /// Nothing changed since the ETag sent (`304`), with the server's
    /// `poll_after`, already clamped by `parse_poll_after`.
    Unchanged { poll_after: Option<u64> },
    /// A new desired state, with its ticket (the unsigned part only says
    /// where to fetch; the ticket decides what may be installed).
    Changed(CheckinResponse),
}

/// What the store holds that a ticket and its releases are checked
/// against, read after any trust-root rotation.
pub(crate) struct StoreView {
    /// The trust root's `server` keys (the root has not expired).
    pub(crate) server_keys: Vec<PublicKey>,
    /// How many of them must sign a ticket.
    pub(crate) server_threshold: u32,
    /// Issue time of the last ticket accepted.
    pub(crate) last_ticket: Option<u64>,
    /// The trust root's `release` role and this device's identity.
    pub(crate) release_trust: Trust,
    /// The slot table: what runs, what was reverted.
    pub(crate) table: SlotTable,
    /// The device's firmware, if it manages any.
    pub(crate) firmware: Option<FirmwareView>,
}

/// What the device's firmware is, as an assignment is checked against it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FirmwareView {
    /// The image that runs: manifest digest and sequence.
    pub(crate) running: Option<([u8; 32], u64)>,
    /// The last release that did not take here.
    pub(crate) failed: Option<[u8; 32]>,
    /// The bootloader's anti-rollback counter: a release must be above it.
    pub(crate) security_counter: u64,
}

/// What the world tells the machine.
pub(crate) enum Input {
    /// Time to check in, with the randomness this cycle may need (reading
    /// it is IO): the check-in's nonce and the back-off's jitter.
    Wake { nonce: [u8; 16], jitter: u64 },
    /// The answer to [`Action::Login`].
    LoggedIn(Result<LoginResponse, AgentError>),
    /// The answer to [`Action::Enroll`].
    Enrolled(Result<LoginResponse, AgentError>),
    /// The answer to [`Action::CheckIn`].
    CheckedIn(Result<Checkin, AgentError>),
    /// The answer to [`Action::RotateTrustRoot`]: the version now held
    /// (`None`: nothing newer), or why the chain was refused.
    TrustRootRotated(Result<Option<u64>, String>),
    /// The answer to [`Action::ReadStore`].
    StoreRead(Result<StoreView, AgentError>),
    /// The answer to [`Action::AcceptTicket`].
    TicketAccepted(Result<(), AgentError>),
    /// The answer to [`Action::FetchEnvelope`]: its bytes (digest checked).
    EnvelopeFetched(Result<Vec<u8>, AgentError>),
    /// The answer to [`Action::Stage`]: `None` when the slot is being
    /// written, or the update flow's refusal.
    Staged(Result<Option<UpdateEvent>, AgentError>),
    /// The answer to [`Action::Download`].
    Downloaded(Result<(), AgentError>),
    /// The answer to [`Action::Finish`].
    Installed(Result<UpdateEvent, AgentError>),
    /// The answer to [`Action::FinishFirmware`]: the sequence requested.
    FirmwareRequested(Result<u64, AgentError>),
    /// What became of a firmware update, learned at a power-on or a confirm.
    FirmwareOutcome(FirmwareOutcome),
    /// An outcome the supervisor reached, with the container as the slot
    /// table now has it.
    Outcome { event: UpdateEvent, container: Result<Option<Container>, AgentError> },
    /// A report that did not get through.
    ReportFailed { report: Report, error: AgentError },
    /// The driver's cycle panicked (a bug): the cycle fails.
    Panicked(String),
}

/// What the machine asks the world to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Sign the server's challenge for a token; answer [`Input::LoggedIn`].
    Login,
    /// Enroll with this one-time token; answer [`Input::Enrolled`].
    Enroll(String),
    /// Check in with the inventory and the trust root held; answer
    /// [`Input::CheckedIn`].
    CheckIn { token: String, nonce: [u8; 16], etag: Option<String> },
    /// Hand these trust roots (oldest first) to the store; answer
    /// [`Input::TrustRootRotated`].
    RotateTrustRoot(Vec<Vec<u8>>),
    /// Read a [`StoreView`]; answer [`Input::StoreRead`].
    ReadStore,
    /// Record a verified ticket's time; answer [`Input::TicketAccepted`].
    AcceptTicket(u64),
    /// Fetch an envelope of this digest and size; answer
    /// [`Input::EnvelopeFetched`].
    FetchEnvelope { sha256: [u8; 32], size: u64 },
    /// Start installing this envelope; answer [`Input::Staged`].
    Stage(Vec<u8>),
    /// Stream the staged release's payloads into its slot; answer
    /// [`Input::Downloaded`].
    Download,
    /// Verify the slot and switch to it; answer [`Input::Installed`].
    Finish,
    /// Start writing this firmware envelope's release into DFU; answer
    /// [`Input::Staged`] (`Ok(None)`: being written).
    StageFirmware(Vec<u8>),
    /// Verify DFU and request the update at the next boot; answer
    /// [`Input::FirmwareRequested`].
    FinishFirmware,
    /// Restart the device: the bootloader boots the requested firmware.
    Restart,
    /// Send a report; a failure is answered by [`Input::ReportFailed`].
    Report { token: String, report: Report },
    /// Have the supervisor restart this container (it was switched).
    Reload(String),
    /// Tell the log.
    Emit(AgentEvent),
    /// The cycle failed: drop the connections; this is its outcome.
    Failed(AgentError),
    /// Check in again after this long.
    Sleep(Duration),
}

/// One assignment of a verified ticket, with the envelope size the
/// check-in's listing gives (the listing is unsigned; it only sizes).
#[derive(Debug)]
struct Job {
    /// The firmware, not a container.
    firmware: bool,
    stream: String,
    manifest_digest: [u8; 32],
    sequence: u64,
    envelope_sha256: [u8; 32],
    envelope_size: Option<u64>,
}

/// A verified ticket being worked through.
struct Work {
    /// The ticket, each release checked against it.
    ticket: KeptTicket,
    /// Assignments not started yet.
    jobs: VecDeque<Job>,
    /// The answer's ETag, acknowledged if every assignment is handled.
    etag: String,
    poll_after: u64,
    all_done: bool,
    /// The longest `Retry-After` of a busy server among failed assignments:
    /// the next check-in, which tries them again, waits at least that.
    retry_after: Option<Duration>,
    table: SlotTable,
    trust: Trust,
    firmware: Option<FirmwareView>,
}

/// A ticket that verified, kept for the releases it names. A
/// [`VerifiedTicket`] borrows its bytes, so the bytes are kept with the
/// policy they passed, and [`KeptTicket::verified`] checks them again where
/// a release is compared with the ticket: the same bytes under the same
/// policy (the clock as it was read then), so the same verdict, at one
/// signature check per release.
struct KeptTicket {
    bytes: Vec<u8>,
    server_keys: Vec<PublicKey>,
    server_threshold: u32,
    device_id: String,
    nonce: [u8; 16],
    now: u64,
    last_issued_at: Option<u64>,
}

impl KeptTicket {
    fn verified(&self) -> Result<VerifiedTicket<'_>, TicketError> {
        let policy = TicketPolicy {
            server_keys: &self.server_keys,
            server_threshold: self.server_threshold,
            device_id: &self.device_id,
            nonce: &self.nonce,
            now: Some(self.now),
            last_issued_at: self.last_issued_at,
        };
        verify_ticket(&self.bytes, &policy)
    }
}

/// The answer the machine waits for.
enum Step {
    Idle,
    Login,
    Enroll,
    CheckIn,
    TrustRoot(Box<CheckinResponse>),
    Store(Box<CheckinResponse>),
    Accept(Box<Work>),
    Envelope(Box<Work>, Job),
    Stage(Box<Work>, Job),
    Download(Box<Work>, Job),
    Install(Box<Work>, Job),
}

/// The protocol state of one device's agent.
pub(crate) struct Machine {
    device_id: String,
    enrollment_token: Option<String>,
    poller: Poller,
    /// The bearer token and when it expires.
    token: Option<(String, Instant)>,
    /// The last desired state fully handled.
    etag: Option<String>,
    /// Whether a cycle runs (events are told) or not (only failures are
    /// kept, for the next cycle).
    in_cycle: bool,
    nonce: [u8; 16],
    jitter: u64,
    step: Step,
    /// Reports waiting for a token.
    unsent: Vec<Report>,
    /// Report failures between cycles, told at the start of the next.
    untold: Vec<AgentEvent>,
}

impl Machine {
    /// A machine for `device_id`, polling under `schedule`.
    pub(crate) fn new(device_id: String, enrollment_token: Option<String>, schedule: Schedule) -> Machine {
        Machine {
            device_id,
            enrollment_token,
            poller: Poller::new(schedule),
            token: None,
            etag: None,
            in_cycle: false,
            nonce: [0; 16],
            jitter: 0,
            step: Step::Idle,
            unsent: Vec::new(),
            untold: Vec::new(),
        }
    }

    /// What to do after `input`, at `now`.
    pub(crate) fn handle(&mut self, now: Now, input: Input) -> Vec<Action> {
        match (std::mem::replace(&mut self.step, Step::Idle), input) {
            // A wake during a cycle means the last one was abandoned.
            (_, Input::Wake { nonce, jitter }) => self.wake(now, nonce, jitter),
            (step, Input::ReportFailed { report, error }) => {
                self.step = step;
                let (stream, state) = (report.stream, report.state);
                self.tell(AgentEvent::ReportFailed { stream, state, reason: error.to_string() })
            }
            (step, Input::Outcome { event, container }) => {
                self.step = step;
                self.outcome(now, &event, container)
            }
            (_, Input::Panicked(why)) => self.fail(AgentError::Panicked(why)),
            (Step::Login, Input::LoggedIn(answer)) => self.logged_in(now, answer, false),
            (Step::Enroll, Input::Enrolled(answer)) => self.logged_in(now, answer, true),
            (Step::CheckIn, Input::CheckedIn(answer)) => self.checked_in(answer),
            (Step::TrustRoot(answer), Input::TrustRootRotated(result)) => {
                let event = match result {
                    Ok(accepted) => AgentEvent::TrustRoot { accepted, refused: None },
                    Err(why) => AgentEvent::TrustRoot { accepted: None, refused: Some(why) },
                };
                self.step = Step::Store(answer);
                vec![Action::Emit(event), Action::ReadStore]
            }
            (Step::Store(answer), Input::StoreRead(view)) => match view {
                Ok(view) => self.verify(now, *answer, view),
                Err(e) => self.fail(e),
            },
            (Step::Accept(work), Input::TicketAccepted(result)) => match result {
                Ok(()) => {
                    let mut actions = vec![Action::Emit(AgentEvent::Ticket { assignments: work.jobs.len() })];
                    actions.extend(self.next(work));
                    actions
                }
                Err(e) => self.fail(e),
            },
            (Step::Envelope(work, job), Input::EnvelopeFetched(envelope)) => {
                match envelope.and_then(|e| check_release(&e, &work, &job).map(|()| e)) {
                    Ok(envelope) => {
                        let stage =
                            if job.firmware { Action::StageFirmware(envelope) } else { Action::Stage(envelope) };
                        self.step = Step::Stage(work, job);
                        vec![stage]
                    }
                    Err(e) => self.give_up(work, job, e),
                }
            }
            (Step::Stage(work, job), Input::Staged(staged)) => match staged {
                Ok(None) => {
                    let report = self.report(&job, ReportState::Downloading, None);
                    self.step = Step::Download(work, job);
                    vec![report, Action::Download]
                }
                Ok(Some(refused)) => self.installed(work, job, refused),
                Err(e) => self.give_up(work, job, e),
            },
            (Step::Download(work, job), Input::Downloaded(done)) => match done {
                Ok(()) => {
                    let report = self.report(&job, ReportState::Installing, None);
                    let finish = if job.firmware { Action::FinishFirmware } else { Action::Finish };
                    self.step = Step::Install(work, job);
                    vec![report, finish]
                }
                Err(e) => self.give_up(work, job, e),
            },
            (Step::Install(work, job), Input::Installed(event)) => match event {
                Ok(event) => self.installed(work, job, event),
                Err(e) => self.give_up(work, job, e),
            },
            (Step::Install(work, job), Input::FirmwareRequested(requested)) => match requested {
                // The rest of the ticket waits for the new firmware: the
                // state is not acknowledged, so the next check-in after the
                // restart brings a fresh ticket.
                Ok(sequence) => {
                    (self.in_cycle, self.step) = (false, Step::Idle);
                    vec![
                        Action::Emit(AgentEvent::FirmwareRequested { sequence }),
                        Action::Restart,
                        Action::Sleep(Duration::ZERO),
                    ]
                }
                Err(e) => self.give_up(work, job, e),
            },
            (step, Input::FirmwareOutcome(outcome)) => {
                self.step = step;
                let (digest, state, detail) = match &outcome {
                    FirmwareOutcome::Confirmed { manifest_digest, .. } => {
                        (manifest_digest, ReportState::Installed, None)
                    }
                    FirmwareOutcome::Reverted { manifest_digest, reason, .. } => {
                        (manifest_digest, ReportState::Reverted, Some(reason.as_str()))
                    }
                };
                let report = report_body(FIRMWARE_STREAM, digest, state, detail);
                self.send_outcome(now, report)
            }
            (step, _) => {
                // A driver that answers what was not asked: a bug there.
                debug_assert!(false, "an input the machine did not ask for");
                self.step = step;
                Vec::new()
            }
        }
    }

    /// The token, unless it expires within [`TOKEN_MARGIN`].
    fn fresh_token(&self, now: Now) -> Option<String> {
        self.token.as_ref().filter(|(_, until)| now.at + TOKEN_MARGIN < *until).map(|(t, _)| t.clone())
    }

    fn wake(&mut self, now: Now, nonce: [u8; 16], jitter: u64) -> Vec<Action> {
        (self.in_cycle, self.nonce, self.jitter) = (true, nonce, jitter);
        let mut actions: Vec<Action> = self.untold.drain(..).map(Action::Emit).collect();
        actions.push(match self.fresh_token(now) {
            Some(token) => self.check_in(token),
            None => {
                self.step = Step::Login;
                Action::Login
            }
        });
        actions
    }

    fn check_in(&mut self, token: String) -> Action {
        self.step = Step::CheckIn;
        Action::CheckIn { token, nonce: self.nonce, etag: self.etag.clone() }
    }

    fn logged_in(&mut self, now: Now, answer: Result<LoginResponse, AgentError>, enrolled: bool) -> Vec<Action> {
        let login = match answer {
            Ok(login) => login,
            Err(AgentError::Unauthorized(why)) if !enrolled => {
                let Some(token) = self.enrollment_token.clone() else {
                    let why = format!(
                        "{why}; pre-authorize device {} with its key, or give an enrollment token",
                        self.device_id
                    );
                    return self.login_failed(AgentError::Unauthorized(why));
                };
                self.step = Step::Enroll;
                return vec![Action::Enroll(token)];
            }
            Err(e) => return self.login_failed(e),
        };
        // Its lifetime is a number from the network: clamped, it cannot
        // overflow the clock.
        let until = now.at.checked_add(login.expires_in_clamped()).unwrap_or(now.at);
        self.token = Some((login.token.clone(), until));
        let token = login.token;
        let mut actions: Vec<Action> =
            self.unsent.drain(..).map(|report| Action::Report { token: token.clone(), report }).collect();
        if self.in_cycle {
            actions.push(Action::Emit(AgentEvent::LoggedIn { enrolled }));
            actions.push(self.check_in(token));
        }
        actions
    }

    fn login_failed(&mut self, e: AgentError) -> Vec<Action> {
        let reason = e.to_string();
        let failures: Vec<AgentEvent> = self
            .unsent
            .drain(..)
            .map(|r| AgentEvent::ReportFailed { stream: r.stream, state: r.state, reason: reason.clone() })
            .collect();
        let mut actions: Vec<Action> = failures.into_iter().flat_map(|f| self.tell(f)).collect();
        if self.in_cycle {
            actions.extend(self.fail(e));
        }
        actions
    }

    fn checked_in(&mut self, answer: Result<Checkin, AgentError>) -> Vec<Action> {
        let answer = match answer {
            Ok(Checkin::Changed(answer)) => Box::new(answer),
            Ok(Checkin::Unchanged { poll_after }) => {
                let mut actions = vec![Action::Emit(AgentEvent::Unchanged)];
                actions.extend(self.done(poll_after));
                return actions;
            }
            Err(e) => {
                if matches!(e, AgentError::Unauthorized(_)) {
                    self.token = None;
                }
                return self.fail(e);
            }
        };
        if answer.trust_roots.is_empty() {
            self.step = Step::Store(answer);
            return vec![Action::ReadStore];
        }
        // Before the ticket: a device whose root expired (or was rotated
        // away from the server's key) catches up first. The store checks
        // each successor against the root held; a refusal changes nothing.
        let chain: Result<Vec<Vec<u8>>, _> =
            answer.trust_roots.iter().take(MAX_TRUST_ROOTS).map(|b| B64.decode(b)).collect();
        match chain {
            Ok(chain) => {
                self.step = Step::TrustRoot(answer);
                vec![Action::RotateTrustRoot(chain)]
            }
            Err(_) => {
                self.step = Step::Store(answer);
                let refused = Some("a trust root is not base64".to_owned());
                vec![Action::Emit(AgentEvent::TrustRoot { accepted: None, refused }), Action::ReadStore]
            }
        }
    }

    fn verify(&mut self, now: Now, answer: CheckinResponse, view: StoreView) -> Vec<Action> {
        let Ok(bytes) = B64.decode(&answer.ticket) else {
            return self.fail(AgentError::Protocol("ticket: not base64".into()));
        };
        let kept = KeptTicket {
            bytes,
            server_keys: view.server_keys,
            server_threshold: view.server_threshold,
            device_id: self.device_id.clone(),
            nonce: self.nonce,
            now: now.unix,
            last_issued_at: view.last_ticket,
        };
        let ticket = match kept.verified() {
            Ok(t) => t,
            Err(e) => return self.fail(ticket_refused(&e)),
        };
        let jobs = ticket
            .assignments()
            .map(|a| Job {
                firmware: a.stream == FIRMWARE_STREAM,
                stream: a.stream.to_owned(),
                manifest_digest: a.manifest_digest,
                sequence: a.sequence,
                envelope_sha256: a.envelope_sha256,
                envelope_size: answer
                    .assignments
                    .iter()
                    .find(|v| v.stream == a.stream && unhex32(&v.envelope.sha256) == Some(a.envelope_sha256))
                    .map(|v| v.envelope.size),
            })
            .collect::<VecDeque<Job>>();
        // The firmware last: installing it restarts the device.
        let (firmware, containers): (VecDeque<Job>, VecDeque<Job>) = jobs.into_iter().partition(|j| j.firmware);
        let jobs = containers.into_iter().chain(firmware).collect();
        // Remembered as of this device's clock at the latest: a ticket dated
        // ahead (one signed with a stolen server key, say) would otherwise
        // make every later genuine ticket "stale", a freeze that outlives
        // the attack. Replays are refused by the nonce in any case.
        let accept = Action::AcceptTicket(ticket.issued_at().min(now.unix));
        let poll_after = answer.poll_after_clamped();
        let work = Work {
            ticket: kept,
            jobs,
            etag: answer.etag,
            poll_after,
            all_done: true,
            retry_after: None,
            table: view.table,
            trust: view.release_trust,
            firmware: view.firmware,
        };
        self.step = Step::Accept(Box::new(work));
        vec![accept]
    }

    /// Starts the next assignment that needs an install, or ends the cycle.
    fn next(&mut self, mut work: Box<Work>) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(job) = work.jobs.pop_front() {
            let skip = |reason: String| AgentEvent::Skipped { stream: job.stream.clone(), reason };
            let wanted = match job.firmware {
                true => wanted_firmware(work.firmware.as_ref(), &job),
                false => wanted(work.table.get(&job.stream), &job),
            };
            match wanted {
                Ok(false) => continue,
                Ok(true) => {}
                Err(reason) => {
                    actions.push(self.report(&job, ReportState::Failed, Some(&reason)));
                    actions.push(Action::Emit(skip(reason)));
                    continue;
                }
            }
            match envelope_size(&job) {
                Ok(size) => {
                    actions.push(Action::FetchEnvelope { sha256: job.envelope_sha256, size });
                    self.step = Step::Envelope(work, job);
                    return actions;
                }
                Err(e) => {
                    work.all_done = false;
                    actions.extend(self.failure(job, &e));
                }
            }
        }
        // Only a fully handled state is acknowledged: after a failure the
        // next check-in gets a fresh ticket and tries again, not before a
        // busy server said it may.
        let poll_after = work.poll_after.max(work.retry_after.map_or(0, |d| d.as_secs()));
        self.etag = work.all_done.then_some(work.etag);
        actions.extend(self.done(Some(poll_after)));
        actions
    }

    /// An install step's outcome: reported if refused, reloaded if switched.
    fn installed(&mut self, work: Box<Work>, job: Job, event: UpdateEvent) -> Vec<Action> {
        let mut actions = Vec::new();
        match &event {
            UpdateEvent::Refused { reason, .. } => {
                actions.push(self.report(&job, ReportState::Failed, Some(&reason.to_string())))
            }
            UpdateEvent::Switched { name, .. } => actions.push(Action::Reload(name.clone())),
            _ => {}
        }
        actions.push(Action::Emit(AgentEvent::Update(event)));
        actions.extend(self.next(work));
        actions
    }

    /// An assignment that failed: reported, skipped, tried again later.
    fn give_up(&mut self, mut work: Box<Work>, job: Job, e: AgentError) -> Vec<Action> {
        work.all_done = false;
        work.retry_after = work.retry_after.max(e.retry_after());
        let mut actions = self.failure(job, &e);
        actions.extend(self.next(work));
        actions
    }

    fn failure(&self, job: Job, e: &AgentError) -> Vec<Action> {
        let reason = e.to_string();
        let report = self.report(&job, ReportState::Failed, Some(&reason));
        vec![report, Action::Emit(AgentEvent::Skipped { stream: job.stream, reason })]
    }

    /// A report on `job` with this cycle's token.
    fn report(&self, job: &Job, state: ReportState, detail: Option<&str>) -> Action {
        // A cycle past its check-in always holds a token; a missing one
        // would only make the server refuse the report, which is told.
        let token = self.token.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        Action::Report { token, report: report_body(&job.stream, &job.manifest_digest, state, detail) }
    }

    /// A supervisor's confirm or revert: reported with the digest it is
    /// about (the running one when confirmed, the standby one when
    /// reverted), and the next check-in brought forward.
    fn outcome(
        &mut self,
        now: Now,
        event: &UpdateEvent,
        container: Result<Option<Container>, AgentError>,
    ) -> Vec<Action> {
        let (name, state, detail) = match event {
            UpdateEvent::Confirmed { name, .. } => (name, ReportState::Installed, None),
            UpdateEvent::Reverted { name, reason, .. } => (name, ReportState::Reverted, Some(reason.as_str())),
            _ => return Vec::new(),
        };
        let container = match container {
            Ok(c) => c,
            Err(e) => {
                return self.tell(AgentEvent::ReportFailed { stream: name.clone(), state, reason: e.to_string() });
            }
        };
        let digest = match event {
            UpdateEvent::Reverted { .. } => container.as_ref().and_then(|c| c.standby()),
            _ => container.as_ref().and_then(|c| c.running()),
        };
        // Nothing to report on a container that is gone.
        let Some(digest) = digest.map(|i| i.manifest_digest) else { return Vec::new() };
        self.send_outcome(now, report_body(name, &digest, state, detail))
    }

    /// Sends an outcome's report (logging in first if the token is stale)
    /// and brings the next check-in forward.
    fn send_outcome(&mut self, now: Now, report: Report) -> Vec<Action> {
        let mut actions = match self.fresh_token(now) {
            Some(token) => vec![Action::Report { token, report }],
            None => {
                self.unsent.push(report);
                if matches!(self.step, Step::Idle) {
                    self.step = Step::Login;
                    vec![Action::Login]
                } else {
                    Vec::new()
                }
            }
        };
        actions.push(Action::Sleep(Duration::ZERO));
        actions
    }

    /// An event: told during a cycle; between cycles only a failure is
    /// kept, to be told at the start of the next.
    fn tell(&mut self, event: AgentEvent) -> Vec<Action> {
        if self.in_cycle {
            vec![Action::Emit(event)]
        } else {
            if matches!(event, AgentEvent::ReportFailed { .. }) {
                self.untold.push(event);
            }
            Vec::new()
        }
    }

    /// The cycle worked: wait what the server asked, within the rules.
    fn done(&mut self, poll_after: Option<u64>) -> Vec<Action> {
        (self.in_cycle, self.step) = (false, Step::Idle);
        vec![Action::Sleep(self.poller.succeeded(poll_after))]
    }

    /// The cycle failed: back off, with this cycle's jitter, and at least
    /// as long as a busy server asked.
    fn fail(&mut self, e: AgentError) -> Vec<Action> {
        (self.in_cycle, self.step) = (false, Step::Idle);
        let wait = self.poller.failed(self.jitter, e.retry_after());
        vec![Action::Failed(e), Action::Sleep(wait)]
    }
}

/// Whether an assignment needs an install, or why not.
fn wanted(c: Option<&Container>, job: &Job) -> Result<bool, String> {
    let Some(c) = c else { return Ok(true) };
    if c.running().is_some_and(|i| i.manifest_digest == job.manifest_digest) {
        return Ok(false);
    }
    if matches!(c.phase, Phase::Reverted { .. })
        && c.standby().is_some_and(|i| i.manifest_digest == job.manifest_digest)
    {
        return Err("this release was reverted on this device".into());
    }
    match c.running() {
        Some(i) if i.sequence >= job.sequence => {
            Err(format!("sequence {} is not above the installed {} (rollback refused)", job.sequence, i.sequence))
        }
        _ => Ok(true),
    }
}

/// Whether a firmware assignment needs an install, or why not.
fn wanted_firmware(firmware: Option<&FirmwareView>, job: &Job) -> Result<bool, String> {
    let Some(f) = firmware else {
        return Err("this device's bootloader holds no keys: its firmware is not managed".into());
    };
    if f.running.is_some_and(|(digest, _)| digest == job.manifest_digest) {
        return Ok(false);
    }
    if f.failed == Some(job.manifest_digest) {
        return Err("this release was reverted on this device".into());
    }
    match f.running {
        Some((_, sequence)) if sequence >= job.sequence => {
            Err(format!("sequence {} is not above the running {sequence} (rollback refused)", job.sequence))
        }
        _ => Ok(true),
    }
}

/// The envelope's size, from the check-in's listing, within bounds.
fn envelope_size(job: &Job) -> Result<u64, AgentError> {
    // The unsigned listing only says how big the envelope is; the ticket
    // names which one counts.
    let size = job.envelope_size.ok_or_else(|| {
        AgentError::Protocol(format!("{}: the check-in does not list the envelope the ticket names", job.stream))
    })?;
    if size > MAX_ENVELOPE {
        return Err(AgentError::Protocol(format!("{}: envelope of {size} bytes, above {MAX_ENVELOPE}", job.stream)));
    }
    Ok(size)
}

/// The envelope verifies under the trust root, above what the stream
/// runs, and is the release the ticket names: no mix-and-match of a
/// genuine release with another's ticket entry, and no replay of an older
/// one whatever the ticket says its sequence is.
fn check_release(envelope: &[u8], work: &Work, job: &Job) -> Result<(), AgentError> {
    let min_sequence = min_sequence(work, job);
    let stream = job.stream.as_str();
    let (digest, declared) = if job.firmware {
        // The bootloader's checks (its keys, one firmware component) come
        // at staging; here: signed, newer, and the ticket's.
        let trust = &work.trust;
        let policy = gantry_signing::Policy::new(&trust.anchors, trust.threshold)
            .min_sequence(min_sequence)
            .identity(Some(&trust.vendor_id), Some(&trust.class_id));
        let verified = gantry_signing::verify(envelope, &policy).map_err(|e| unverified(stream, &e))?;
        (*verified.digest(), FIRMWARE_STREAM.to_owned())
    } else {
        let release = bundle::verify_envelope(envelope, &work.trust, min_sequence).map_err(|e| match e {
            BundleError::Manifest(e) => unverified(stream, &e),
            e => AgentError::Release(format!("{stream}: the envelope does not verify: {e}")),
        })?;
        (release.manifest_digest, release.config.name)
    };
    let ticket = work.ticket.verified().map_err(|e| ticket_refused(&e))?;
    if declared != stream || !ticket.authorizes(stream, &digest) {
        return Err(AgentError::Release(format!(
            "{stream}: the envelope is not the release the ticket names (mix-and-match refused)"
        )));
    }
    Ok(())
}

/// The lowest sequence number `job`'s release may have: one above what
/// the stream runs (the firmware: above the bootloader's anti-rollback
/// counter); none when nothing runs on it.
fn min_sequence(work: &Work, job: &Job) -> u64 {
    let installed = match job.firmware {
        true => work.firmware.map(|f| f.security_counter),
        false => work.table.get(&job.stream).and_then(Container::running).map(|i| i.sequence),
    };
    installed.map_or(0, |s| s.saturating_add(1))
}

/// Why an envelope was refused, a rollback named as one.
fn unverified(stream: &str, e: &gantry_signing::Error) -> AgentError {
    AgentError::Release(match e {
        gantry_signing::Error::SequenceTooLow { sequence, minimum } => format!(
            "{stream}: the envelope's sequence {sequence} is not above the installed {} (rollback refused)",
            minimum.saturating_sub(1)
        ),
        e => format!("{stream}: the envelope does not verify: {e}"),
    })
}

fn ticket_refused(e: &TicketError) -> AgentError {
    AgentError::Ticket(format!("{e} ({})", e.code()))
}

/// The report the agent sends: its detail cut to what the server takes.
fn report_body(stream: &str, digest: &[u8; 32], state: ReportState, detail: Option<&str>) -> Report {
    let report = Report::new(stream, hex::encode(digest), state);
    match detail {
        Some(d) => report.with_detail(d),
        None => report,
    }
}

/// A SHA-256 digest from the server's hex (either case), if it is one.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok().map(|()| out)
}

#[cfg(test)]
mod tests;
