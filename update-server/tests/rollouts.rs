//! Staged rollouts against a real server, on SQLite and PostgreSQL: stages
//! advance on confirmed installs, a failing release halts by itself and
//! gives the devices their previous release back, pause / resume / cancel.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestDevice, TestServer, release};
use serde_json::{Value, json};

async fn fleet(s: &TestServer, n: usize) -> Vec<TestDevice> {
    let mut devices = Vec::new();
    for i in 0..n {
        let mut d = s.preauthorized_device(&format!("dev-{i:02}")).await;
        d.login(s).await;
        devices.push(d);
    }
    devices
}

/// What a device's ticket assigns it on `stream`, as hex.
async fn assigned(s: &TestServer, d: &TestDevice, stream: &str) -> Option<String> {
    let nonce = [0x33u8; 16];
    let r = d.checkin(s, &nonce, None, json!([])).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let ticket = B64.decode(body["ticket"].as_str().unwrap()).unwrap();
    let server = [s.server_key()];
    let t = common::verify(&ticket, &server, &d.id, &nonce);
    t.assignment(stream).map(|a| hex::encode(a.manifest_digest))
}

async fn report(s: &TestServer, d: &TestDevice, stream: &str, digest: &str, state: &str) {
    let body = json!({"stream": stream, "manifest_digest": digest, "state": state});
    assert_eq!(s.post("/api/v1/device/reports", d.token(), body).await.status(), 204);
}

async fn upload(s: &TestServer, name: &str, seq: u64) -> String {
    let (status, body) = s.upload_release(&release(name, seq), &s.release_key).await;
    assert_eq!(status, 201, "{body}");
    body["manifest_digest"].as_str().unwrap().to_owned()
}

async fn rollout(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/api/v1/rollouts/{id}"), &s.admin).await.json().await.unwrap()
}

async fn a_rollout_advances_stage_by_stage(s: &TestServer) {
    let devices = fleet(s, 10).await;
    let v1 = upload(s, "app", 1).await;
    let r = s
        .post(
            "/api/v1/rollouts",
            &s.admin,
            json!({"manifest_digest": v1, "group": "lab", "stages": [20, 60, 100], "success_threshold": 100, "error_threshold": 50}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "running");
    assert_eq!(created["progress"], json!({"targeted": 10, "assigned": 2, "installed": 0, "failed": 0, "stuck": 0}));
    let per_stage: Vec<i64> =
        created["stage_devices"].as_array().unwrap().iter().map(|s| s["devices"].as_i64().unwrap()).collect();
    assert_eq!(per_stage, [2, 4, 4]);

    let mut reported = std::collections::BTreeSet::new();
    for (stage, expected) in [(0, 2), (1, 6), (2, 10)] {
        let mut have = Vec::new();
        for d in &devices {
            if assigned(s, d, "app").await.as_deref() == Some(v1.as_str()) {
                have.push(d);
            }
        }
        assert_eq!(have.len(), expected, "stage {stage}");
        assert_eq!(rollout(s, &id).await["current_stage"], stage);
        // Confirming all but the last keeps the stage; the last moves it.
        for d in have {
            if reported.insert(d.id.clone()) {
                report(s, d, "app", &v1, "installed").await;
            }
        }
    }
    let done = rollout(s, &id).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["progress"]["installed"], 10);
    // Installed state is what devices confirmed.
    let d: Value = s.get("/api/v1/devices/dev-00", &s.admin).await.json().await.unwrap();
    assert_eq!(d["installed"][0]["manifest_digest"], v1.as_str());
}
on_both_backends!(a_rollout_advances_stage_by_stage);

async fn a_failing_release_halts_its_rollout(s: &TestServer) {
    let devices = fleet(s, 10).await;
    let v1 = upload(s, "app", 1).await;
    let v2 = upload(s, "app", 2).await;
    for d in &devices {
        let r = s
            .put_json(&format!("/api/v1/devices/{}/assignments/app", d.id), &s.admin, json!({"manifest_digest": v1}))
            .await;
        assert_eq!(r.status(), 204);
    }
    let r = s
        .post(
            "/api/v1/rollouts",
            &s.admin,
            json!({"manifest_digest": v2, "group": "lab", "stages": [20, 100], "success_threshold": 100, "error_threshold": 50}),
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut on_v2 = Vec::new();
    for d in &devices {
        if assigned(s, d, "app").await.as_deref() == Some(v2.as_str()) {
            on_v2.push(d);
        }
    }
    assert_eq!(on_v2.len(), 2);
    // The first device's health check fails and it reverts: 1 of 2 = 50 %.
    report(s, on_v2[0], "app", &v2, "reverted").await;
    let halted = rollout(s, &id).await;
    assert_eq!(halted["state"], "halted", "{halted}");
    assert_eq!(halted["current_stage"], 0);
    // Every device is back on (or never left) v1; nobody else got v2.
    for d in &devices {
        assert_eq!(assigned(s, d, "app").await.as_deref(), Some(v1.as_str()), "{}", d.id);
    }
    // A halted rollout cannot be resumed, only cancelled.
    let r = s.post(&format!("/api/v1/rollouts/{id}/resume"), &s.admin, json!({})).await;
    assert_eq!(r.status(), 409);
    let r = s.post(&format!("/api/v1/rollouts/{id}/cancel"), &s.admin, json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(rollout(s, &id).await["state"], "cancelled");
    let listed: Value = s.get("/api/v1/rollouts?state=cancelled", &s.admin).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
}
on_both_backends!(a_failing_release_halts_its_rollout);

async fn rollouts_pause_resume_and_need_the_role(s: &TestServer) {
    let devices = fleet(s, 4).await;
    let v1 = upload(s, "app", 1).await;
    let auditor = s.token("auditor").await;
    let body = json!({"manifest_digest": v1, "group": "lab", "stages": [50, 100]});
    assert_eq!(s.post("/api/v1/rollouts", &auditor, body.clone()).await.status(), 403);
    let r = s.post("/api/v1/rollouts", &s.admin, json!({"manifest_digest": v1, "stages": [100]})).await;
    assert_eq!(r.status(), 400, "a rollout needs a target");
    let r =
        s.post("/api/v1/rollouts", &s.admin, json!({"manifest_digest": v1, "group": "lab", "stages": [60, 50]})).await;
    assert_eq!(r.status(), 400);
    let r = s.post("/api/v1/rollouts", &s.admin, json!({"manifest_digest": v1, "group": "nobody"})).await;
    assert_eq!(r.status(), 422);
    let id = s.post("/api/v1/rollouts", &s.admin, body).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.post(&format!("/api/v1/rollouts/{id}/pause"), &auditor, json!({})).await.status(), 403);
    assert_eq!(s.post(&format!("/api/v1/rollouts/{id}/pause"), &s.admin, json!({})).await.status(), 200);
    // Confirmations while paused do not move it.
    for d in &devices {
        if assigned(s, d, "app").await.is_some() {
            report(s, d, "app", &v1, "installed").await;
        }
    }
    assert_eq!(rollout(s, &id).await["current_stage"], 0);
    // Resumed: the confirmations count, the next stage starts.
    let resumed: Value =
        s.post(&format!("/api/v1/rollouts/{id}/resume"), &s.admin, json!({})).await.json().await.unwrap();
    assert_eq!(resumed["current_stage"], 1);
    assert_eq!(resumed["progress"]["assigned"], 4);
    assert_eq!(s.post(&format!("/api/v1/rollouts/{id}/explode"), &s.admin, json!({})).await.status(), 404);
}
on_both_backends!(rollouts_pause_resume_and_need_the_role);
