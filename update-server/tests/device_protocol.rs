//! The device protocol end to end against a real server, on SQLite and on
//! PostgreSQL: login, check-in (304 and tickets), blobs, reports.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestDevice, TestServer, release, sha256, verify};
use gantry_keys::KeySource as _;
use gantry_signing::ticket::{TicketError, TicketPolicy, verify_ticket};
use gantry_signing::{Policy, verify as verify_release};
use serde_json::{Value, json};

async fn metric(s: &TestServer, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in {text}"))
}

async fn a_release_reaches_a_device(s: &TestServer) {
    let mut dev = s.preauthorized_device("dev-1").await;
    dev.login(s).await;
    let server = [s.server_key()];

    // Nothing assigned yet: a ticket with no assignments.
    let nonce1 = [1u8; 16];
    let r = dev.checkin(s, &nonce1, None, json!([])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["gantry-poll-after"], "300");
    let body: Value = r.json().await.unwrap();
    let ticket = B64.decode(body["ticket"].as_str().unwrap()).unwrap();
    assert_eq!(verify(&ticket, &server, "dev-1", &nonce1).assignments().count(), 0);
    let empty_etag = body["etag"].as_str().unwrap().to_owned();

    // Same desired state, same inventory: 304, from memory.
    let writes = metric(s, "gantry_inventory_writes_total").await;
    for i in 0..5u8 {
        let r = dev.checkin(s, &[i + 10; 16], Some(&empty_etag), json!([])).await;
        assert_eq!(r.status(), 304);
        assert_eq!(r.headers()["etag"], empty_etag.as_str());
        assert_eq!(r.headers()["gantry-poll-after"], "300");
    }
    assert_eq!(metric(s, "gantry_inventory_writes_total").await, writes, "unchanged check-ins wrote an inventory");
    assert_eq!(metric(s, "gantry_checkins_total{result=\"not-modified\"}").await, 5);
    // Last-seen is batched: not written yet (the flush runs at stop).
    let d: Value = s.get("/api/v1/devices/dev-1", &s.admin).await.json().await.unwrap();
    assert!(d["last_seen"].is_null(), "{d}");

    // A release, assigned to the device.
    let rel = release("sensor", 3);
    let (status, uploaded) = s.upload_release(&rel, &s.release_key).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(uploaded["stream"], "sensor");
    assert_eq!(uploaded["sequence"], 3);
    let digest = uploaded["manifest_digest"].as_str().unwrap().to_owned();
    let r = s.put_json("/api/v1/devices/dev-1/assignments/sensor", &s.admin, json!({"manifest_digest": digest})).await;
    assert_eq!(r.status(), 204);

    // The old ETag no longer matches: a ticket naming the release.
    let nonce2 = [2u8; 32];
    let r = dev.checkin(s, &nonce2, Some(&empty_etag), json!([])).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let ticket = B64.decode(body["ticket"].as_str().unwrap()).unwrap();
    let verified = verify(&ticket, &server, "dev-1", &nonce2);
    let a = verified.assignment("sensor").unwrap();
    assert_eq!(hex::encode(a.manifest_digest), digest);
    assert_eq!(a.sequence, 3);
    let new_etag = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(new_etag, empty_etag);

    // The device fetches the envelope the ticket names and checks both.
    let env_url = body["assignments"][0]["envelope"]["url"].as_str().unwrap();
    let envelope = s.http.get(s.url(env_url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&envelope), a.envelope_sha256);
    let anchors = [s.release_key.public_key().clone()];
    let m = verify_release(&envelope, &Policy::new(&anchors, 1)).unwrap();
    assert!(verified.authorizes("sensor", m.digest()));
    // Then the module, by the URI the verified manifest declares.
    let module = m.declared_image(0).unwrap();
    let bytes = s.http.get(s.url(module.uri.unwrap())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(Some(sha256(&bytes)), module.sha256);
    assert_eq!(bytes, rel.module);

    // The old ticket replayed to the device for its next nonce: refused.
    let policy = TicketPolicy {
        server_keys: &server,
        server_threshold: 1,
        device_id: "dev-1",
        nonce: &[3u8; 16],
        now: None,
        last_issued_at: None,
    };
    assert!(matches!(verify_ticket(&ticket, &policy), Err(TicketError::NonceMismatch)));

    // Installed: a report, and the new inventory (written once).
    let r = s
        .post(
            "/api/v1/device/reports",
            dev.token(),
            json!({"stream": "sensor", "manifest_digest": digest, "state": "installed"}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let inventory = json!([{"stream": "sensor", "manifest_digest": digest, "sequence": 3}]);
    assert_eq!(dev.checkin(s, &[4; 16], Some(&new_etag), inventory.clone()).await.status(), 304);
    assert_eq!(dev.checkin(s, &[5; 16], Some(&new_etag), inventory.clone()).await.status(), 304);
    assert_eq!(metric(s, "gantry_inventory_writes_total").await, writes + 1);
    let d: Value = s.get("/api/v1/devices/dev-1", &s.admin).await.json().await.unwrap();
    assert_eq!(d["installed"][0]["manifest_digest"], digest.as_str());
    assert_eq!(d["installed"][0]["state"], "installed");
    assert_eq!(d["assignments"][0]["stream"], "sensor");
    assert_eq!(d["inventory"], inventory);
    assert_eq!(d["groups"], json!(["lab"]));
    let reports: Value = s.get("/api/v1/devices/dev-1/reports", &s.admin).await.json().await.unwrap();
    assert_eq!(reports[0]["state"], "installed");

    // Unassigned: a new desired state again.
    let r =
        s.http.delete(s.url("/api/v1/devices/dev-1/assignments/sensor")).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(dev.checkin(s, &[6; 16], Some(&new_etag), inventory).await.status(), 200);
}
on_both_backends!(a_release_reaches_a_device);

async fn devices_enroll_with_a_token(s: &TestServer) {
    let r = s
        .post("/api/v1/enrollment-tokens", &s.admin, json!({"groups": ["field"], "tags": ["region=eu"], "uses": 1}))
        .await;
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();

    let enroll = |dev: &TestDevice, c: Vec<u8>, token: String| {
        json!({
            "device_id": dev.id,
            "public_key": B64.encode(dev.key.public_key().to_cose_key()),
            "enrollment_token": token,
            "challenge": B64.encode(&c),
            "proof": dev.proof(&c, &dev.key),
        })
    };
    let dev = TestDevice::new("field-1");
    let body = enroll(&dev, dev.challenge(s).await, token.clone());
    let r = s.http.post(s.url("/api/v1/device/enroll")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let device_token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        s.post("/api/v1/device/checkin", &device_token, json!({"nonce": B64.encode([0; 16])})).await.status(),
        200
    );
    let d: Value = s.get("/api/v1/devices/field-1", &s.admin).await.json().await.unwrap();
    assert_eq!(d["groups"], json!(["field"]));
    assert_eq!(d["tags"], json!(["region=eu"]));
    let listed: Value = s.get("/api/v1/devices?tag=region%3Deu", &s.admin).await.json().await.unwrap();
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1);

    // The same challenge twice: refused.
    let r = s.http.post(s.url("/api/v1/device/enroll")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Enrolling again with the same key (a retry): a login, no use spent.
    let again = enroll(&dev, dev.challenge(s).await, token.clone());
    assert_eq!(s.http.post(s.url("/api/v1/device/enroll")).json(&again).send().await.unwrap().status(), 200);
    // The token's single use is spent.
    let other = TestDevice::new("field-2");
    let body = enroll(&other, other.challenge(s).await, token.clone());
    let r = s.http.post(s.url("/api/v1/device/enroll")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Someone else's key for an enrolled id: conflict.
    let impostor = TestDevice::new("field-1");
    let body = enroll(&impostor, impostor.challenge(s).await, token);
    assert_eq!(s.http.post(s.url("/api/v1/device/enroll")).json(&body).send().await.unwrap().status(), 409);
}
on_both_backends!(devices_enroll_with_a_token);

async fn state_survives_a_restart(s: &TestServer) {
    // The fixture's server is replaced by a second one on the same data
    // directory and database: same key, no new admin token, same devices.
    let mut dev = s.preauthorized_device("dev-r").await;
    dev.login(s).await;
    assert_eq!(dev.checkin(s, &[9; 16], None, json!([])).await.status(), 200);
    let running = s.running.as_ref().unwrap();
    let key_id = running.server_key_id;
    let config = running.state.config.clone();
    assert_eq!(s.server_key().key_id(), key_id);
    // A second node on the same data: it must not create another admin.
    let mut second = config.clone();
    second.listen = "127.0.0.1:0".parse().unwrap();
    let node = gantry_server::start(second, std::future::pending()).await.unwrap();
    assert!(node.admin_token.is_none());
    assert_eq!(node.server_key_id, key_id);
    let base = format!("http://{}", node.addr);
    let r = s.http.get(format!("{base}/api/v1/server")).bearer_auth(&s.admin).send().await.unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["server_key_in_trust_root"], true);
    assert_eq!(info["trust_root_version"], 1);
    // The device token works on the other node too (shared HMAC key).
    let r = s
        .http
        .post(format!("{base}/api/v1/device/checkin"))
        .bearer_auth(dev.token())
        .json(&json!({"nonce": B64.encode([7; 16])}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    node.stop().await.unwrap();
    // The second node flushed its last-seen time when it stopped.
    let d: Value = s.get("/api/v1/devices/dev-r", &s.admin).await.json().await.unwrap();
    assert!(d["last_seen"].as_i64().is_some(), "{d}");
}
on_both_backends!(state_survives_a_restart);

async fn reports_and_inventories_follow_the_shared_rules(s: &TestServer) {
    use gantry_protocol::{ErrorBody, InventoryState, MAX_DETAIL, MAX_INVENTORY, Report, ReportState};
    let mut dev = s.preauthorized_device("dev-rules").await;
    dev.login(s).await;
    let digest = "ab".repeat(32);
    let refusal = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<ErrorBody>().await.expect("an error body"))
    };

    // The longest detail a device can build is one the server takes: 5,000
    // characters of 1 to 4 bytes, cut by the shared type to fit.
    let long: String = "e\u{e9}\u{20ac}\u{1f600}".repeat(1250);
    let report = Report::new("sensor", digest.clone(), ReportState::Failed).with_detail(&long);
    assert!(report.detail().unwrap().len() <= MAX_DETAIL);
    let r = s.post("/api/v1/device/reports", dev.token(), serde_json::to_value(&report).unwrap()).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let listed: Value = s.get("/api/v1/devices/dev-rules/reports", &s.admin).await.json().await.unwrap();
    assert_eq!(listed[0]["detail"], report.detail().unwrap());
    assert_eq!(listed[0]["state"], "failed");
    assert!(listed[0]["at"].is_i64() && listed[0].get("progress").is_none(), "{}", listed[0]);

    // What only a hand-made body can carry is refused, with the rule named.
    let too_long = json!({"stream": "sensor", "manifest_digest": digest, "state": "failed",
                          "detail": "x".repeat(MAX_DETAIL + 1)});
    let (status, body) = refusal(s.post("/api/v1/device/reports", dev.token(), too_long).await).await;
    assert_eq!((status, body.error.as_str()), (400, "bad-request"));
    assert!(body.message.contains("detail") && body.message.contains("1024"), "{}", body.message);
    let progress = json!({"stream": "sensor", "manifest_digest": digest, "state": "downloading", "progress": 101});
    assert_eq!(refusal(s.post("/api/v1/device/reports", dev.token(), progress).await).await.0, 400);
    // A state outside the enum, or the server's own `at`, is not a report
    // at all: refused like any body of the wrong type.
    for bad in [
        json!({"stream": "sensor", "manifest_digest": digest, "state": "exploded"}),
        json!({"stream": "sensor", "manifest_digest": digest, "state": "failed", "at": 1}),
    ] {
        let (status, body) = refusal(s.post("/api/v1/device/reports", dev.token(), bad).await).await;
        assert_eq!((status, body.error.as_str()), (422, "invalid-body"), "{}", body.message);
    }

    // Every inventory state is taken; another state, or one entry too many, is not.
    let item = |state: &str| json!({"stream": "sensor", "manifest_digest": digest, "sequence": 1, "state": state});
    let all: Vec<Value> = InventoryState::ALL.iter().map(|st| item(st.as_str())).collect();
    assert_eq!(dev.checkin(s, &[1; 16], None, Value::from(all)).await.status(), 200);
    assert_eq!(dev.checkin(s, &[2; 16], None, json!([item("active")])).await.status(), 422);
    let many = Value::from(vec![item("confirmed"); MAX_INVENTORY + 1]);
    let (status, body) = refusal(dev.checkin(s, &[3; 16], None, many).await).await;
    assert_eq!(status, 400);
    assert!(body.message.contains("at most 64"), "{}", body.message);
}
on_both_backends!(reports_and_inventories_follow_the_shared_rules);
