//! Scale-out: two server nodes on one database, as operations.md runs them
//! behind a load balancer. A device may log in, check in and report at
//! either; what an operator does at one node reaches devices at the other
//! within `cache_refresh`; a rollout driven from both advances each stage
//! once. On PostgreSQL (the scale-out database) and on SQLite (two
//! processes on one file).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestDevice, TestServer, release};
use serde_json::{Value, json};

/// A second node on the fixture's data directory and database.
async fn second_node(s: &TestServer) -> TestServer {
    let mut config = s.running.as_ref().unwrap().state.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let running = gantry_server::start(config, std::future::pending()).await.unwrap();
    assert!(running.admin_token.is_none(), "a second node made its own admin");
    TestServer {
        base: format!("http://{}", running.addr),
        running: Some(running),
        admin: s.admin.clone(),
        http: reqwest::Client::new(),
        dir: tempfile::tempdir().unwrap(),
        pg: None,
        backend: s.backend,
        release_key: common::key(gantry_keys::KeyType::P256),
        root_key: common::key(gantry_keys::KeyType::Ed25519),
    }
}

/// Logs `d` in with a challenge from `from` and the proof sent to `to`.
async fn login_across(d: &mut TestDevice, from: &TestServer, to: &TestServer) {
    let c = d.challenge(from).await;
    let body = json!({"device_id": d.id, "challenge": B64.encode(&c), "proof": d.proof(&c, &d.key)});
    let r = to.http.post(to.url("/api/v1/device/login")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    d.token = Some(r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned());
}

async fn report(node: &TestServer, d: &TestDevice, stream: &str, digest: &str) {
    let body = json!({"stream": stream, "manifest_digest": digest, "state": "installed"});
    assert_eq!(node.post("/api/v1/device/reports", d.token(), body).await.status(), 204);
}

/// The stream's digest in the ticket `node` gives `d`.
async fn assigned(node: &TestServer, d: &TestDevice, stream: &str) -> Option<String> {
    let nonce = [0x44u8; 16];
    let r = d.checkin(node, &nonce, None, json!([])).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let ticket = B64.decode(body["ticket"].as_str().unwrap()).unwrap();
    let server = [node.server_key()];
    common::verify(&ticket, &server, &d.id, &nonce).assignment(stream).map(|a| hex::encode(a.manifest_digest))
}

async fn two_nodes_serve_one_fleet(a: &TestServer) {
    let b = second_node(a).await;
    assert_eq!(a.server_key().key_id(), b.server_key().key_id(), "nodes sign tickets with different keys");

    // Challenge from A, login at B; check-ins at B, then the same ETag at A.
    let mut dev = a.preauthorized_device("node-dev").await;
    login_across(&mut dev, a, &b).await;
    let r = dev.checkin(&b, &[1; 16], None, json!([])).await;
    assert_eq!(r.status(), 200);
    let etag = r.json::<Value>().await.unwrap()["etag"].as_str().unwrap().to_owned();
    assert_eq!(dev.checkin(&b, &[2; 16], Some(&etag), json!([])).await.status(), 304);
    assert_eq!(dev.checkin(a, &[3; 16], Some(&etag), json!([])).await.status(), 304);

    // Released and assigned at A: B answers with the new ticket within
    // its cache refresh (1 s by default).
    let (status, uploaded) = a.upload_release(&release("app", 1), &a.release_key).await;
    assert_eq!(status, 201, "{uploaded}");
    let v1 = uploaded["manifest_digest"].as_str().unwrap().to_owned();
    let r = a.put_json("/api/v1/devices/node-dev/assignments/app", &a.admin, json!({"manifest_digest": v1})).await;
    assert_eq!(r.status(), 204);
    let assigned_at = Instant::now();
    loop {
        let status = dev.checkin(&b, &[4; 16], Some(&etag), json!([])).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 304);
        assert!(assigned_at.elapsed() < Duration::from_secs(5), "B never saw the assignment made at A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(assigned(&b, &dev, "app").await.as_deref(), Some(v1.as_str()));

    // Reported at B: installed, as seen from A.
    report(&b, &dev, "app", &v1).await;
    let d: Value = a.get("/api/v1/devices/node-dev", &a.admin).await.json().await.unwrap();
    assert_eq!(d["installed"][0]["manifest_digest"], v1.as_str(), "{d}");

    // A rollout created at B over 8 devices, its reports spread over both
    // nodes: each stage advances once, and it completes.
    let mut fleet = Vec::new();
    for i in 0..8 {
        let mut d = a.preauthorized_device(&format!("node-{i}")).await;
        d.login(if i % 2 == 0 { a } else { &b }).await;
        fleet.push(d);
    }
    let (status, uploaded) = b.upload_release(&release("svc", 1), &a.release_key).await;
    assert_eq!(status, 201, "{uploaded}");
    let svc = uploaded["manifest_digest"].as_str().unwrap().to_owned();
    let body = json!({"manifest_digest": svc, "group": "lab", "stages": [25, 50, 100],
                      "success_threshold": 100, "error_threshold": 50});
    let r = b.post("/api/v1/rollouts", &b.admin, body).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut reported = std::collections::BTreeSet::new();
    for (stage, expected) in [(0, 3), (1, 5), (2, 9)] {
        // The group holds node-dev too: 9 devices, stages of 3, 5 and 9.
        // A stage started through one node reaches the other's check-ins
        // at its next cache refresh.
        let started = Instant::now();
        let have = loop {
            let mut have = Vec::new();
            for (i, d) in fleet.iter().chain([&dev]).enumerate() {
                let node = if i % 2 == 0 { a } else { &b };
                if assigned(node, d, "svc").await.as_deref() == Some(svc.as_str()) {
                    have.push((i, d));
                }
            }
            if have.len() >= expected || started.elapsed() > Duration::from_secs(5) {
                break have;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(have.len(), expected, "stage {stage}");
        let r: Value = a.get(&format!("/api/v1/rollouts/{id}"), &a.admin).await.json().await.unwrap();
        assert_eq!(r["current_stage"], stage, "{r}");
        for (i, d) in have {
            if reported.insert(d.id.clone()) {
                report(if i % 2 == 0 { &b } else { a }, d, "svc", &svc).await;
            }
        }
    }
    let r: Value = b.get(&format!("/api/v1/rollouts/{id}"), &b.admin).await.json().await.unwrap();
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["progress"], json!({"targeted": 9, "assigned": 9, "installed": 9, "failed": 0, "stuck": 0}));
    b.stop().await;
}
on_both_backends!(two_nodes_serve_one_fleet);
