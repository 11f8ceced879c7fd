//! The protocol's rules, with a clock the tests turn, real signed tickets
//! and releases, and no network.

use gantry_boot::Slot;
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_protocol::{Assignment as Listed, BlobRef, MAX_TOKEN_TTL};
use gantry_signing::build::{
    ContainerRelease, FirmwareRelease, add_signature, class_id_from_model, vendor_id_from_domain,
};
use gantry_signing::config::ContainerConfig;
use gantry_signing::ticket::{Ticket, TicketAssignment};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::table::Installed;
use crate::update::Refusal;

const DEVICE: &str = "0707070707070707";
/// The wall clock at the test's start.
const T0: u64 = 2_000_000_000;
const NONCE: [u8; 16] = [9; 16];

/// Keys, identity and clock of one test.
struct World {
    server: FileKeySource,
    release: FileKeySource,
    vendor_id: [u8; 16],
    class_id: [u8; 16],
    start: Instant,
}

/// One signed release: its envelope, the envelope's SHA-256, its manifest digest.
struct Release {
    envelope: Vec<u8>,
    sha256: [u8; 32],
    digest: [u8; 32],
}

fn key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("test".into(), SigningKey::generate(t))
}

impl World {
    fn new() -> World {
        let vendor_id = vendor_id_from_domain("example.com");
        World {
            server: key(KeyType::Ed25519),
            release: key(KeyType::P256),
            vendor_id,
            class_id: class_id_from_model(&vendor_id, "gateway"),
            start: Instant::now(),
        }
    }

    /// `secs` seconds after the start, on both clocks.
    fn at(&self, secs: u64) -> Now {
        Now { at: self.start + Duration::from_secs(secs), unix: T0 + secs }
    }

    fn trust(&self) -> Trust {
        Trust {
            anchors: vec![self.release.public_key().clone()],
            threshold: 1,
            vendor_id: self.vendor_id,
            class_id: self.class_id,
        }
    }

    fn view(&self, table: SlotTable, last_ticket: Option<u64>) -> StoreView {
        StoreView {
            server_keys: vec![self.server.public_key().clone()],
            server_threshold: 1,
            last_ticket,
            release_trust: self.trust(),
            table,
            firmware: None,
        }
    }

    /// A firmware release of a small image, sequence `sequence`.
    fn firmware(&self, sequence: u64) -> Release {
        let image = vec![sequence as u8; 1000];
        let unsigned = FirmwareRelease { image: &image, sequence, vendor_id: self.vendor_id, class_id: self.class_id }
            .build_unsigned()
            .unwrap();
        let envelope = add_signature(&unsigned, &self.release).unwrap();
        let policy = gantry_signing::Policy::new(std::slice::from_ref(self.release.public_key()), 1);
        let digest = *gantry_signing::verify(&envelope, &policy).unwrap().digest();
        Release { sha256: Sha256::digest(&envelope).into(), envelope, digest }
    }

    fn release(&self, name: &str, sequence: u64) -> Release {
        let config = ContainerConfig::from_toml(&format!("name = \"{name}\"\nversion = \"{sequence}\"\n")).unwrap();
        let module = [0u8, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
        let unsigned = ContainerRelease {
            config: &config,
            module: &module,
            blobs: &[],
            sequence,
            vendor_id: self.vendor_id,
            class_id: self.class_id,
        }
        .build_unsigned()
        .unwrap();
        let envelope = add_signature(&unsigned, &self.release).unwrap();
        let digest = bundle::verify_envelope(&envelope, &self.trust(), 0).unwrap().manifest_digest;
        Release { sha256: Sha256::digest(&envelope).into(), envelope, digest }
    }

    /// A ticket for `DEVICE` and `NONCE`, issued at `issued_at` (Unix
    /// seconds) for an hour, signed by the server key.
    fn ticket(&self, issued_at: u64, assignments: &[(&str, &Release, u64)]) -> Ticket {
        Ticket {
            device_id: DEVICE.into(),
            nonce: NONCE.to_vec(),
            issued_at,
            expires_at: issued_at + 3600,
            assignments: assignments
                .iter()
                .map(|(stream, r, sequence)| TicketAssignment {
                    stream: (*stream).into(),
                    manifest_digest: r.digest,
                    sequence: *sequence,
                    envelope_sha256: r.sha256,
                })
                .collect(),
        }
    }

    /// A `200` check-in answer carrying `ticket` and listing `listed`.
    fn answer(&self, ticket: &Ticket, listed: &[(&str, &Release)]) -> Input {
        let ticket = B64.encode(ticket.sign(&self.server).unwrap());
        Input::CheckedIn(Ok(Checkin::Changed(CheckinResponse {
            ticket,
            etag: "\"e1\"".into(),
            poll_after: 30,
            assignments: listed
                .iter()
                .map(|(stream, r)| Listed {
                    stream: (*stream).into(),
                    manifest_digest: hex::encode(r.digest),
                    sequence: 1,
                    envelope: BlobRef {
                        url: format!("/blobs/sha256/{}", hex::encode(r.sha256)),
                        sha256: hex::encode(r.sha256),
                        size: r.envelope.len() as u64,
                    },
                })
                .collect(),
            trust_roots: Vec::new(),
        })))
    }
}

fn machine() -> Machine {
    Machine::new(DEVICE.into(), None, Schedule::default())
}

fn login(expires_in: u64) -> Input {
    Input::LoggedIn(Ok(LoginResponse { device_id: DEVICE.into(), token: "tok".into(), expires_in }))
}

fn wake(jitter: u64) -> Input {
    Input::Wake { nonce: NONCE, jitter }
}

fn unchanged(poll_after: Option<u64>) -> Input {
    Input::CheckedIn(Ok(Checkin::Unchanged { poll_after }))
}

/// Each action in a few words, for assertions that read like the log.
fn says(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Login => "login".into(),
            Action::Enroll(t) => format!("enroll {t}"),
            Action::CheckIn { etag, .. } => format!("check-in etag={etag:?}"),
            Action::RotateTrustRoot(chain) => format!("rotate {}", chain.len()),
            Action::ReadStore => "read-store".into(),
            Action::AcceptTicket(t) => format!("accept {}", t - T0),
            Action::FetchEnvelope { .. } => "fetch-envelope".into(),
            Action::Stage(_) => "stage".into(),
            Action::Download => "download".into(),
            Action::Finish => "finish".into(),
            Action::StageFirmware(_) => "stage-firmware".into(),
            Action::FinishFirmware => "finish-firmware".into(),
            Action::Restart => "restart".into(),
            Action::Report { report, .. } => format!("report {} {}", report.stream, report.state),
            Action::Reload(name) => format!("reload {name}"),
            Action::Emit(AgentEvent::Skipped { stream, .. }) => format!("skipped {stream}"),
            Action::Emit(AgentEvent::Update(UpdateEvent::Switched { name, .. })) => format!("switched {name}"),
            Action::Emit(AgentEvent::Update(UpdateEvent::Refused { name, .. })) => format!("refused {name}"),
            Action::Emit(AgentEvent::ReportFailed { stream, state, .. }) => format!("report-failed {stream} {state}"),
            Action::Emit(e) => format!("{e:?}"),
            Action::Failed(e) => format!("failed: {e}"),
            Action::Sleep(d) => format!("sleep {}ms", d.as_millis()),
        })
        .collect()
}

/// A machine logged in at second 0 and waiting for its check-in's answer.
fn checking_in(w: &World) -> Machine {
    let mut m = machine();
    assert_eq!(says(&m.handle(w.at(0), wake(0))), ["login"]);
    assert_eq!(says(&m.handle(w.at(0), login(900))), ["LoggedIn { enrolled: false }", "check-in etag=None"]);
    m
}

/// The details of the reports among `actions`.
fn details(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report { report, .. } => report.detail().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// A container `app` running `running`, with `standby` in its other slot.
fn container(phase: Phase, running: (u64, [u8; 32]), standby: Option<(u64, [u8; 32])>) -> Container {
    let inst = |(sequence, digest): (u64, [u8; 32])| Installed {
        manifest_digest: digest,
        sequence,
        version: sequence.to_string(),
    };
    Container {
        name: "app".into(),
        pair: 0,
        active: Slot::A,
        phase,
        slots: [Some(inst(running)), standby.map(inst)],
        counter: running.0,
        enabled: true,
    }
}

#[test]
fn a_token_is_reused_until_ten_seconds_before_its_deadline() {
    let w = World::new();
    let mut m = checking_in(&w);
    assert_eq!(says(&m.handle(w.at(0), unchanged(Some(60)))), ["Unchanged", "sleep 60000ms"]);
    // 900 s of lifetime: at 889 s it has 11 s left, at 890 s only 10.
    assert_eq!(says(&m.handle(w.at(889), wake(0))), ["check-in etag=None"]);
    m.handle(w.at(889), unchanged(None));
    assert_eq!(says(&m.handle(w.at(890), wake(0))), ["login"]);
}

#[test]
fn numbers_from_the_network_are_clamped_before_they_become_times() {
    let w = World::new();
    let mut m = machine();
    m.handle(w.at(0), wake(0));
    // A lifetime that would overflow the clock lasts MAX_TOKEN_TTL.
    m.handle(w.at(0), login(u64::MAX));
    m.handle(w.at(0), unchanged(Some(u64::MAX)));
    assert_eq!(says(&m.handle(w.at(MAX_TOKEN_TTL - 11), wake(0))), ["check-in etag=None"]);
    // A huge poll_after waits the rules' longest interval (an hour).
    assert_eq!(says(&m.handle(w.at(MAX_TOKEN_TTL - 11), unchanged(Some(u64::MAX)))), ["Unchanged", "sleep 3600000ms"]);
    assert_eq!(says(&m.handle(w.at(MAX_TOKEN_TTL - 10), wake(0))), ["login"]);
}

#[test]
fn not_modified_waits_the_servers_interval_within_the_rules() {
    let w = World::new();
    let mut m = checking_in(&w);
    assert_eq!(says(&m.handle(w.at(0), unchanged(Some(30)))), ["Unchanged", "sleep 30000ms"]);
    m.handle(w.at(1), wake(0));
    assert_eq!(says(&m.handle(w.at(1), unchanged(Some(0)))), ["Unchanged", "sleep 1000ms"], "at least a second");
    m.handle(w.at(2), wake(0));
    assert_eq!(says(&m.handle(w.at(2), unchanged(None))), ["Unchanged", "sleep 60000ms"], "the default");
}

#[test]
fn an_unauthorized_check_in_drops_the_token() {
    let w = World::new();
    let mut m = checking_in(&w);
    let refused = Input::CheckedIn(Err(AgentError::Unauthorized("check-in: token revoked".into())));
    let actions = m.handle(w.at(1), refused);
    assert_eq!(says(&actions), ["failed: unauthorized: check-in: token revoked", "sleep 1000ms"]);
    assert_eq!(says(&m.handle(w.at(2), wake(0))), ["login"], "the token had 898 s left");
    // Any other failure keeps it.
    m.handle(w.at(2), login(900));
    m.handle(w.at(3), Input::CheckedIn(Err(AgentError::Transport("reset".into()))));
    assert_eq!(says(&m.handle(w.at(4), wake(0))), ["check-in etag=None"]);
}

#[test]
fn a_refused_login_enrolls_with_a_token_or_says_what_to_do() {
    let w = World::new();
    let refused = || Input::LoggedIn(Err(AgentError::Unauthorized("login: unknown device".into())));
    let mut m = machine();
    m.handle(w.at(0), wake(0));
    let actions = m.handle(w.at(0), refused());
    assert!(
        matches!(&actions[0], Action::Failed(AgentError::Unauthorized(why)) if why.contains("pre-authorize device 0707")),
        "{:?}",
        says(&actions)
    );
    let mut m = Machine::new(DEVICE.into(), Some("once".into()), Schedule::default());
    m.handle(w.at(0), wake(0));
    assert_eq!(says(&m.handle(w.at(0), refused())), ["enroll once"]);
    let enrolled = Input::Enrolled(Ok(LoginResponse { device_id: DEVICE.into(), token: "t".into(), expires_in: 60 }));
    assert_eq!(says(&m.handle(w.at(0), enrolled)), ["LoggedIn { enrolled: true }", "check-in etag=None"]);
}

#[test]
fn a_full_install_reports_each_step_and_acknowledges_the_etag() {
    let w = World::new();
    let (app, fw) = (w.release("app", 1), w.release("firmware", 1));
    let mut m = checking_in(&w);
    let ticket = w.ticket(T0, &[("app", &app, 1), ("firmware", &fw, 1)]);
    assert_eq!(says(&m.handle(w.at(1), w.answer(&ticket, &[("app", &app)]))), ["read-store"]);
    assert_eq!(says(&m.handle(w.at(1), Input::StoreRead(Ok(w.view(SlotTable::default(), None))))), ["accept 0"]);
    assert_eq!(
        says(&m.handle(w.at(1), Input::TicketAccepted(Ok(())))),
        ["Ticket { assignments: 2 }", "fetch-envelope"]
    );
    assert_eq!(says(&m.handle(w.at(1), Input::EnvelopeFetched(Ok(app.envelope.clone())))), ["stage"]);
    assert_eq!(says(&m.handle(w.at(1), Input::Staged(Ok(None)))), ["report app downloading", "download"]);
    assert_eq!(says(&m.handle(w.at(2), Input::Downloaded(Ok(())))), ["report app installing", "finish"]);
    let switched = UpdateEvent::Switched { name: "app".into(), version: "1".into(), sequence: 1, slot: Slot::A };
    assert_eq!(
        says(&m.handle(w.at(3), Input::Installed(Ok(switched)))),
        ["reload app", "switched app", "report firmware failed", "skipped firmware", "sleep 30000ms"],
        "firmware on a device whose bootloader holds no keys is refused and reported"
    );
    assert_eq!(says(&m.handle(w.at(33), wake(0))), ["check-in etag=Some(\"\\\"e1\\\"\")"]);
}

/// A machine that accepted a ticket assigning `app` to `release`, as the
/// device with `table` is about to work through it; the actions after the
/// acceptance.
fn accepted(w: &World, m: &mut Machine, release: &Release, sequence: u64, table: SlotTable) -> Vec<String> {
    let ticket = w.ticket(T0, &[("app", release, sequence)]);
    m.handle(w.at(1), w.answer(&ticket, &[("app", release)]));
    assert_eq!(says(&m.handle(w.at(1), Input::StoreRead(Ok(w.view(table, None))))), ["accept 0"]);
    says(&m.handle(w.at(1), Input::TicketAccepted(Ok(()))))
}

#[test]
fn the_etag_is_acknowledged_only_when_every_assignment_was_handled() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    assert_eq!(accepted(&w, &mut m, &app, 1, SlotTable::default()), ["Ticket { assignments: 1 }", "fetch-envelope"]);
    m.handle(w.at(1), Input::EnvelopeFetched(Ok(app.envelope.clone())));
    m.handle(w.at(1), Input::Staged(Ok(None)));
    let cut = Input::Downloaded(Err(AgentError::Transport("the connection ended after 10 of 99 bytes".into())));
    let actions = m.handle(w.at(2), cut);
    assert_eq!(says(&actions), ["report app failed", "skipped app", "sleep 30000ms"]);
    assert_eq!(details(&actions), ["connection: the connection ended after 10 of 99 bytes"]);
    // Not acknowledged: the next check-in gets the ticket again.
    assert_eq!(says(&m.handle(w.at(32), wake(0))), ["check-in etag=None"]);
    // A refusal by the update flow is handled (reported), so acknowledged.
    accepted(&w, &mut m, &app, 1, SlotTable::default());
    m.handle(w.at(33), Input::EnvelopeFetched(Ok(app.envelope.clone())));
    let refused = UpdateEvent::Refused { name: "app".into(), reason: Refusal::NoFreePair { max: 2 } };
    let actions = m.handle(w.at(33), Input::Staged(Ok(Some(refused))));
    assert_eq!(says(&actions), ["report app failed", "refused app", "sleep 30000ms"]);
    assert_eq!(details(&actions), ["no free slot pair (at most 2)"]);
    assert_eq!(says(&m.handle(w.at(64), wake(0))), ["check-in etag=Some(\"\\\"e1\\\"\")"]);
}

#[test]
fn mix_and_match_is_refused_and_reported() {
    let w = World::new();
    let (genuine, other) = (w.release("app", 2), w.release("other", 2));
    // The ticket names `genuine`; the server sends another genuine
    // release's envelope under its entry, then one of another stream.
    for (sent, why) in [(w.release("app", 3), "a different manifest"), (other, "another stream's release")] {
        let mut m = checking_in(&w);
        let ticket = w.ticket(T0, &[("app", &genuine, 2)]);
        let listed = Release { envelope: sent.envelope.clone(), sha256: genuine.sha256, digest: genuine.digest };
        m.handle(w.at(1), w.answer(&ticket, &[("app", &listed)]));
        m.handle(w.at(1), Input::StoreRead(Ok(w.view(SlotTable::default(), None))));
        m.handle(w.at(1), Input::TicketAccepted(Ok(())));
        let actions = m.handle(w.at(1), Input::EnvelopeFetched(Ok(sent.envelope)));
        assert_eq!(says(&actions), ["report app failed", "skipped app", "sleep 30000ms"], "{why}");
        assert!(details(&actions)[0].contains("mix-and-match refused"), "{why}: {:?}", details(&actions));
        assert_eq!(says(&m.handle(w.at(31), wake(0))), ["check-in etag=None"], "{why}");
    }
}

/// A genuine older release under a ticket entry that claims a newer
/// sequence (a stolen server key, a replayed entry): the envelope's own
/// signed sequence must be above what runs, for containers and firmware.
#[test]
fn an_older_release_under_a_newer_ticket_entry_is_refused_as_a_rollback() {
    let w = World::new();
    let (v1, v2) = (w.release("app", 1), w.release("app", 2));
    let runs_2 = SlotTable { containers: vec![container(Phase::Confirmed, (2, v2.digest), None)] };
    let mut m = checking_in(&w);
    assert_eq!(accepted(&w, &mut m, &v1, 3, runs_2), ["Ticket { assignments: 1 }", "fetch-envelope"]);
    let actions = m.handle(w.at(1), Input::EnvelopeFetched(Ok(v1.envelope.clone())));
    assert_eq!(says(&actions), ["report app failed", "skipped app", "sleep 30000ms"]);
    assert_eq!(
        details(&actions),
        ["release refused: app: the envelope's sequence 1 is not above the installed 2 (rollback refused)"]
    );

    let fw = w.firmware(2);
    let mut m = checking_in(&w);
    m.handle(w.at(1), w.answer(&w.ticket(T0, &[("firmware", &fw, 3)]), &[("firmware", &fw)]));
    let confirmed_2 = FirmwareView { running: Some(([9; 32], 2)), failed: None, security_counter: 2 };
    let view = StoreView { firmware: Some(confirmed_2), ..w.view(SlotTable::default(), None) };
    m.handle(w.at(1), Input::StoreRead(Ok(view)));
    assert_eq!(
        says(&m.handle(w.at(1), Input::TicketAccepted(Ok(())))),
        ["Ticket { assignments: 1 }", "fetch-envelope"]
    );
    let actions = m.handle(w.at(1), Input::EnvelopeFetched(Ok(fw.envelope.clone())));
    assert_eq!(says(&actions), ["report firmware failed", "skipped firmware", "sleep 30000ms"]);
    assert_eq!(
        details(&actions),
        ["release refused: firmware: the envelope's sequence 2 is not above the installed 2 (rollback refused)"]
    );
}

#[test]
fn a_busy_server_is_not_asked_again_before_its_retry_after() {
    let w = World::new();
    let busy = |what: &str, secs| AgentError::Busy {
        what: what.into(),
        status: 429,
        retry_after: Some(Duration::from_secs(secs)),
        detail: "too many requests (rate-limited)".into(),
    };
    // A check-in: the back-off would be a second, the server asked for 90.
    let mut m = checking_in(&w);
    let actions = m.handle(w.at(1), Input::CheckedIn(Err(busy("check-in", 90))));
    assert_eq!(says(&actions)[1], "sleep 90000ms");
    assert!(matches!(&actions[0], Action::Failed(AgentError::Busy { status: 429, .. })));
    // A login, and never longer than the schedule's longest wait (an hour).
    let mut m = machine();
    m.handle(w.at(0), wake(0));
    assert_eq!(says(&m.handle(w.at(0), Input::LoggedIn(Err(busy("challenge", 86_400)))))[1], "sleep 3600000ms");
    // A download: the assignment fails and the cycle ends on the longer of
    // the server's interval (30 s) and its Retry-After.
    let app = w.release("app", 1);
    for (secs, sleep) in [(120, "sleep 120000ms"), (7, "sleep 30000ms")] {
        let mut m = checking_in(&w);
        accepted(&w, &mut m, &app, 1, SlotTable::default());
        let actions = m.handle(w.at(1), Input::EnvelopeFetched(Err(busy("download", secs))));
        assert_eq!(says(&actions), ["report app failed", "skipped app", sleep]);
    }
}

#[test]
fn an_envelope_that_does_not_verify_is_refused_before_staging() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    accepted(&w, &mut m, &app, 1, SlotTable::default());
    let mut forged = app.envelope.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let actions = m.handle(w.at(1), Input::EnvelopeFetched(Ok(forged)));
    assert_eq!(says(&actions), ["report app failed", "skipped app", "sleep 30000ms"]);
    assert!(details(&actions)[0].contains("does not verify"), "{:?}", details(&actions));
}

#[test]
fn rollbacks_and_releases_reverted_here_are_reported_not_fetched() {
    let w = World::new();
    let (v1, v2) = (w.release("app", 1), w.release("app", 2));
    // Runs 2: the ticket's 1 is a rollback.
    let runs_2 = SlotTable { containers: vec![container(Phase::Confirmed, (2, v2.digest), None)] };
    let mut m = checking_in(&w);
    let actions = accepted(&w, &mut m, &v1, 1, runs_2.clone());
    assert_eq!(actions, ["Ticket { assignments: 1 }", "report app failed", "skipped app", "sleep 30000ms"]);
    // Runs 1 again after 2 was reverted here: 2 is not tried again.
    let reverted = Phase::Reverted { reason: "crash loop".into() };
    let reverted_2 = SlotTable { containers: vec![container(reverted, (1, v1.digest), Some((2, v2.digest)))] };
    let mut m = checking_in(&w);
    let actions = accepted(&w, &mut m, &v2, 2, reverted_2);
    assert_eq!(actions, ["Ticket { assignments: 1 }", "report app failed", "skipped app", "sleep 30000ms"]);
    // What already runs is neither fetched nor reported.
    let mut m = checking_in(&w);
    assert_eq!(accepted(&w, &mut m, &v2, 2, runs_2), ["Ticket { assignments: 1 }", "sleep 30000ms"]);
    // Each was handled: the state is acknowledged.
    assert_eq!(says(&m.handle(w.at(31), wake(0))), ["check-in etag=Some(\"\\\"e1\\\"\")"]);
}

#[test]
fn what_needs_an_install() {
    let job = |seq: u64| Job {
        firmware: false,
        stream: "app".into(),
        manifest_digest: [seq as u8; 32],
        sequence: seq,
        envelope_sha256: [0; 32],
        envelope_size: Some(1),
    };
    assert_eq!(wanted(None, &job(1)), Ok(true));
    let c = container(Phase::Confirmed, (2, [2; 32]), Some((1, [1; 32])));
    assert_eq!(wanted(Some(&c), &job(2)), Ok(false), "already runs it");
    assert_eq!(wanted(Some(&c), &job(3)), Ok(true));
    assert!(wanted(Some(&c), &job(1)).unwrap_err().contains("rollback"));
    let reverted = container(Phase::Reverted { reason: "crash".into() }, (1, [1; 32]), Some((2, [2; 32])));
    assert!(wanted(Some(&reverted), &job(2)).unwrap_err().contains("reverted"));
    assert_eq!(wanted(Some(&reverted), &job(3)), Ok(true), "a newer fix is welcome");
}

#[test]
fn a_ticket_not_for_this_check_in_installs_nothing() {
    let w = World::new();
    let app = w.release("app", 1);
    let good = w.ticket(T0, &[("app", &app, 1)]);
    let cases = [
        ("another nonce", Ticket { nonce: vec![1; 16], ..good.clone() }, None, "nonce-mismatch"),
        ("another device", Ticket { device_id: "0808".into(), ..good.clone() }, None, "wrong-device"),
        ("older than the last", good.clone(), Some(T0 + 1), "stale"),
        ("expired", Ticket { issued_at: T0 - 7200, expires_at: T0 - 1, ..good.clone() }, None, "expired"),
    ];
    for (what, ticket, last, code) in cases {
        let mut m = checking_in(&w);
        m.handle(w.at(0), w.answer(&ticket, &[("app", &app)]));
        let actions = m.handle(w.at(0), Input::StoreRead(Ok(w.view(SlotTable::default(), last))));
        assert_eq!(actions.len(), 2, "{what}: {:?}", says(&actions));
        assert!(
            matches!(&actions[0], Action::Failed(AgentError::Ticket(why)) if why.ends_with(&format!("({code})"))),
            "{what}: {:?}",
            says(&actions)
        );
        assert!(matches!(actions[1], Action::Sleep(_)), "{what}");
    }
    // Signed by a key that is not the trust root's server key.
    let mut m = checking_in(&w);
    let stranger = World { server: key(KeyType::Ed25519), ..World::new() };
    m.handle(w.at(0), stranger.answer(&good, &[("app", &app)]));
    let actions = m.handle(w.at(0), Input::StoreRead(Ok(w.view(SlotTable::default(), None))));
    assert!(matches!(&actions[0], Action::Failed(AgentError::Ticket(_))), "{:?}", says(&actions));
}

#[test]
fn back_off_grows_with_failures_and_resets_after_success() {
    let w = World::new();
    let mut m = machine();
    let down = || Input::CheckedIn(Err(AgentError::Transport("connection refused".into())));
    // The jitter is the whole ceiling each time: 2 s, 4 s, 8 s.
    m.handle(w.at(0), wake(2000));
    m.handle(w.at(0), login(900));
    assert_eq!(says(&m.handle(w.at(0), down()))[1], "sleep 2000ms");
    for (jitter, wait) in [(4000, "sleep 4000ms"), (8000, "sleep 8000ms")] {
        m.handle(w.at(1), wake(jitter));
        assert_eq!(says(&m.handle(w.at(1), down()))[1], wait);
    }
    // A jitter below the ceiling waits less.
    m.handle(w.at(2), wake(1500));
    assert_eq!(says(&m.handle(w.at(2), down()))[1], "sleep 1500ms");
    m.handle(w.at(3), wake(0));
    m.handle(w.at(3), unchanged(Some(30)));
    // Back to a 2 s ceiling: 4000 ms of jitter wraps around it.
    m.handle(w.at(4), wake(4000));
    assert_eq!(says(&m.handle(w.at(4), down()))[1], "sleep 1999ms");
}

#[test]
fn trust_roots_are_handed_to_the_store_before_the_ticket_is_verified() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    let Input::CheckedIn(Ok(Checkin::Changed(mut answer))) = w.answer(&w.ticket(T0, &[("app", &app, 1)]), &[]) else {
        unreachable!()
    };
    answer.trust_roots = vec![B64.encode(b"root v2"), B64.encode(b"root v3")];
    let actions = m.handle(w.at(0), Input::CheckedIn(Ok(Checkin::Changed(answer.clone()))));
    assert_eq!(says(&actions), ["rotate 2"]);
    assert!(matches!(&actions[0], Action::RotateTrustRoot(chain) if chain[1] == b"root v3"));
    assert_eq!(
        says(&m.handle(w.at(0), Input::TrustRootRotated(Ok(Some(3))))),
        ["TrustRoot { accepted: Some(3), refused: None }", "read-store"]
    );
    // A chain that is not even base64 is refused here; the ticket is
    // still checked against the root held.
    let mut m = checking_in(&w);
    answer.trust_roots = vec!["not base64!".into()];
    let actions = m.handle(w.at(0), Input::CheckedIn(Ok(Checkin::Changed(answer))));
    assert_eq!(
        says(&actions),
        ["TrustRoot { accepted: None, refused: Some(\"a trust root is not base64\") }", "read-store"]
    );
}

#[test]
fn a_ticket_dated_ahead_is_remembered_as_of_now() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    m.handle(w.at(5), w.answer(&w.ticket(T0 + 1000, &[("app", &app, 1)]), &[("app", &app)]));
    let actions = m.handle(w.at(5), Input::StoreRead(Ok(w.view(SlotTable::default(), None))));
    assert_eq!(says(&actions), ["accept 5"], "accepted, but remembered at the device's now");
}

#[test]
fn an_envelope_the_listing_does_not_size_is_not_fetched() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    m.handle(w.at(0), w.answer(&w.ticket(T0, &[("app", &app, 1)]), &[]));
    m.handle(w.at(0), Input::StoreRead(Ok(w.view(SlotTable::default(), None))));
    let actions = m.handle(w.at(0), Input::TicketAccepted(Ok(())));
    assert_eq!(says(&actions), ["Ticket { assignments: 1 }", "report app failed", "skipped app", "sleep 30000ms"]);
    assert!(details(&actions)[0].contains("does not list the envelope"));
}

#[test]
fn a_report_that_fails_is_told() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    accepted(&w, &mut m, &app, 1, SlotTable::default());
    m.handle(w.at(1), Input::EnvelopeFetched(Ok(app.envelope.clone())));
    let actions = m.handle(w.at(1), Input::Staged(Ok(None)));
    let Action::Report { report, .. } = &actions[0] else { panic!("{:?}", says(&actions)) };
    // During a cycle: at once.
    let failed = |report: &Report| Input::ReportFailed {
        report: report.clone(),
        error: AgentError::Status { what: "report".into(), status: 503, detail: "busy".into() },
    };
    assert_eq!(says(&m.handle(w.at(1), failed(report))), ["report-failed app downloading"]);
    m.handle(w.at(1), Input::Downloaded(Err(AgentError::Transport("cut".into()))));
    // Between cycles: at the start of the next.
    assert!(m.handle(w.at(2), failed(report)).is_empty());
    assert_eq!(says(&m.handle(w.at(40), wake(0))), ["report-failed app downloading", "check-in etag=None"]);
}

#[test]
fn supervisor_outcomes_are_reported_with_their_digest_and_bring_the_check_in_forward() {
    let w = World::new();
    let mut m = checking_in(&w);
    m.handle(w.at(0), unchanged(Some(600)));
    // Confirmed: the version that runs; reverted: the one that failed,
    // now in the standby slot.
    let c = container(Phase::Confirmed, (2, [2; 32]), Some((1, [1; 32])));
    let confirmed = UpdateEvent::Confirmed { name: "app".into(), sequence: 2 };
    let reverted = UpdateEvent::Reverted { name: "app".into(), from: 2, to: Some(1), reason: "crash loop".into() };
    for (event, state, digest, detail) in [
        (confirmed, ReportState::Installed, [2; 32], None),
        (reverted, ReportState::Reverted, [1; 32], Some("crash loop")),
    ] {
        let actions = m.handle(w.at(10), Input::Outcome { event, container: Ok(Some(c.clone())) });
        assert_eq!(actions.len(), 2);
        let Action::Report { token, report } = &actions[0] else { panic!("{:?}", says(&actions)) };
        assert_eq!((token.as_str(), report.state, report.detail()), ("tok", state, detail));
        assert_eq!(report.manifest_digest, hex::encode(digest));
        assert!(matches!(actions[1], Action::Sleep(Duration::ZERO)), "the next check-in comes at once");
    }
    // A container that is gone has nothing to report; other events neither.
    let confirmed = UpdateEvent::Confirmed { name: "app".into(), sequence: 2 };
    assert!(m.handle(w.at(10), Input::Outcome { event: confirmed, container: Ok(None) }).is_empty());
    let removed = UpdateEvent::Removed { name: "app".into() };
    assert!(m.handle(w.at(10), Input::Outcome { event: removed, container: Ok(Some(c)) }).is_empty());
}

#[test]
fn an_outcome_with_a_stale_token_logs_in_first() {
    let w = World::new();
    let mut m = checking_in(&w);
    m.handle(w.at(0), unchanged(Some(600)));
    let c = container(Phase::Confirmed, (2, [2; 32]), None);
    let confirmed = || UpdateEvent::Confirmed { name: "app".into(), sequence: 2 };
    let actions = m.handle(w.at(895), Input::Outcome { event: confirmed(), container: Ok(Some(c.clone())) });
    assert_eq!(says(&actions), ["login", "sleep 0ms"]);
    // Between cycles the login is not told; the report goes with its token.
    assert_eq!(says(&m.handle(w.at(895), login(900))), ["report app installed"]);
    // A login that fails makes the waiting report a failure, told later.
    let actions = m.handle(w.at(1790), Input::Outcome { event: confirmed(), container: Ok(Some(c)) });
    assert_eq!(says(&actions), ["login", "sleep 0ms"]);
    assert!(m.handle(w.at(1790), Input::LoggedIn(Err(AgentError::Transport("down".into())))).is_empty());
    assert_eq!(says(&m.handle(w.at(1791), wake(0))), ["report-failed app installed", "login"]);
}

#[test]
fn a_panicked_cycle_fails_and_the_next_one_starts_afresh() {
    let w = World::new();
    let app = w.release("app", 1);
    let mut m = checking_in(&w);
    accepted(&w, &mut m, &app, 1, SlotTable::default());
    let actions = m.handle(w.at(1), Input::Panicked("index out of bounds".into()));
    assert_eq!(says(&actions), ["failed: the update cycle failed unexpectedly: index out of bounds", "sleep 1000ms"]);
    assert_eq!(says(&m.handle(w.at(2), wake(0))), ["check-in etag=None"]);
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
fn hex_round_trip() {
    let d = [0xabu8; 32];
    assert_eq!(unhex32(&hex::encode(d)), Some(d));
    assert_eq!(unhex32(&hex::encode_upper(d)), Some(d));
    assert_eq!(unhex32("zz"), None);
    assert_eq!(unhex32(&"g".repeat(64)), None);
}

/// Issue 12: a firmware assignment is installed after the containers of
/// the same ticket, through DFU, and ends the cycle with a restart; the
/// state is not acknowledged, so the ticket after the restart is fresh.
#[test]
fn firmware_is_installed_last_and_restarts_the_device() {
    let w = World::new();
    let (fw, app) = (w.firmware(2), w.release("app", 1));
    let mut m = checking_in(&w);
    let ticket = w.ticket(T0, &[("firmware", &fw, 2), ("app", &app, 1)]);
    let answer = w.answer(&ticket, &[("firmware", &fw), ("app", &app)]);
    assert_eq!(says(&m.handle(w.at(1), answer)), ["read-store"]);
    let view = StoreView {
        firmware: Some(FirmwareView { running: Some(([1; 32], 1)), failed: None, security_counter: 1 }),
        ..w.view(SlotTable::default(), None)
    };
    assert_eq!(says(&m.handle(w.at(1), Input::StoreRead(Ok(view)))), ["accept 0"]);
    assert_eq!(
        says(&m.handle(w.at(1), Input::TicketAccepted(Ok(())))),
        ["Ticket { assignments: 2 }", "fetch-envelope"]
    );
    // The container first.
    assert_eq!(says(&m.handle(w.at(1), Input::EnvelopeFetched(Ok(app.envelope.clone())))), ["stage"]);
    m.handle(w.at(1), Input::Staged(Ok(None)));
    m.handle(w.at(1), Input::Downloaded(Ok(())));
    let switched = UpdateEvent::Switched { name: "app".into(), version: "1".into(), sequence: 1, slot: Slot::A };
    assert_eq!(
        says(&m.handle(w.at(2), Input::Installed(Ok(switched)))),
        ["reload app", "switched app", "fetch-envelope"]
    );
    assert_eq!(says(&m.handle(w.at(2), Input::EnvelopeFetched(Ok(fw.envelope.clone())))), ["stage-firmware"]);
    assert_eq!(says(&m.handle(w.at(2), Input::Staged(Ok(None)))), ["report firmware downloading", "download"]);
    assert_eq!(says(&m.handle(w.at(3), Input::Downloaded(Ok(())))), ["report firmware installing", "finish-firmware"]);
    assert_eq!(
        says(&m.handle(w.at(3), Input::FirmwareRequested(Ok(2)))),
        ["FirmwareRequested { sequence: 2 }", "restart", "sleep 0ms"]
    );
    assert_eq!(says(&m.handle(w.at(4), wake(0))), ["check-in etag=None"], "not acknowledged");
}

#[test]
fn firmware_that_runs_failed_here_or_is_older_is_not_installed() {
    let w = World::new();
    let fw = w.firmware(2);
    let outcome = |view: Option<FirmwareView>| {
        let mut m = checking_in(&w);
        let ticket = w.ticket(T0, &[("firmware", &fw, 2)]);
        m.handle(w.at(1), w.answer(&ticket, &[("firmware", &fw)]));
        m.handle(w.at(1), Input::StoreRead(Ok(StoreView { firmware: view, ..w.view(SlotTable::default(), None) })));
        let actions = m.handle(w.at(1), Input::TicketAccepted(Ok(())));
        (says(&actions), details(&actions))
    };
    let running =
        |digest, seq| Some(FirmwareView { running: Some((digest, seq)), failed: None, security_counter: seq });
    assert_eq!(outcome(running(fw.digest, 2)).0, ["Ticket { assignments: 1 }", "sleep 30000ms"], "already runs it");
    let (said, why) = outcome(running([9; 32], 2));
    assert_eq!(said, ["Ticket { assignments: 1 }", "report firmware failed", "skipped firmware", "sleep 30000ms"]);
    assert!(why[0].contains("rollback refused"), "{why:?}");
    let (_, why) =
        outcome(Some(FirmwareView { running: Some(([9; 32], 1)), failed: Some(fw.digest), security_counter: 1 }));
    assert_eq!(why, ["this release was reverted on this device"]);
    let (_, why) = outcome(None);
    assert!(why[0].contains("not managed"), "{why:?}");
}

#[test]
fn a_firmware_outcome_is_reported_with_its_digest_and_reason() {
    let w = World::new();
    let mut m = checking_in(&w);
    m.handle(w.at(1), unchanged(Some(30)));
    let reverted =
        FirmwareOutcome::Reverted { manifest_digest: [4; 32], sequence: 2, reason: "its trial failed".into() };
    let actions = m.handle(w.at(2), Input::FirmwareOutcome(reverted));
    assert_eq!(says(&actions), ["report firmware reverted", "sleep 0ms"]);
    assert_eq!(details(&actions), ["its trial failed"]);
    let confirmed = FirmwareOutcome::Confirmed { manifest_digest: [4; 32], sequence: 2 };
    assert_eq!(says(&m.handle(w.at(3), Input::FirmwareOutcome(confirmed))), ["report firmware installed", "sleep 0ms"]);
}
