//! Rotating the trust root through the operator API, on SQLite and
//! PostgreSQL: a successor needs a threshold of the old root keys *and* of
//! its own, the version must grow, and once it is installed releases are
//! verified under its release role only.

mod common;

use common::{TestServer, key, release};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{FileKeySource, KeySource, KeyType};
use serde_json::Value;

/// A trust root `version` with `root` as its root key and `release` as its
/// release key (the server's key kept), signed by `signers`.
fn successor(
    s: &TestServer,
    version: u64,
    root: &FileKeySource,
    release: &FileKeySource,
    signers: &[&dyn KeySource],
) -> Vec<u8> {
    let r = TrustRoot::new(
        version,
        u64::MAX / 2,
        &[
            (Role::Root, vec![root.public_key().clone()], 1),
            (Role::Server, vec![s.server_key()], 1),
            (Role::Release, vec![release.public_key().clone()], 1),
        ],
    )
    .unwrap();
    let mut doc = SignedTrustRoot::new(r).unwrap();
    for k in signers {
        doc.sign_with(*k).unwrap();
    }
    doc.to_bytes()
}

async fn put(s: &TestServer, doc: Vec<u8>) -> (u16, Value) {
    let r = s.put_bytes("/api/v1/trust-root", &s.admin, doc).await;
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn installed_version(s: &TestServer) -> Value {
    let info: Value = s.get("/api/v1/server", &s.admin).await.json().await.unwrap();
    info["trust_root_version"].clone()
}

async fn the_trust_root_rotates_through_the_api(s: &TestServer) {
    // The harness installed version 1 with `root_key` and `release_key`.
    assert_eq!(installed_version(s).await, 1);
    let v1 = s.get("/api/v1/trust-root", &s.admin).await.bytes().await.unwrap().to_vec();
    let v1_doc = v1.clone();
    let (new_root, new_release) = (key(KeyType::Ed25519), key(KeyType::P256));

    // Signed by the new root key alone: the old root never agreed.
    let (status, body) = put(s, successor(s, 2, &new_root, &new_release, &[&new_root])).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("trust-root-refused")), "{body}");
    // By the old root key alone: the new keys never proved possession.
    let (status, body) = put(s, successor(s, 2, &new_root, &new_release, &[&s.root_key])).await;
    assert_eq!(status, 422, "{body}");
    // An operator who is not an admin cannot rotate at all.
    let operator = s.token("operator").await;
    let both = successor(s, 2, &new_root, &new_release, &[&s.root_key, &new_root]);
    let r = s.put_bytes("/api/v1/trust-root", &operator, both.clone()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(installed_version(s).await, 1, "a refused rotation changed the root");

    // Both: installed.
    let (status, body) = put(s, both.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["version"].as_u64(), body["server_key_in_trust_root"].as_bool()), (Some(2), Some(true)));
    assert_eq!(installed_version(s).await, 2);

    // No way back: version 1 again, or version 2 once more, are refused.
    assert_eq!(put(s, v1).await.0, 422);
    assert_eq!(put(s, both).await.0, 422);
    // The old root key can no longer sign a successor by itself.
    let (status, _) = put(s, successor(s, 3, &s.root_key, &s.release_key, &[&s.root_key])).await;
    assert_eq!(status, 422);
    assert_eq!(installed_version(s).await, 2);

    // Releases now verify under the new release role only.
    let (status, body) = s.upload_release(&release("app", 1), &s.release_key).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("unknown-signer")), "{body}");
    let (status, body) = s.upload_release(&release("app", 2), &new_release).await;
    assert_eq!(status, 201, "{body}");

    // A device that holds version 1 is sent version 2 at its next
    // check-in, even when its desired state did not change (no 304).
    let mut device = s.preauthorized_device("rotating-device").await;
    device.login(s).await;
    let checkin = |held: Option<u64>, etag: Option<String>| {
        let mut body = serde_json::json!({"nonce": "AAAAAAAAAAAAAAAAAAAAAA==", "inventory": []});
        if let Some(v) = held {
            body["trust_root_version"] = v.into();
        }
        let mut req = s.http.post(s.url("/api/v1/device/checkin")).bearer_auth(device.token()).json(&body);
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send()
    };
    let r = checkin(Some(2), None).await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert!(body.get("trust_roots").is_none(), "nothing newer than 2: {body}");
    assert_eq!(checkin(Some(2), Some(etag.clone())).await.unwrap().status(), 304);
    assert_eq!(checkin(None, Some(etag.clone())).await.unwrap().status(), 304, "an agent that does not say");
    let r = checkin(Some(1), Some(etag)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let sent: Vec<Vec<u8>> = body["trust_roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(sent.len(), 1);
    let held = SignedTrustRoot::from_bytes(&v1_doc).unwrap().verify_signatures_only().unwrap();
    let next = held.verify_successors(&[SignedTrustRoot::from_bytes(&sent[0]).unwrap()], 0).unwrap();
    assert_eq!(next.root().version, 2, "the device accepts it as a successor of what it holds");
}
on_both_backends!(the_trust_root_rotates_through_the_api);
