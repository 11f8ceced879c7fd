//! A hostile server side against the real agent: a man in the middle (or
//! a forged or half-compromised server) answers well-formed messages that
//! the device must still refuse —
//!
//! * a replayed old check-in answer (freeze attack),
//! * another device's ticket,
//! * a release envelope signed by a key the trust root does not know (a
//!   substituted blob, or a ticket naming it, signed with the stolen
//!   server key),
//! * a ticket signed by a key that is not the trust root's server role.
//!
//! Each is refused with the error that names it; the device keeps running
//! its verified version with its state intact, and once the attack stops it
//! updates normally. Endless data and trickled bytes are in `fleet_update.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_device::agent::{AgentEvent, InventoryItem, inventory};
use gantry_device::supervisor::unix_now;
use gantry_device::update::UpdateEvent;
use gantry_e2e::fleet::{Fleet, Release, SimDevice, fixture, sign_release};
use gantry_e2e::mitm::{Mitm, Request, Response, Script, Upstream, b64_decode, b64_encode, pass_through};
use gantry_keys::{Algorithm, FileKeySource, KeyError, KeyId, KeySource, KeyType, PublicKey, SigningKey};
use gantry_signing::ticket::{Ticket, TicketAssignment, decode_ticket_unverified};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// A container with a health check and a short probation, so an install
/// is confirmed in a fraction of a second.
const APP: &str = "name = \"app\"\nversion = \"VERSION\"\n[health]\nkind = \"export\"\nfunction = \"gantry_health\"\ninterval_ms = 20\nprobation_ms = 200\n";
/// Longest a cycle waits for a probation to end.
const PROBATION_CAP: Duration = Duration::from_secs(10);
const CHECKIN: &str = "/api/v1/device/checkin";
const LOGIN: &str = "/api/v1/device/login";

fn app(version: &str) -> String {
    APP.replace("VERSION", version)
}

fn unhex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// What an attack must not touch: the verified version the device runs
/// (checked from flash) and the inventory of its slot table.
#[derive(Clone, Debug, PartialEq)]
struct Kept {
    running: Option<u64>,
    inventory: Vec<InventoryItem>,
}

fn kept(d: &SimDevice) -> Kept {
    Kept { running: d.running("app"), inventory: inventory(&d.device.store().table().expect("slot table")) }
}

fn last_ticket(d: &SimDevice) -> Option<u64> {
    d.device.store().last_ticket().expect("last ticket")
}

/// A cycle the device must fail; its error.
fn refused(d: &mut SimDevice) -> String {
    match d.cycle(PROBATION_CAP) {
        Ok(events) => panic!("the device accepted the answer: {events:?}"),
        Err(e) => e.to_string(),
    }
}

/// A cycle that must succeed; its events.
fn cycle(d: &mut SimDevice) -> Vec<AgentEvent> {
    d.cycle(PROBATION_CAP).unwrap_or_else(|e| panic!("device {}: {e}", d.id()))
}

fn skipped(events: &[AgentEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Skipped { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

fn confirmed(events: &[AgentEvent], sequence: u64) -> bool {
    events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Confirmed { sequence: s, .. }) if *s == sequence))
}

fn switched(events: &[AgentEvent]) -> bool {
    events.iter().any(|e| matches!(e, AgentEvent::Update(UpdateEvent::Switched { .. })))
}

/// The fleet, a man in the middle in front of its server (passing
/// everything through for now) and one device behind it, running v1.
fn setup() -> (Fleet, Mitm, SimDevice, Release) {
    let fleet = Fleet::start();
    let mitm =
        Mitm::start(fleet.url.trim_start_matches("http://").parse().expect("addr"), pass_through()).expect("mitm");
    let mut d = fleet.device(0, &mitm.url());
    let v1 = fleet.release(&app("1.0"), fixture("health"), 1);
    fleet.assign(&d.id(), "app", &v1);
    let events = cycle(&mut d);
    assert!(confirmed(&events, 1), "{events:?}");
    (fleet, mitm, d, v1)
}

/// A release the pipeline never signed: built like a real one (same
/// vendor, class and stream) around the attacker's module, signed by `key`.
struct Rogue {
    envelope: Vec<u8>,
    module: Vec<u8>,
    sequence: u64,
    manifest_digest: [u8; 32],
}

fn rogue_release(key: &dyn KeySource, sequence: u64) -> Rogue {
    let module = fixture("spin");
    let envelope = sign_release(&app("6.6.6"), &module, sequence, key);
    let manifest_digest = unhex32(&gantry_signing::inspect::inspect(&envelope).expect("inspect").manifest_digest);
    Rogue { envelope, module, sequence, manifest_digest }
}

/// What a forged ticket assigns on the `app` stream.
#[derive(Clone)]
struct Target {
    manifest_digest: [u8; 32],
    sequence: u64,
    envelope: Vec<u8>,
}

impl From<&Rogue> for Target {
    fn from(r: &Rogue) -> Target {
        Target { manifest_digest: r.manifest_digest, sequence: r.sequence, envelope: r.envelope.clone() }
    }
}

impl From<(&Release, u64)> for Target {
    fn from((r, sequence): (&Release, u64)) -> Target {
        Target { manifest_digest: unhex32(&r.digest), sequence, envelope: r.envelope.clone() }
    }
}

/// The nonce a check-in carries.
fn nonce_of(checkin: &Request) -> Vec<u8> {
    let body = checkin.json().expect("check-in body");
    b64_decode(body["nonce"].as_str().expect("nonce")).expect("base64 nonce")
}

/// A check-in answer made up by whoever holds `key`: a ticket for
/// `device_id` that echoes the check-in's nonce, issued `ahead` seconds
/// from now (0: fresh, as the server would), assigning `target` to `app`,
/// and the unsigned listing of its envelope.
fn forged_answer(checkin: &Request, device_id: &str, key: &dyn KeySource, target: &Target, ahead: u64) -> Response {
    let envelope_sha256: [u8; 32] = Sha256::digest(&target.envelope).into();
    let issued_at = unix_now() + ahead;
    let ticket = Ticket {
        device_id: device_id.to_owned(),
        nonce: nonce_of(checkin),
        issued_at,
        expires_at: issued_at + 300,
        assignments: vec![TicketAssignment {
            stream: "app".into(),
            manifest_digest: target.manifest_digest,
            sequence: target.sequence,
            envelope_sha256,
        }],
    }
    .sign(key)
    .expect("sign ticket");
    let sha = hex::encode(envelope_sha256);
    Response::json_answer(
        200,
        &json!({
            "ticket": b64_encode(&ticket), "etag": "\"forged\"", "poll_after": 60,
            "assignments": [{
                "stream": "app", "manifest_digest": hex::encode(target.manifest_digest), "sequence": target.sequence,
                "envelope": { "url": format!("/blobs/sha256/{sha}"), "sha256": sha, "size": target.envelope.len() },
            }],
        }),
    )
}

fn blob_path(bytes: &[u8]) -> String {
    format!("/blobs/sha256/{}", hex::encode(Sha256::digest(bytes)))
}

/// Check-in nonces and the forged tickets that answered them.
type Sent = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// A forged server: answers every check-in of `device_id` with a ticket
/// signed by `key` assigning `target` (issued `ahead` seconds from now),
/// serves `blobs` itself and passes everything else (login, reports,
/// other blobs) to the real server. Each forged ticket is kept in `sent`.
fn forged_server(
    device_id: String,
    key: Arc<dyn KeySource>,
    (target, ahead): (Target, u64),
    blobs: Vec<Vec<u8>>,
    sent: Sent,
) -> Script {
    Box::new(move |r, up| {
        if r.is("POST", CHECKIN) {
            let answer = forged_answer(r, &device_id, key.as_ref(), &target, ahead);
            let ticket = answer.json().and_then(|j| j["ticket"].as_str().and_then(b64_decode)).expect("ticket");
            sent.lock().expect("sent").push((nonce_of(r), ticket));
            return Ok(answer);
        }
        if r.method == "GET"
            && let Some(b) = blobs.iter().find(|b| r.target == blob_path(b))
        {
            return Ok(Response::bytes_answer(b.clone()));
        }
        up.send(r)
    })
}

/// A key that claims another key's id (the `kid` a ticket carries) but
/// signs with its own private key.
struct Impostor {
    key: FileKeySource,
    claims: KeyId,
}

impl KeySource for Impostor {
    fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }
    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign(message)
    }
    fn describe(&self) -> String {
        format!("impostor of {}", self.claims)
    }
    fn key_id(&self) -> KeyId {
        self.claims
    }
}

fn fresh_key(t: KeyType) -> FileKeySource {
    FileKeySource::from_key("attacker".into(), SigningKey::generate(t))
}

#[test]
fn a_replayed_old_ticket_is_refused_and_does_not_freeze_the_device() {
    let (fleet, mitm, mut d, v1) = setup();

    // The attacker records a check-in answer: a valid ticket for this
    // device, naming v1 (what it should run: the server assigns it again).
    let recorded: Arc<Mutex<Option<Response>>> = Arc::default();
    let rec = recorded.clone();
    mitm.set_script(Box::new(move |r, up| {
        let mut r = r.clone();
        if r.is("POST", CHECKIN) {
            // Without an ETag the server answers with a ticket.
            r.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("if-none-match"));
        }
        let answer = up.send(&r)?;
        if r.is("POST", CHECKIN) && answer.status == 200 {
            *rec.lock().expect("record") = Some(answer.clone());
        }
        Ok(answer)
    }));
    let events = cycle(&mut d);
    assert!(events.contains(&AgentEvent::Ticket { assignments: 1 }), "the recorded ticket was valid: {events:?}");
    let old = recorded.lock().expect("record").clone().expect("a check-in answer with a ticket");
    let old_ticket = b64_decode(old.json().expect("json")["ticket"].as_str().expect("ticket")).expect("base64");
    let contents = decode_ticket_unverified(&old_ticket).expect("ticket");
    assert_eq!(contents.device_id(), d.id());
    assert_eq!(contents.assignment("app").map(|a| a.manifest_digest), Some(unhex32(&v1.digest)));

    // v2 is assigned; the attacker keeps the device on v1 by answering
    // every check-in with the recorded answer (freeze).
    let v2 = fleet.release(&app("2.0"), fixture("health"), 2);
    fleet.assign(&d.id(), "app", &v2);
    let replay = |old: Response| -> Script {
        Box::new(move |r, up| if r.is("POST", CHECKIN) { Ok(old.clone()) } else { up.send(r) })
    };
    mitm.set_script(replay(old.clone()));
    let (before, last) = (kept(&d), last_ticket(&d));
    for _ in 0..3 {
        let e = refused(&mut d);
        assert!(e.contains("ticket refused") && e.contains("(nonce-mismatch)") && e.contains("replayed"), "{e}");
        assert_eq!(kept(&d), before);
        assert_eq!(last_ticket(&d), last, "a refused ticket is not remembered");
    }
    assert_eq!(d.running("app"), Some(1));

    // The attack stops: the device gets v2 at once.
    mitm.set_script(pass_through());
    let events = cycle(&mut d);
    assert!(confirmed(&events, 2), "{events:?}");

    // Replayed again, the old answer would now roll the device back to v1.
    mitm.set_script(replay(old));
    let before = kept(&d);
    let e = refused(&mut d);
    assert!(e.contains("(nonce-mismatch)"), "{e}");
    assert_eq!(kept(&d), before);
    assert_eq!(d.running("app"), Some(2));
}

#[test]
fn a_ticket_for_another_device_is_refused() {
    let (fleet, mitm, mut a, v1) = setup();
    let mut b = fleet.device(1, &mitm.url());

    // The attacker watches logins (each answer names the device and its
    // bearer token) and keeps each device's latest ticket answer.
    let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let answers: Arc<Mutex<HashMap<String, Response>>> = Arc::default();
    let watch = |tokens: Arc<Mutex<HashMap<String, String>>>, answers: Arc<Mutex<HashMap<String, Response>>>| {
        Box::new(move |r: &Request, up: &Upstream| -> std::io::Result<Response> {
            let answer = up.send(r)?;
            if r.is("POST", LOGIN)
                && answer.status == 200
                && let Some(j) = answer.json()
            {
                let (id, token) = (j["device_id"].as_str().expect("id"), j["token"].as_str().expect("token"));
                tokens.lock().expect("tokens").insert(id.to_owned(), token.to_owned());
            }
            if r.is("POST", CHECKIN) && answer.status == 200 {
                let by = tokens
                    .lock()
                    .expect("tokens")
                    .iter()
                    .find(|(_, t)| Some(t.as_str()) == r.bearer())
                    .map(|x| x.0.clone());
                if let Some(id) = by {
                    answers.lock().expect("answers").insert(id, answer.clone());
                }
            }
            Ok(answer)
        }) as Script
    };
    mitm.set_script(watch(tokens.clone(), answers.clone()));
    // b runs v1 too, then gets v2; a is to stay on v1.
    fleet.assign(&b.id(), "app", &v1);
    assert!(confirmed(&cycle(&mut b), 1));
    let v2 = fleet.release(&app("2.0"), fixture("health"), 2);
    fleet.assign(&b.id(), "app", &v2);
    assert!(confirmed(&cycle(&mut b), 2));
    let b_answer = answers.lock().expect("answers").get(&b.id()).cloned().expect("b's ticket answer");
    let b_token = tokens.lock().expect("tokens").get(&b.id()).cloned().expect("b's token");
    let (before, last) = (kept(&a), last_ticket(&a));

    // 1. a's check-in is answered with b's answer: a valid ticket, for b.
    let swap = b_answer.clone();
    mitm.set_script(Box::new(move |r, up| if r.is("POST", CHECKIN) { Ok(swap.clone()) } else { up.send(r) }));
    let e = refused(&mut a);
    assert!(e.contains("ticket refused") && e.contains("another device") && e.contains("(wrong-device)"), "{e}");
    assert_eq!((kept(&a), last_ticket(&a)), (before, last));

    // 2. Worse: a's check-in (its nonce) goes to the server with b's
    // token, so the server signs b's ticket around a's nonce. Only the
    // device id in the ticket tells a it is not its own.
    let swapped: Sent = Arc::default();
    let sw = swapped.clone();
    mitm.set_script(Box::new(move |r, up| {
        if !r.is("POST", CHECKIN) {
            return up.send(r);
        }
        let mut r = r.clone();
        r.set_header("authorization", &format!("Bearer {b_token}"));
        r.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("if-none-match"));
        let answer = up.send(&r)?;
        if let Some(ticket) = answer.json().and_then(|j| j["ticket"].as_str().and_then(b64_decode)) {
            sw.lock().expect("swapped").push((nonce_of(&r), ticket));
        }
        Ok(answer)
    }));
    let before = kept(&a);
    let e = refused(&mut a);
    assert!(e.contains("(wrong-device)"), "{e}");
    assert_eq!((kept(&a), last_ticket(&a)), (before, last));
    // The ticket a refused echoed its nonce and named v2: had a not checked
    // the device id, it would have installed b's assignment.
    let (nonce, ticket) = swapped.lock().expect("swapped").pop().expect("a swapped check-in with a ticket");
    let contents = decode_ticket_unverified(&ticket).expect("ticket");
    assert_eq!((contents.device_id(), contents.nonce()), (b.id().as_str(), nonce.as_slice()));
    assert_eq!(contents.assignment("app").map(|x| x.manifest_digest), Some(unhex32(&v2.digest)));
    assert_eq!(a.running("app"), Some(1));

    // The attack stops: nothing changed for a, then v2 reaches it normally.
    mitm.set_script(pass_through());
    let events = cycle(&mut a);
    assert!(!switched(&events), "{events:?}");
    fleet.assign(&a.id(), "app", &v2);
    assert!(confirmed(&cycle(&mut a), 2));
}

#[test]
fn an_envelope_signed_by_an_unknown_key_is_refused() {
    let (fleet, mitm, mut d, _v1) = setup();
    let v2 = fleet.release(&app("2.0"), fixture("health"), 2);
    fleet.assign(&d.id(), "app", &v2);
    let attacker = fresh_key(KeyType::P256);
    let rogue = rogue_release(&attacker, 2);
    let before = kept(&d);

    // 1. On the wire: v2's envelope is swapped for the rogue one. The
    // ticket names v2's envelope digest (and the listing its size), so the
    // bytes are refused before anything parses them.
    let (v2_path, bytes) = (blob_path(&v2.envelope), rogue.envelope.clone());
    mitm.set_script(Box::new(move |r, up| {
        if r.method == "GET" && r.target == v2_path { Ok(Response::bytes_answer(bytes.clone())) } else { up.send(r) }
    }));
    let events = cycle(&mut d);
    assert!(!switched(&events), "{events:?}");
    assert!(
        skipped(&events).iter().any(|s| s.contains("do not match their digest") || s.contains("sent more than the")),
        "{events:?}"
    );
    assert_eq!(kept(&d), before);

    // 2. The man in the middle also rewrites the unsigned listing to name
    // the rogue envelope: the ticket still decides which envelope counts.
    let (rogue_env, rogue_len) = (hex::encode(Sha256::digest(&rogue.envelope)), rogue.envelope.len());
    let blobs = vec![rogue.envelope.clone(), rogue.module.clone()];
    let served = blobs.clone();
    mitm.set_script(Box::new(move |r, up| {
        if r.method == "GET"
            && let Some(b) = served.iter().find(|b| r.target == blob_path(b))
        {
            return Ok(Response::bytes_answer(b.clone()));
        }
        let mut answer = up.send(r)?;
        if r.is("POST", CHECKIN) && answer.status == 200 {
            let mut j = answer.json().expect("json");
            j["assignments"][0]["envelope"] =
                json!({ "url": format!("/blobs/sha256/{rogue_env}"), "sha256": rogue_env, "size": rogue_len });
            answer.body = j.to_string().into_bytes();
        }
        Ok(answer)
    }));
    let events = cycle(&mut d);
    assert!(!switched(&events), "{events:?}");
    assert!(skipped(&events).iter().any(|s| s.contains("does not list the envelope the ticket names")), "{events:?}");
    assert_eq!(kept(&d), before);

    // 3. With the stolen server key, the attacker's own ticket names the
    // rogue envelope: the ticket verifies, the envelope does not.
    let sent = Arc::default();
    mitm.set_script(forged_server(d.id(), fleet.server_key(), (Target::from(&rogue), 0), blobs, sent));
    let events = cycle(&mut d);
    assert!(events.contains(&AgentEvent::Ticket { assignments: 1 }), "the stolen key's ticket verifies: {events:?}");
    assert!(!switched(&events), "{events:?}");
    let reasons = skipped(&events);
    assert!(
        reasons.iter().any(|s| s.starts_with("release refused: app: the envelope does not verify: no signature by a trusted key")),
        "{events:?}"
    );
    assert_eq!(kept(&d), before);

    // 4. Signed by the server key itself: a key of the trust root, but not
    // of its release role. Refused the same way.
    let by_server = rogue_release(fleet.server_key().as_ref(), 3);
    let blobs = vec![by_server.envelope.clone(), by_server.module.clone()];
    mitm.set_script(forged_server(d.id(), fleet.server_key(), (Target::from(&by_server), 0), blobs, Arc::default()));
    let events = cycle(&mut d);
    assert!(events.contains(&AgentEvent::Ticket { assignments: 1 }), "{events:?}");
    assert!(!switched(&events), "{events:?}");
    assert!(
        skipped(&events)
            .iter()
            .any(|s| s.starts_with("release refused") && s.contains("no signature by a trusted key")),
        "{events:?}"
    );
    assert_eq!(kept(&d), before);

    // 5. The stolen key's ticket is dated a month ahead: once accepted, a
    // device that remembered that date would refuse every real ticket as
    // stale, frozen for good after the attack.
    let blobs = vec![rogue.envelope.clone(), rogue.module.clone()];
    let month = 30 * 24 * 3600;
    mitm.set_script(forged_server(d.id(), fleet.server_key(), (Target::from(&rogue), month), blobs, Arc::default()));
    let events = cycle(&mut d);
    assert!(!switched(&events), "{events:?}");
    assert!(skipped(&events).iter().any(|s| s.contains("no signature by a trusted key")), "{events:?}");
    assert_eq!(kept(&d), before);

    // The attack stops: v2, which the server assigned all along, installs.
    mitm.set_script(pass_through());
    let events = cycle(&mut d);
    assert!(confirmed(&events, 2), "{events:?}");
    assert_eq!(d.running("app"), Some(2));
}

#[test]
fn a_ticket_not_signed_by_the_server_role_is_refused() {
    let (fleet, mitm, mut d, _v1) = setup();
    // A genuine release, signed by the release key and on the server, but
    // assigned to no one: a forged server wants this device to run it.
    let v2 = fleet.release(&app("2.0"), fixture("health"), 2);
    let target = Target::from((&v2, 2));
    let server = fleet.server_key();
    let forgers: Vec<(&str, Arc<dyn KeySource>, &str)> = vec![
        ("an unknown Ed25519 key", Arc::new(fresh_key(KeyType::Ed25519)), "(unknown-signer)"),
        ("an unknown P-256 key", Arc::new(fresh_key(KeyType::P256)), "(unknown-signer)"),
        ("the release key (trust root, release role)", fleet.release_key(), "(unknown-signer)"),
        (
            "a key claiming the server key's id",
            Arc::new(Impostor { key: fresh_key(server.public_key().key_type()), claims: server.key_id() }),
            "(signature-invalid)",
        ),
    ];
    let (before, last) = (kept(&d), last_ticket(&d));
    for (who, key, code) in forgers {
        let sent: Sent = Arc::default();
        mitm.set_script(forged_server(d.id(), key, (target.clone(), 0), Vec::new(), sent.clone()));
        let e = refused(&mut d);
        assert!(e.contains("ticket refused") && e.contains(code), "{who}: {e}");
        assert_eq!((kept(&d), last_ticket(&d)), (before.clone(), last), "{who}");
        // Everything but the signer was right: this device, its nonce,
        // fresh, and a release that verifies.
        let (nonce, ticket) = sent.lock().expect("sent").pop().expect("a forged ticket");
        let c = decode_ticket_unverified(&ticket).expect("ticket");
        assert_eq!((c.device_id(), c.nonce()), (d.id().as_str(), nonce.as_slice()), "{who}");
    }

    // The attack stops: the server still assigns v1, nothing changes...
    mitm.set_script(pass_through());
    let events = cycle(&mut d);
    assert!(!switched(&events), "{events:?}");
    assert_eq!(d.running("app"), Some(1));
    // ...until an operator assigns v2.
    fleet.assign(&d.id(), "app", &v2);
    assert!(confirmed(&cycle(&mut d), 2));

    // Control: the same forged answer signed by the real server key is
    // accepted (release signature and ticket agree), so the refusals
    // above were the signer check and nothing else.
    let v3 = fleet.release(&app("3.0"), fixture("health"), 3);
    mitm.set_script(forged_server(d.id(), server, (Target::from((&v3, 3)), 0), Vec::new(), Arc::default()));
    assert!(confirmed(&cycle(&mut d), 3));
}
