//! What the outside attack on the server found (issue 14), each as a
//! regression test, on SQLite and PostgreSQL: enrollment that revealed
//! which ids exist and let disabled devices back in, enrollment tokens
//! that could be neither listed nor revoked, API tokens that never expire,
//! unbounded report rows, releases going backwards or to no device's
//! class, rollouts that never counted devices stuck mid-update, numbers
//! above 2^63 that wrapped.
//!
//! The error codes themselves are checked against openapi.json in
//! `error_contract.rs`; the secrets, logs and shutdown in `cli.rs`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Backend, TestDevice, TestServer, class_hex, release, release_for, vendor_hex};
use gantry_keys::KeySource as _;
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_server::Config;
use serde_json::{Value, json};

/// Runs `$name(backend)` on SQLite and on PostgreSQL.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    };
}

async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
    TestServer::start_with(backend, tweak, true).await
}

fn enroll_body(d: &TestDevice, token: &str, challenge: &[u8]) -> Value {
    json!({
        "device_id": d.id,
        "public_key": d.key.public_key().to_spki_pem(),
        "enrollment_token": token,
        "challenge": B64.encode(challenge),
        "proof": d.proof(challenge, &d.key),
    })
}

async fn enroll(s: &TestServer, d: &TestDevice, token: &str) -> (u16, Value) {
    let c = d.challenge(s).await;
    let r = s.http.post(s.url("/api/v1/device/enroll")).json(&enroll_body(d, token, &c)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn enrollment_token(s: &TestServer, body: Value) -> (String, String) {
    let r = s.post("/api/v1/enrollment-tokens", &s.admin, body).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (v["id"].as_str().unwrap().to_owned(), v["token"].as_str().unwrap().to_owned())
}

async fn enrollment_tells_nothing_without_a_token(backend: Backend) {
    let Some(s) = start(backend, |_| {}).await else { return };
    let enrolled = s.preauthorized_device("gw-1").await;
    let stranger = TestDevice::new("gw-2");
    // With a made-up token: the same answer for an enrolled id (with its own
    // key) and an unknown one, so ids cannot be enumerated.
    let a = enroll(&s, &enrolled, "gen_made_up").await;
    let b = enroll(&s, &stranger, "gen_made_up").await;
    assert_eq!(a.0, 403);
    assert_eq!(a, b);
    // Someone else's key on an enrolled id, made-up token: the same again.
    let impostor = TestDevice { id: "gw-1".into(), ..TestDevice::new("x") };
    assert_eq!(enroll(&s, &impostor, "gen_made_up").await, a);

    // A disabled device does not get back in with its own key, whatever
    // the token.
    let (_, token) = enrollment_token(&s, json!({"uses": 3})).await;
    let r = s.http.patch(s.url("/api/v1/devices/gw-1")).bearer_auth(&s.admin).json(&json!({"disabled": true}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(enroll(&s, &enrolled, "gen_made_up").await, a);
    let (status, body) = enroll(&s, &enrolled, &token).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    // With a valid token, an enrolled id with another key is a conflict.
    let (status, body) = enroll(&s, &impostor, &token).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("device-exists")), "{body}");
    // A new device enrolls; enrolling again with the same key (a retry) is
    // a login, even once the token is used up.
    let (_, single) = enrollment_token(&s, json!({"uses": 1})).await;
    assert_eq!(enroll(&s, &stranger, &single).await.0, 201);
    assert_eq!(enroll(&s, &stranger, &single).await.0, 200);
    assert_eq!(enroll(&s, &TestDevice::new("gw-3"), &single).await.0, 403, "used up");
    s.stop().await;
}
both!(enrollment_tells_nothing_without_a_token);

async fn enrollment_tokens_are_listed_revoked_and_bounded(backend: Backend) {
    let Some(s) = start(backend, |c| {
        c.enrollment.max_uses = 50;
        c.enrollment.max_lifetime = gantry_server::config::Span(Duration::from_secs(7 * 86400));
    })
    .await
    else {
        return;
    };
    let (id, token) = enrollment_token(&s, json!({"uses": 50, "expires_in": "7d", "groups": ["lab"]})).await;
    for too_much in [json!({"uses": 51}), json!({"uses": 0}), json!({"expires_in": "8d"}), json!({"expires_in": "0s"})]
    {
        let r = s.post("/api/v1/enrollment-tokens", &s.admin, too_much.clone()).await;
        assert_eq!(r.status(), 400, "{too_much}");
    }
    let listed: Value = s.get("/api/v1/enrollment-tokens", &s.admin).await.json().await.unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["uses_left"], 50);
    assert_eq!(listed[0]["groups"], json!(["lab"]));
    assert!(listed[0]["revoked_at"].is_null());
    assert!(!listed[0].to_string().contains(&token), "the secret is never listed");
    assert_eq!(enroll(&s, &TestDevice::new("a"), &token).await.0, 201);

    let revoke = |id: String| s.http.delete(s.url(&format!("/api/v1/enrollment-tokens/{id}"))).bearer_auth(&s.admin);
    assert_eq!(revoke(id.clone()).send().await.unwrap().status(), 204);
    assert_eq!(revoke(id.clone()).send().await.unwrap().status(), 404, "once");
    assert_eq!(enroll(&s, &TestDevice::new("b"), &token).await.0, 403, "revoked");
    let listed: Value = s.get("/api/v1/enrollment-tokens", &s.admin).await.json().await.unwrap();
    assert_eq!(listed[0]["uses_left"], 49);
    assert!(listed[0]["revoked_at"].is_i64());
    s.stop().await;
}
both!(enrollment_tokens_are_listed_revoked_and_bounded);

async fn api_tokens_may_expire(backend: Backend) {
    let Some(s) = start(backend, |_| {}).await else { return };
    let r = s.post("/api/v1/tokens", &s.admin, json!({"name": "ci", "role": "auditor", "expires_in": "1s"})).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(created["expires_at"].as_i64().unwrap() > created["created_at"].as_i64().unwrap());
    assert_eq!(s.get("/api/v1/devices", &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get("/api/v1/devices", &token).await.status(), 401, "expired");
    // Without one, a token lives until revoked.
    let r = s.post("/api/v1/tokens", &s.admin, json!({"name": "ops", "role": "auditor"})).await;
    assert!(r.json::<Value>().await.unwrap()["expires_at"].is_null());
    s.stop().await;
}
both!(api_tokens_may_expire);

async fn report_rows_are_capped_per_device(backend: Backend) {
    let Some(s) = start(backend, |c| c.reports.max_per_device = 5).await else { return };
    let mut d = s.preauthorized_device("chatty").await;
    d.login(&s).await;
    for p in 0..8 {
        let body = json!({"stream": "app", "manifest_digest": "ab".repeat(32), "state": "downloading", "progress": p});
        assert_eq!(s.post("/api/v1/device/reports", d.token(), body).await.status(), 204);
    }
    let kept: Value = s.get("/api/v1/devices/chatty/reports?limit=100", &s.admin).await.json().await.unwrap();
    let progress: Vec<i64> = kept.as_array().unwrap().iter().map(|r| r["progress"].as_i64().unwrap()).collect();
    assert_eq!(progress, [7, 6, 5, 4, 3], "the newest five, newest first");
    // Retention by age deletes the rest.
    let store = &s.running.as_ref().unwrap().state.store;
    assert_eq!(store.delete_reports_before(gantry_server::store::now() + 1).await.unwrap(), 5);
    let kept: Value = s.get("/api/v1/devices/chatty/reports", &s.admin).await.json().await.unwrap();
    assert_eq!(kept, json!([]));
    s.stop().await;
}
both!(report_rows_are_capped_per_device);

async fn checkin(s: &TestServer, d: &TestDevice, class: &str) {
    let body = json!({"nonce": B64.encode([9u8; 16]), "vendor_id": vendor_hex(), "class_id": class_hex(class)});
    let r = s.http.post(s.url("/api/v1/device/checkin")).bearer_auth(d.token()).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn releases_go_forward_and_to_their_class(backend: Backend) {
    let Some(s) = start(backend, |_| {}).await else { return };
    // No device has said its class yet: accepted, with a warning.
    let (status, v5) = s.upload_release(&release("app", 5), &s.release_key).await;
    assert_eq!(status, 201);
    let warnings = v5["warnings"].as_array().unwrap();
    assert!(warnings[0].as_str().unwrap().contains(&class_hex("gateway")), "{v5}");
    // Lower and equal sequence numbers are refused at upload, naming the
    // newer release; the same release again is fine.
    for seq in [4, 5] {
        let (status, body) = s.upload_release(&release("app", seq), &s.release_key).await;
        if seq == 5 {
            assert_eq!(status, 200, "the same release: {body}");
            continue;
        }
        assert_eq!((status, body["error"].as_str()), (409, Some("sequence-not-newer")), "{body}");
        assert!(body["message"].as_str().unwrap().contains(v5["manifest_digest"].as_str().unwrap()));
    }
    // Another class has its own sequence: a sensor's release 1 is fine.
    let (status, sensor) = s.upload_release(&release_for("app", 1, "sensor"), &s.release_key).await;
    assert_eq!(status, 201, "{sensor}");

    let mut gw = s.preauthorized_device("gw-1").await;
    gw.login(&s).await;
    checkin(&s, &gw, "gateway").await;
    let device: Value = s.get("/api/v1/devices/gw-1", &s.admin).await.json().await.unwrap();
    assert_eq!(device["class_id"], class_hex("gateway").as_str());
    let (status, v6) = s.upload_release(&release("app", 6), &s.release_key).await;
    assert_eq!(status, 201);
    assert!(v6.get("warnings").is_none(), "a device of its class exists: {v6}");
    // Deploying the sensor's release to a gateway is refused; its own is not.
    let assign = |d: &Value| json!({"manifest_digest": d["manifest_digest"]});
    let r = s.put_json("/api/v1/devices/gw-1/assignments/app", &s.admin, assign(&sensor)).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "wrong-class");
    assert_eq!(s.put_json("/api/v1/devices/gw-1/assignments/app", &s.admin, assign(&v6)).await.status(), 204);
    // A rollout of the sensor's release to the lab finds no device of its class.
    let r = s.post("/api/v1/rollouts", &s.admin, json!({"manifest_digest": sensor["manifest_digest"], "group": "lab"}));
    let r = r.await;
    assert_eq!(r.status(), 422);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("class"));
    s.stop().await;
}
both!(releases_go_forward_and_to_their_class);

async fn a_device_stuck_mid_update_counts_as_failed(backend: Backend) {
    let Some(s) =
        start(backend, |c| c.rollouts.stuck_after = gantry_server::config::Span(Duration::from_secs(1))).await
    else {
        return;
    };
    let mut d = s.preauthorized_device("hangs").await;
    d.login(&s).await;
    let (_, v1) = s.upload_release(&release("app", 1), &s.release_key).await;
    let digest = v1["manifest_digest"].as_str().unwrap().to_owned();
    let r = s
        .post(
            "/api/v1/rollouts",
            &s.admin,
            json!({"manifest_digest": digest, "group": "lab", "stages": [100], "error_threshold": 50}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let body = json!({"stream": "app", "manifest_digest": digest, "state": "installing", "progress": 40});
    assert_eq!(s.post("/api/v1/device/reports", d.token(), body).await.status(), 204);
    let rollout: Value = s.get(&format!("/api/v1/rollouts/{id}"), &s.admin).await.json().await.unwrap();
    assert_eq!(rollout["stage_devices"][0]["updating"], 1, "{rollout}");
    // Then silence: past stuck_after, the background evaluation (every 5 s)
    // counts it as failed and halts the rollout.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let rollout = loop {
        let r: Value = s.get(&format!("/api/v1/rollouts/{id}"), &s.admin).await.json().await.unwrap();
        if r["state"] == "halted" || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(rollout["state"], "halted", "{rollout}");
    assert_eq!(rollout["progress"]["stuck"], 1);
    assert_eq!(rollout["progress"]["failed"], 1);
    assert_eq!(rollout["stage_devices"][0]["stuck"], 1);
    s.stop().await;
}
both!(a_device_stuck_mid_update_counts_as_failed);

async fn numbers_above_2_63_are_refused_not_wrapped(backend: Backend) {
    let Some(s) = start(backend, |_| {}).await else { return };
    let root = TrustRoot::new(
        (1u64 << 63) + 1,
        u64::MAX / 2,
        &[
            (Role::Root, vec![s.root_key.public_key().clone()], 1),
            (Role::Server, vec![s.server_key()], 1),
            (Role::Release, vec![s.release_key.public_key().clone()], 1),
        ],
    )
    .unwrap();
    let mut doc = SignedTrustRoot::new(root).unwrap();
    doc.sign_with(&s.root_key).unwrap();
    let r = s.put_bytes("/api/v1/trust-root", &s.admin, doc.to_bytes()).await;
    assert_eq!(r.status(), 422);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("2^63"));
    let info: Value = s.get("/api/v1/server", &s.admin).await.json().await.unwrap();
    assert_eq!(info["trust_root_version"], 1, "still the first root, not a negative one");
    // The largest storable sequence is fine and listed as it is.
    let top = i64::MAX as u64;
    let (status, body) = s.upload_release(&release("app", top), &s.release_key).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sequence"].as_u64(), Some(top));
    let (status, body) = s.upload_release(&release("big", top + 1), &s.release_key).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("sequence-too-large")), "{body}");
    s.stop().await;
}
both!(numbers_above_2_63_are_refused_not_wrapped);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_live_on_an_address_of_their_own() {
    let Some(s) = start(Backend::Sqlite, |c| c.metrics.listen = Some("127.0.0.1:0".parse().unwrap())).await else {
        return;
    };
    let metrics = s.running.as_ref().unwrap().metrics_addr.expect("a metrics listener");
    assert_eq!(s.http.get(s.url("/metrics")).send().await.unwrap().status(), 404, "not on the API's address");
    let r = s.http.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("gantry_checkins_total"));
    assert_eq!(s.http.get(format!("http://{metrics}/api/v1/devices")).send().await.unwrap().status(), 404);
    s.stop().await;
}

/// Reports of many devices at once all land: a report's transaction takes
/// SQLite's write lock with its first statement (one that read first could
/// not, once another writer committed, and answered 500).
async fn concurrent_reports_all_land(backend: Backend) {
    let Some(s) = start(backend, |_| {}).await else { return };
    let mut devices = Vec::new();
    for i in 0..24 {
        let mut d = s.preauthorized_device(&format!("d{i}")).await;
        d.login(&s).await;
        devices.push(d);
    }
    for round in 0..3 {
        let sends = devices.iter().map(|d| {
            let body =
                json!({"stream": format!("app{round}"), "manifest_digest": "ab".repeat(32), "state": "installed"});
            s.post("/api/v1/device/reports", d.token(), body)
        });
        let statuses: Vec<u16> =
            futures_util::future::join_all(sends).await.iter().map(|r| r.status().as_u16()).collect();
        assert!(statuses.iter().all(|&st| st == 204), "round {round}: {statuses:?}");
    }
    s.stop().await;
}
both!(concurrent_reports_all_land);
