//! Attacks on the server's part of the protocol, each refused with a clear
//! error, on SQLite and PostgreSQL.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use common::{TestDevice, TestServer, key, release, sha256};
use gantry_keys::{KeySource as _, KeyType};
use serde_json::{Value, json};

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

async fn device_credentials_are_bound_to_their_device(s: &TestServer) {
    let mut a = s.preauthorized_device("dev-a").await;
    let b = s.preauthorized_device("dev-b").await;
    a.login(s).await;

    // Device A's key cannot log in as device B.
    let r = b.login_with(s, &a.key).await;
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    // A's token with B's id swapped in: refused (the HMAC covers the id).
    let token = a.token().to_owned();
    let forged = token.replacen(&URL_SAFE_NO_PAD.encode("dev-a"), &URL_SAFE_NO_PAD.encode("dev-b"), 1);
    let r = s.post("/api/v1/device/checkin", &forged, json!({"nonce": B64.encode([0; 16])})).await;
    assert_eq!(r.status(), 401);
    // A's token always gets A's ticket (the id comes from the token).
    let r = s.post("/api/v1/device/checkin", &token, json!({"nonce": B64.encode([0; 16])})).await;
    let ticket = B64.decode(r.json::<Value>().await.unwrap()["ticket"].as_str().unwrap()).unwrap();
    common::verify(&ticket, &[s.server_key()], "dev-a", &[0; 16]);
    // A device token is no operator token.
    assert_eq!(s.get("/api/v1/devices", &token).await.status(), 401);
    // A challenge issued for B cannot be used by A.
    let c = b.challenge(s).await;
    let body = json!({"device_id": "dev-a", "challenge": B64.encode(&c), "proof": a.proof(&c, &a.key)});
    assert_eq!(s.http.post(s.url("/api/v1/device/login")).json(&body).send().await.unwrap().status(), 401);
    // An unknown device cannot log in.
    let stranger = TestDevice::new("nobody");
    assert_eq!(stranger.login_with(s, &stranger.key).await.status(), 401);
    // A disabled device is refused at check-in and login.
    let r = s.http.patch(s.url("/api/v1/devices/dev-a")).bearer_auth(&s.admin).json(&json!({"disabled": true})).send();
    assert_eq!(r.await.unwrap().status(), 200);
    let r = s.post("/api/v1/device/checkin", &token, json!({"nonce": B64.encode([0; 16])})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(a.login_with(s, &a.key).await.status(), 401);
    // Malformed check-ins.
    let r = s.post("/api/v1/device/checkin", &token, json!({"nonce": B64.encode([0; 8])})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(s.post("/api/v1/device/checkin", "", json!({})).await.status(), 401);
}
on_both_backends!(device_credentials_are_bound_to_their_device);

async fn operator_tokens_need_the_role(s: &TestServer) {
    let auditor = s.token("auditor").await;
    let operator = s.token("operator").await;
    let releaser = s.token("release-manager").await;
    let module = b"\0asm\x01\0\0\0 x".to_vec();
    let blob = format!("/api/v1/blobs/sha256/{}", hex::encode(sha256(&module)));

    let (status, code) = error_code(s.put_bytes(&blob, &auditor, module.clone()).await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert_eq!(s.put_bytes(&blob, &operator, module.clone()).await.status(), 403);
    assert_eq!(s.put_bytes(&blob, &releaser, module.clone()).await.status(), 201);
    assert_eq!(s.post_bytes("/api/v1/releases", &operator, vec![0xa0]).await.status(), 403);
    assert_eq!(s.post("/api/v1/tokens", &releaser, json!({"name": "x", "role": "admin"})).await.status(), 403);
    assert_eq!(s.post("/api/v1/tokens", &operator, json!({"name": "x", "role": "admin"})).await.status(), 403);
    let dev = TestDevice::new("dev-x");
    let new_device = json!({"device_id": "dev-x", "public_key": dev.key.public_key().to_spki_pem()});
    assert_eq!(s.post("/api/v1/devices", &auditor, new_device.clone()).await.status(), 403);
    assert_eq!(s.post("/api/v1/devices", &releaser, new_device.clone()).await.status(), 403);
    assert_eq!(s.post("/api/v1/devices", &operator, new_device).await.status(), 201);
    let r =
        s.put_json("/api/v1/devices/dev-x/assignments/s", &auditor, json!({"manifest_digest": "00".repeat(32)})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(s.put_bytes("/api/v1/trust-root", &operator, vec![]).await.status(), 403);
    // Reading is for everyone with a token, and nobody without one.
    assert_eq!(s.get("/api/v1/devices", &auditor).await.status(), 200);
    assert_eq!(s.get("/api/v1/devices", "gop_nonsense").await.status(), 401);
    assert_eq!(s.http.get(s.url("/api/v1/devices")).send().await.unwrap().status(), 401);
    // A revoked token stops working.
    let tokens: Value = s.get("/api/v1/tokens", &s.admin).await.json().await.unwrap();
    let id =
        tokens.as_array().unwrap().iter().find(|t| t["role"] == "auditor").unwrap()["id"].as_str().unwrap().to_owned();
    let r = s.http.delete(s.url(&format!("/api/v1/tokens/{id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/api/v1/devices", &auditor).await.status(), 401);
}
on_both_backends!(operator_tokens_need_the_role);

async fn releases_that_do_not_verify_are_refused(s: &TestServer) {
    // Signed by a key the trust root does not list.
    let stranger = key(KeyType::P256);
    let (status, body) = s.upload_release(&release("app", 1), &stranger).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (422, "unknown-signer"), "{body}");
    // Signed by the root key: right document, wrong role.
    let (status, body) = s.upload_release(&release("app", 1), &s.root_key).await;
    assert_eq!(status, 422, "{body}");
    // Unsigned.
    let r = s.post_bytes("/api/v1/releases", &s.admin, release("app", 1).unsigned).await;
    assert_eq!(error_code(r).await, (422, "unsigned".into()));
    // Garbage.
    let r = s.post_bytes("/api/v1/releases", &s.admin, b"not an envelope".to_vec()).await;
    assert_eq!(r.status(), 422);
    // Tampered after signing: a byte of the signed config changed.
    let rel = release("app", 2);
    let mut signed = gantry_signing::build::add_signature(&rel.unsigned, &s.release_key).unwrap();
    let n = signed.len();
    signed[n - 3] ^= 1;
    assert_eq!(s.post_bytes("/api/v1/releases", &s.admin, signed).await.status(), 422);
    // Its payload not uploaded: 409, naming the blob.
    let rel = release("app", 3);
    let signed = gantry_signing::build::add_signature(&rel.unsigned, &s.release_key).unwrap();
    let (status, code) = error_code(s.post_bytes("/api/v1/releases", &s.admin, signed).await).await;
    assert_eq!((status, code.as_str()), (409, "missing-blobs"));
    // A blob whose bytes do not hash to its name.
    let r = s.put_bytes(&format!("/api/v1/blobs/sha256/{}", "ab".repeat(32)), &s.admin, b"other".to_vec()).await;
    assert_eq!(error_code(r).await, (422, "digest-mismatch".into()));
    assert_eq!(s.http.head(s.url(&format!("/blobs/sha256/{}", "ab".repeat(32)))).send().await.unwrap().status(), 404);
    // Endless data: a blob over the limit (64 KiB in tests).
    let big = vec![7u8; 64 * 1024 + 1];
    let r = s.put_bytes(&format!("/api/v1/blobs/sha256/{}", hex::encode(sha256(&big))), &s.admin, big).await;
    assert_eq!(r.status(), 413);
    // Nothing refused was stored; a good release still goes in, once.
    let listed: Value = s.get("/api/v1/releases", &s.admin).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0);
    let good = release("app", 4);
    assert_eq!(s.upload_release(&good, &s.release_key).await.0, 201);
    assert_eq!(s.upload_release(&good, &s.release_key).await.0, 200);
    // Assigning it to the wrong stream is refused.
    let digest =
        s.get("/api/v1/releases?stream=app", &s.admin).await.json::<Value>().await.unwrap()[0]["manifest_digest"]
            .as_str()
            .unwrap()
            .to_owned();
    s.preauthorized_device("dev-w").await;
    let r = s.put_json("/api/v1/devices/dev-w/assignments/other", &s.admin, json!({"manifest_digest": digest})).await;
    assert_eq!(error_code(r).await, (422, "wrong-stream".into()));
}
on_both_backends!(releases_that_do_not_verify_are_refused);
