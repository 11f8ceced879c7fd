//! Every error the router answers, against `openapi.json`: each probe below
//! provokes one error of one operation and checks the status and the JSON
//! `error` code it gets; then every answer is looked up in the document
//! (the operation's response for that status must list the code in its
//! `x-error-codes`), and every code the document lists must have been
//! provoked by some probe, except the few named in [`NOT_PROBED`] with the
//! reason. So docs/api.md's error table, openapi.json and the server cannot
//! drift apart.
//!
//! Three servers: `main` (defaults), `bare` (no trust root, one stream per
//! device) and `tight` (a burst of one request per limit, `/metrics` behind
//! a token), for the rate limits.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Backend, TestDevice, TestServer, class_hex, release, sha256};
use gantry_keys::{KeySource as _, KeyType};
use gantry_server::config::Rate;
use gantry_signing::build::add_signature;
use serde_json::{Value, json};

/// Codes the document lists that no probe provokes, and why.
const NOT_PROBED: &[(&str, &str, &str, &str)] = &[
    ("put", "/api/v1/blobs/sha256/{hex}", "400", "upload-interrupted"), // a client vanishing mid-body: blobs.rs tests
    ("put", "/api/v1/blobs/sha256/{hex}", "408", "timeout"),            // limits.upload_timeout: slow_clients.rs
    ("get", "/api/v1/server", "409", "trust-root-invalid"),             // an installed root that expired
    ("post", "/api/v1/releases", "409", "trust-root-invalid"),          // the same
];

/// Verifier codes (422 on `POST /api/v1/releases`) provoked by
/// gantry-signing's own tests rather than here; two of them are probed.
const VERIFIER_ONLY_IN_SIGNING: &[&str] = &[
    "algorithm-mismatch",
    "attached-payload",
    "condition-failed",
    "digest-mismatch",
    "invalid-config",
    "key-error",
    "limit-exceeded",
    "missing-identity",
    "non-canonical",
    "sequence-too-low",
    "signature-invalid",
    "threshold-not-met",
    "unknown-critical-header",
    "unsigned",
    "unsupported-command",
    "unsupported-manifest-version",
    "wrong-class",
    "wrong-tag",
    "wrong-vendor",
    "payload-mismatch",
    "unsupported-uri",
];

enum Body {
    None,
    Json(Value),
    /// Bytes with no Content-Type.
    Raw(Vec<u8>),
    /// Text sent as JSON with no Content-Type.
    Untyped(&'static str),
}

/// What the probes saw: (method, path template, status, code).
#[derive(Default)]
struct Seen(Vec<(String, String, u16, String)>);

impl Seen {
    /// Sends one request and checks it is answered `status` with `code`.
    #[allow(clippy::too_many_arguments)]
    async fn probe(
        &mut self,
        s: &TestServer,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        expect: (u16, &str),
    ) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = s.http.request(m, s.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(b) => req.body(b),
            Body::Untyped(t) => req.body(t),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let json_type =
            r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "application/json");
        let retry_after = r.headers().get("retry-after").cloned();
        let text = r.text().await.unwrap();
        if expect.0 < 400 {
            assert_eq!(status, expect.0, "{method} {path}: {text}");
            return;
        }
        let code = if method == "head" {
            expect.1.to_owned()
        } else {
            assert!(json_type, "{method} {path}: {status} is not JSON: {text:?}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text:?}"));
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: no message: {text}");
            v["error"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!((status, code.as_str()), expect, "{method} {path}: {text}");
        if status == 429 {
            let secs: u64 = retry_after.expect("429 carries Retry-After").to_str().unwrap().parse().unwrap();
            assert!(secs >= 1, "Retry-After {secs}");
        }
        self.0.push((method.to_owned(), template.to_owned(), status, code));
    }
}

fn openapi() -> Value {
    serde_json::from_str(include_str!("../openapi.json")).unwrap()
}

/// (method, template, status) → codes, from the document.
fn documented(doc: &Value) -> BTreeMap<(String, String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else { continue };
            for (status, r) in responses {
                if let Some(codes) = r.get("x-error-codes") {
                    assert!(status.starts_with('4') || status.starts_with('5'), "{method} {path} {status}");
                    let codes = codes.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
                    out.insert((method.clone(), path.clone(), status.clone()), codes);
                } else {
                    assert!(!status.starts_with('4'), "{method} {path}: {status} lists no x-error-codes");
                }
            }
        }
    }
    out
}

/// A JSON body one byte over `limits.max_json_bytes` (64 KiB): the server
/// reads it whole before refusing it, so no unread byte turns the close
/// into a reset that could eat the answer.
fn big_json() -> Value {
    let v = json!({"device_id": "x".repeat(64 * 1024 + 1 - r#"{"device_id":""}"#.len())});
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), 64 * 1024 + 1);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_documented_and_every_documented_error_happens() {
    let Some(main) = TestServer::start(Backend::Sqlite).await else { return };
    let Some(bare) = TestServer::start_with(Backend::Sqlite, |c| c.reports.max_streams_per_device = 1, false).await
    else {
        return;
    };
    let one = Rate { per_minute: 1, burst: 1 };
    let tight = TestServer::start_with(
        Backend::Sqlite,
        |c| {
            c.rate_limits.device_auth_per_source = one;
            c.rate_limits.operator_per_source = one;
            c.rate_limits.checkins_per_device = one;
            c.rate_limits.reports_per_device = one;
            c.metrics.require_token = true;
        },
        false,
    )
    .await
    .unwrap();
    let mut seen = Seen::default();
    let admin = main.admin.clone();
    let auditor = main.token("auditor").await;
    let operator = main.token("operator").await;
    let hex = |b: &[u8]| hex::encode(sha256(b));
    let digest = "ab".repeat(32);

    // ---- device API ----------------------------------------------------
    let t = "/api/v1/device/challenge";
    seen.probe(&main, "post", t, t, None, Body::Untyped("{"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(json!({})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(json!({"device_id": "bad id"})), (400, "invalid-device-id")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(big_json()), (413, "too-large")).await;
    let malformed = main.http.post(main.url(t)).header("content-type", "application/json").body("{").send();
    let r = malformed.await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad-request");
    seen.0.push(("post".into(), t.into(), 400, "bad-request".into()));

    let t = "/api/v1/device/login";
    let login = |id: &str, challenge: &str| json!({"device_id": id, "challenge": challenge, "proof": "AAAA"});
    seen.probe(&main, "post", t, t, None, Body::Json(login("bad id", "AAAA")), (400, "invalid-device-id")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(login("nobody", "AAAA")), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(json!({"device_id": "d"})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, None, Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(big_json()), (413, "too-large")).await;

    let t = "/api/v1/device/enroll";
    let stranger = TestDevice::new("stranger");
    let pem = stranger.key.public_key().to_spki_pem();
    let c = stranger.challenge(&main).await;
    let enroll = |id: &str, key: &str, token: &str, c: &[u8], proof: String| json!({"device_id": id, "public_key": key, "enrollment_token": token, "challenge": B64.encode(c), "proof": proof});
    let body = enroll("stranger", "AAAA", "gen_x", &c, stranger.proof(&c, &stranger.key));
    seen.probe(&main, "post", t, t, None, Body::Json(body), (400, "invalid-public-key")).await;
    let body = enroll("bad id", &pem, "gen_x", &c, stranger.proof(&c, &stranger.key));
    seen.probe(&main, "post", t, t, None, Body::Json(body), (400, "invalid-device-id")).await;
    let body = json!({"device_id": "stranger", "public_key": pem, "enrollment_token": "x", "challenge": "***", "proof": "AAAA"});
    seen.probe(&main, "post", t, t, None, Body::Json(body), (400, "bad-request")).await;
    let body = enroll("stranger", &pem, "gen_x", &c, stranger.proof(&c, &main.release_key));
    seen.probe(&main, "post", t, t, None, Body::Json(body), (401, "unauthorized")).await;
    let c = stranger.challenge(&main).await;
    let body = enroll("stranger", &pem, "gen_made_up", &c, stranger.proof(&c, &stranger.key));
    seen.probe(&main, "post", t, t, None, Body::Json(body), (403, "forbidden")).await;
    let r = main.post("/api/v1/enrollment-tokens", &admin, json!({"uses": 5})).await;
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let mut enrolled = main.preauthorized_device("enrolled").await;
    let impostor = TestDevice { id: "enrolled".into(), ..TestDevice::new("x") };
    let c = impostor.challenge(&main).await;
    let body =
        enroll("enrolled", &impostor.key.public_key().to_spki_pem(), &token, &c, impostor.proof(&c, &impostor.key));
    seen.probe(&main, "post", t, t, None, Body::Json(body), (409, "device-exists")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(json!({})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, None, Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, None, Body::Json(big_json()), (413, "too-large")).await;

    let t = "/api/v1/device/login";
    seen.probe(&main, "post", t, t, None, Body::Json(login("enrolled", "***")), (400, "bad-request")).await;
    enrolled.login(&main).await;
    let dt = enrolled.token().to_owned();
    let t = "/api/v1/device/checkin";
    let nonce = B64.encode([7u8; 16]);
    seen.probe(&main, "post", t, t, None, Body::Json(json!({"nonce": nonce})), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(json!({"nonce": "AAAA"})), (400, "bad-request")).await;
    let upper =
        json!({"nonce": nonce, "inventory": [{"stream": "a", "manifest_digest": "AB".repeat(32), "sequence": 1}]});
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(upper), (400, "bad-request")).await;
    let unknown = json!({"nonce": nonce, "extra": 1});
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(unknown), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(big_json()), (413, "too-large")).await;

    let t = "/api/v1/device/reports";
    let report = |stream: &str, state: &str| json!({"stream": stream, "manifest_digest": digest, "state": state});
    seen.probe(&main, "post", t, t, None, Body::Json(report("a", "installed")), (401, "unauthorized")).await;
    let bad = json!({"stream": "a", "manifest_digest": digest, "state": "installed", "progress": 101});
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(bad), (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(report("a", "exploded")), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(big_json()), (413, "too-large")).await;
    let mut one_stream = bare.preauthorized_device("one-stream").await;
    one_stream.login(&bare).await;
    let ot = one_stream.token().to_owned();
    seen.probe(&bare, "post", t, t, Some(&ot), Body::Json(report("a", "installed")), (204, "")).await;
    seen.probe(&bare, "post", t, t, Some(&ot), Body::Json(report("b", "failed")), (422, "too-many-streams")).await;

    // Disabled: 403 at check-in and report.
    let r = main.http.patch(main.url("/api/v1/devices/enrolled")).bearer_auth(&admin).json(&json!({"disabled": true}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    let t = "/api/v1/device/checkin";
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(json!({"nonce": nonce})), (403, "forbidden")).await;
    let t = "/api/v1/device/reports";
    seen.probe(&main, "post", t, t, Some(&dt), Body::Json(report("a", "installed")), (403, "forbidden")).await;

    // ---- blobs -----------------------------------------------------------
    let module = release("contract", 1).module;
    let blob_hex = hex(&module);
    let t = "/api/v1/blobs/sha256/{hex}";
    let p = format!("/api/v1/blobs/sha256/{blob_hex}");
    seen.probe(&main, "put", t, &p, None, Body::Raw(module.clone()), (401, "unauthorized")).await;
    seen.probe(&main, "put", t, &p, Some(&auditor), Body::Raw(module.clone()), (403, "forbidden")).await;
    seen.probe(
        &main,
        "put",
        t,
        "/api/v1/blobs/sha256/XYZ",
        Some(&admin),
        Body::Raw(module.clone()),
        (400, "bad-request"),
    )
    .await;
    seen.probe(&main, "put", t, &p, Some(&admin), Body::Raw(b"other bytes".to_vec()), (422, "digest-mismatch")).await;
    seen.probe(&main, "put", t, &p, Some(&admin), Body::Raw(vec![0; 64 * 1024 + 1]), (413, "too-large")).await;
    seen.probe(&main, "put", t, &p, Some(&admin), Body::Raw(module.clone()), (201, "")).await;
    let t = "/blobs/sha256/{hex}";
    seen.probe(&main, "get", t, "/blobs/sha256/nothex", None, Body::None, (404, "not-found")).await;
    seen.probe(&main, "head", t, &format!("/blobs/sha256/{}", "0".repeat(64)), None, Body::None, (404, "not-found"))
        .await;
    let r = main
        .http
        .get(main.url(&format!("/blobs/sha256/{blob_hex}")))
        .header("range", format!("bytes={}-", module.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], format!("bytes */{}", module.len()).as_str());
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "range-not-satisfiable");
    seen.0.push(("get".into(), t.into(), 416, "range-not-satisfiable".into()));

    // ---- tokens, trust root, server --------------------------------------
    seen.probe(&main, "get", "/api/v1/server", "/api/v1/server", None, Body::None, (401, "unauthorized")).await;
    let t = "/api/v1/tokens";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, t, Some(&operator), Body::None, (403, "forbidden")).await;
    let new = |name: &str| Body::Json(json!({"name": name, "role": "auditor"}));
    seen.probe(&main, "post", t, t, None, new("ci"), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&auditor), new("ci"), (403, "forbidden")).await;
    seen.probe(&main, "post", t, t, Some(&admin), new("ci\n2026 INFO forged"), (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&admin), new("nul\0"), (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&admin), new("bidi\u{202E}txt"), (400, "bad-request")).await;
    let god = Body::Json(json!({"name": "x", "role": "god"}));
    seen.probe(&main, "post", t, t, Some(&admin), god, (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&admin), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&admin), Body::Json(big_json()), (413, "too-large")).await;
    let t = "/api/v1/tokens/{id}";
    seen.probe(&main, "delete", t, "/api/v1/tokens/nope", None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "delete", t, "/api/v1/tokens/nope", Some(&operator), Body::None, (403, "forbidden")).await;
    seen.probe(&main, "delete", t, "/api/v1/tokens/nope", Some(&admin), Body::None, (404, "not-found")).await;

    let t = "/api/v1/trust-root";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&bare, "get", t, t, Some(&bare.admin), Body::None, (404, "not-found")).await;
    seen.probe(&main, "put", t, t, None, Body::Raw(vec![0xa0]), (401, "unauthorized")).await;
    seen.probe(&main, "put", t, t, Some(&operator), Body::Raw(vec![0xa0]), (403, "forbidden")).await;
    seen.probe(&main, "put", t, t, Some(&admin), Body::Raw(vec![0xa0]), (422, "trust-root-refused")).await;
    seen.probe(&main, "put", t, t, Some(&admin), Body::Raw(vec![0; 1024 * 1024 + 1]), (413, "too-large")).await;

    // ---- releases ---------------------------------------------------------
    let t = "/api/v1/releases";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, "/api/v1/releases?limit=many", Some(&auditor), Body::None, (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, None, Body::Raw(vec![0xa0]), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Raw(vec![0xa0]), (403, "forbidden")).await;
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(vec![0xa0]), (422, "malformed")).await;
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(vec![0; 1024 * 1024 + 1]), (413, "too-large")).await;
    let stranger_signed = add_signature(&release("contract", 1).unsigned, &common::key(KeyType::P256)).unwrap();
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(stranger_signed), (422, "unknown-signer")).await;
    let signed = |r: &common::TestRelease| add_signature(&r.unsigned, &main.release_key).unwrap();
    let missing = release("missing", 1);
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(signed(&missing)), (409, "missing-blobs")).await;
    let bare_signed = add_signature(&release("contract", 1).unsigned, &bare.release_key).unwrap();
    seen.probe(&bare, "post", t, t, Some(&bare.admin), Body::Raw(bare_signed), (409, "no-trust-root")).await;
    let (status, first) = main.upload_release(&release("contract", 5), &main.release_key).await;
    assert_eq!(status, 201, "{first}");
    let older = release("contract", 4);
    let r = main.put_bytes(&format!("/api/v1/blobs/sha256/{}", hex(&older.module)), &admin, older.module.clone()).await;
    assert_eq!(r.status(), 201);
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(signed(&older)), (409, "sequence-not-newer")).await;
    let huge = release("contract", u64::MAX);
    let r = main.put_bytes(&format!("/api/v1/blobs/sha256/{}", hex(&huge.module)), &admin, huge.module.clone()).await;
    assert_eq!(r.status(), 201);
    seen.probe(&main, "post", t, t, Some(&admin), Body::Raw(signed(&huge)), (422, "sequence-too-large")).await;
    let release_digest = first["manifest_digest"].as_str().unwrap().to_owned();
    let t = "/api/v1/releases/{digest}";
    seen.probe(&main, "get", t, &format!("/api/v1/releases/{digest}"), None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, &format!("/api/v1/releases/{digest}"), Some(&auditor), Body::None, (404, "not-found"))
        .await;

    // ---- devices ------------------------------------------------------------
    let t = "/api/v1/devices";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, "/api/v1/devices?limit=-x", Some(&auditor), Body::None, (400, "bad-request")).await;
    let dev = |id: &str, key: &str| Body::Json(json!({"device_id": id, "public_key": key}));
    seen.probe(&main, "post", t, t, None, dev("d1", &pem), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&auditor), dev("d1", &pem), (403, "forbidden")).await;
    seen.probe(&main, "post", t, t, Some(&operator), dev("bad id", &pem), (400, "invalid-device-id")).await;
    seen.probe(&main, "post", t, t, Some(&operator), dev("d1", "nope"), (400, "invalid-public-key")).await;
    let labels = Body::Json(json!({"device_id": "d1", "public_key": pem, "groups": ["a\nb"]}));
    seen.probe(&main, "post", t, t, Some(&operator), labels, (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&operator), dev("enrolled", &pem), (409, "device-exists")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Json(json!({"device_id": 1})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Json(big_json()), (413, "too-large")).await;
    let t = "/api/v1/devices/{id}";
    seen.probe(&main, "get", t, "/api/v1/devices/enrolled", None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, "/api/v1/devices/none", Some(&auditor), Body::None, (404, "not-found")).await;
    let patch = |v: Value| Body::Json(v);
    seen.probe(&main, "patch", t, "/api/v1/devices/enrolled", None, patch(json!({})), (401, "unauthorized")).await;
    seen.probe(&main, "patch", t, "/api/v1/devices/enrolled", Some(&auditor), patch(json!({})), (403, "forbidden"))
        .await;
    seen.probe(&main, "patch", t, "/api/v1/devices/none", Some(&operator), patch(json!({})), (404, "not-found")).await;
    let bad_tags = patch(json!({"tags": ["\u{1b}[31m"]}));
    seen.probe(&main, "patch", t, "/api/v1/devices/enrolled", Some(&operator), bad_tags, (400, "bad-request")).await;
    let wrong = patch(json!({"disabled": "yes"}));
    seen.probe(&main, "patch", t, "/api/v1/devices/enrolled", Some(&operator), wrong, (422, "invalid-body")).await;
    let p = "/api/v1/devices/enrolled";
    seen.probe(&main, "patch", t, p, Some(&operator), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "patch", t, p, Some(&operator), Body::Json(big_json()), (413, "too-large")).await;

    let t = "/api/v1/devices/{id}/assignments/{stream}";
    let assign = |d: &str| Body::Json(json!({"manifest_digest": d}));
    let p = "/api/v1/devices/enrolled/assignments/contract";
    seen.probe(&main, "put", t, p, None, assign(&release_digest), (401, "unauthorized")).await;
    seen.probe(&main, "put", t, p, Some(&auditor), assign(&release_digest), (403, "forbidden")).await;
    seen.probe(&main, "put", t, p, Some(&admin), assign("AB"), (400, "bad-request")).await;
    seen.probe(&main, "put", t, p, Some(&admin), assign(&digest), (404, "not-found")).await;
    let other_stream = "/api/v1/devices/enrolled/assignments/other";
    seen.probe(&main, "put", t, other_stream, Some(&admin), assign(&release_digest), (422, "wrong-stream")).await;
    seen.probe(&main, "put", t, p, Some(&admin), Body::Json(json!({})), (422, "invalid-body")).await;
    seen.probe(&main, "put", t, p, Some(&admin), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "put", t, p, Some(&admin), Body::Json(big_json()), (413, "too-large")).await;
    // A device that reported another class is refused a release of this one.
    let mut sensor = main.preauthorized_device("sensor-1").await;
    sensor.login(&main).await;
    let body = json!({"nonce": nonce, "vendor_id": common::vendor_hex(), "class_id": class_hex("sensor")});
    let r = main.http.post(main.url("/api/v1/device/checkin")).bearer_auth(sensor.token()).json(&body).send();
    assert_eq!(r.await.unwrap().status(), 200);
    let p = "/api/v1/devices/sensor-1/assignments/contract";
    seen.probe(&main, "put", t, p, Some(&admin), assign(&release_digest), (422, "wrong-class")).await;
    let t = "/api/v1/devices/{id}/assignments/{stream}";
    let p = "/api/v1/devices/sensor-1/assignments/contract";
    seen.probe(&main, "delete", t, p, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "delete", t, p, Some(&auditor), Body::None, (403, "forbidden")).await;
    seen.probe(&main, "delete", t, p, Some(&admin), Body::None, (404, "not-found")).await;
    let t = "/api/v1/devices/{id}/reports";
    seen.probe(&main, "get", t, "/api/v1/devices/x/reports", None, Body::None, (401, "unauthorized")).await;
    let p = "/api/v1/devices/x/reports?limit=lots";
    seen.probe(&main, "get", t, p, Some(&auditor), Body::None, (400, "bad-request")).await;

    // ---- enrollment tokens ------------------------------------------------
    let t = "/api/v1/enrollment-tokens";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, t, Some(&auditor), Body::None, (403, "forbidden")).await;
    let et = |v: Value| Body::Json(v);
    seen.probe(&main, "post", t, t, None, et(json!({})), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&auditor), et(json!({})), (403, "forbidden")).await;
    seen.probe(&main, "post", t, t, Some(&operator), et(json!({"uses": 1_000_000})), (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&operator), et(json!({"expires_in": "100y"})), (400, "bad-request")).await;
    seen.probe(&main, "post", t, t, Some(&operator), et(json!({"uses": "all"})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Json(big_json()), (413, "too-large")).await;
    let t = "/api/v1/enrollment-tokens/{id}";
    let p = "/api/v1/enrollment-tokens/nope";
    seen.probe(&main, "delete", t, p, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "delete", t, p, Some(&auditor), Body::None, (403, "forbidden")).await;
    seen.probe(&main, "delete", t, p, Some(&operator), Body::None, (404, "not-found")).await;

    // ---- rollouts -----------------------------------------------------------
    let t = "/api/v1/rollouts";
    seen.probe(&main, "get", t, t, None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, "/api/v1/rollouts?limit=x", Some(&auditor), Body::None, (400, "bad-request")).await;
    let ro = |v: Value| Body::Json(v);
    seen.probe(&main, "post", t, t, None, ro(json!({"manifest_digest": digest})), (401, "unauthorized")).await;
    seen.probe(&main, "post", t, t, Some(&auditor), ro(json!({"manifest_digest": digest})), (403, "forbidden")).await;
    seen.probe(&main, "post", t, t, Some(&operator), ro(json!({"manifest_digest": digest})), (400, "bad-request"))
        .await;
    let nothing = ro(json!({"manifest_digest": digest, "group": "lab"}));
    seen.probe(&main, "post", t, t, Some(&operator), nothing, (404, "not-found")).await;
    let nobody = ro(json!({"manifest_digest": release_digest, "group": "nobody-here"}));
    seen.probe(&main, "post", t, t, Some(&operator), nobody, (422, "no-devices")).await;
    seen.probe(&main, "post", t, t, Some(&operator), ro(json!({"stages": 1})), (422, "invalid-body")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Untyped("{}"), (415, "unsupported-media-type")).await;
    seen.probe(&main, "post", t, t, Some(&operator), Body::Json(big_json()), (413, "too-large")).await;
    let t = "/api/v1/rollouts/{id}";
    seen.probe(&main, "get", t, "/api/v1/rollouts/x", None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "get", t, "/api/v1/rollouts/x", Some(&auditor), Body::None, (404, "not-found")).await;
    let t = "/api/v1/rollouts/{id}/{action}";
    seen.probe(&main, "post", t, "/api/v1/rollouts/x/pause", None, Body::None, (401, "unauthorized")).await;
    seen.probe(&main, "post", t, "/api/v1/rollouts/x/pause", Some(&auditor), Body::None, (403, "forbidden")).await;
    seen.probe(&main, "post", t, "/api/v1/rollouts/x/pause", Some(&operator), Body::None, (404, "not-found")).await;
    let gateway = main.preauthorized_device("gw-1").await;
    drop(gateway);
    let r = main.post("/api/v1/rollouts", &operator, json!({"manifest_digest": release_digest, "group": "lab"})).await;
    assert_eq!(r.status(), 201);
    let rollout = r.json::<Value>().await.unwrap();
    assert_eq!(rollout["skipped_other_class"], 1, "sensor-1 reported another class: {rollout}");
    let id = rollout["id"].as_str().unwrap().to_owned();
    let resume = format!("/api/v1/rollouts/{id}/resume");
    seen.probe(&main, "post", t, &resume, Some(&operator), Body::None, (409, "rollout-state")).await;
    let explode = format!("/api/v1/rollouts/{id}/explode");
    seen.probe(&main, "post", t, &explode, Some(&operator), Body::None, (404, "not-found")).await;

    // ---- the router's own -------------------------------------------------
    let r = main.http.get(main.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"].clone()), (404, json!("not-found")));
    let r = main.http.delete(main.url("/api/v1/releases")).bearer_auth(&admin).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!((status, r.json::<Value>().await.unwrap()["error"].clone()), (405, json!("method-not-allowed")));

    // ---- rate limits: every limited operation answers 429 -----------------
    let tight_admin = tight.admin.clone();
    let first = tight.get("/api/v1/trust-root", &tight_admin).await;
    assert_eq!(first.status(), 404, "the burst of one passes");
    let operator_ops: Vec<(&str, &str, String, Body)> = vec![
        ("get", "/api/v1/server", "/api/v1/server".into(), Body::None),
        ("get", "/api/v1/tokens", "/api/v1/tokens".into(), Body::None),
        ("post", "/api/v1/tokens", "/api/v1/tokens".into(), Body::Json(json!({"name": "x", "role": "auditor"}))),
        ("delete", "/api/v1/tokens/{id}", "/api/v1/tokens/x".into(), Body::None),
        ("get", "/api/v1/trust-root", "/api/v1/trust-root".into(), Body::None),
        ("put", "/api/v1/trust-root", "/api/v1/trust-root".into(), Body::Raw(vec![0xa0])),
        ("get", "/api/v1/releases", "/api/v1/releases".into(), Body::None),
        ("post", "/api/v1/releases", "/api/v1/releases".into(), Body::Raw(vec![0xa0])),
        ("get", "/api/v1/releases/{digest}", format!("/api/v1/releases/{digest}"), Body::None),
        ("get", "/api/v1/devices", "/api/v1/devices".into(), Body::None),
        ("post", "/api/v1/devices", "/api/v1/devices".into(), Body::Json(json!({}))),
        ("get", "/api/v1/devices/{id}", "/api/v1/devices/x".into(), Body::None),
        ("patch", "/api/v1/devices/{id}", "/api/v1/devices/x".into(), Body::Json(json!({}))),
        (
            "put",
            "/api/v1/devices/{id}/assignments/{stream}",
            "/api/v1/devices/x/assignments/s".into(),
            Body::Json(json!({})),
        ),
        ("delete", "/api/v1/devices/{id}/assignments/{stream}", "/api/v1/devices/x/assignments/s".into(), Body::None),
        ("get", "/api/v1/devices/{id}/reports", "/api/v1/devices/x/reports".into(), Body::None),
        ("get", "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens".into(), Body::None),
        ("post", "/api/v1/enrollment-tokens", "/api/v1/enrollment-tokens".into(), Body::Json(json!({}))),
        ("delete", "/api/v1/enrollment-tokens/{id}", "/api/v1/enrollment-tokens/x".into(), Body::None),
        ("get", "/api/v1/rollouts", "/api/v1/rollouts".into(), Body::None),
        ("post", "/api/v1/rollouts", "/api/v1/rollouts".into(), Body::Json(json!({}))),
        ("get", "/api/v1/rollouts/{id}", "/api/v1/rollouts/x".into(), Body::None),
        ("post", "/api/v1/rollouts/{id}/{action}", "/api/v1/rollouts/x/pause".into(), Body::None),
        ("put", "/api/v1/blobs/sha256/{hex}", format!("/api/v1/blobs/sha256/{blob_hex}"), Body::Raw(module.clone())),
    ];
    for (method, template, path, body) in operator_ops {
        seen.probe(&tight, method, template, &path, Some(&tight_admin), body, (429, "rate-limited")).await;
    }
    // Device logins: the burst of one, then 429 for challenge, login, enroll.
    let d = TestDevice::new("limited");
    d.challenge(&tight).await;
    let t = "/api/v1/device/challenge";
    seen.probe(&tight, "post", t, t, None, Body::Json(json!({"device_id": "limited"})), (429, "rate-limited")).await;
    let t = "/api/v1/device/login";
    seen.probe(&tight, "post", t, t, None, Body::Json(login("limited", "AAAA")), (429, "rate-limited")).await;
    let t = "/api/v1/device/enroll";
    seen.probe(&tight, "post", t, t, None, Body::Json(json!({})), (429, "rate-limited")).await;
    // Per device: a token minted for an enrolled device, one request each.
    let state = &tight.running.as_ref().unwrap().state;
    let limited = TestDevice::new("limited");
    let cose = limited.key.public_key().to_cose_key();
    let key_id = limited.key.public_key().key_id().to_string();
    let new = gantry_server::store::NewDevice {
        id: "limited",
        public_key: &cose,
        key_id: &key_id,
        enrolled_by: "test",
        groups: &[],
        tags: &[],
    };
    assert!(state.store.insert_device(&new).await.unwrap());
    let lt = state.device_auth.token("limited", gantry_server::store::now() as u64 + 600);
    let t = "/api/v1/device/checkin";
    seen.probe(&tight, "post", t, t, Some(&lt), Body::Json(json!({"nonce": nonce})), (200, "")).await;
    seen.probe(&tight, "post", t, t, Some(&lt), Body::Json(json!({"nonce": nonce})), (429, "rate-limited")).await;
    let t = "/api/v1/device/reports";
    seen.probe(&tight, "post", t, t, Some(&lt), Body::Json(report("a", "downloading")), (204, "")).await;
    seen.probe(&tight, "post", t, t, Some(&lt), Body::Json(report("a", "downloading")), (429, "rate-limited")).await;
    // `/metrics` behind a token.
    seen.probe(&tight, "get", "/metrics", "/metrics", None, Body::None, (401, "unauthorized")).await;
    let r = tight.get("/metrics", &tight_admin).await;
    assert_eq!(r.status(), 200, "metrics are not rate limited");
    assert!(r.text().await.unwrap().contains("gantry_rate_limited_total 29"));

    // ---- the document, both ways ------------------------------------------
    let doc = openapi();
    let documented = documented(&doc);
    let router = &doc["x-router-errors"];
    assert_eq!(router["405"], json!(["method-not-allowed"]));
    let mut provoked = BTreeSet::new();
    for (method, template, status, code) in &seen.0 {
        if *status < 400 {
            continue;
        }
        let key = (method.clone(), template.clone(), status.to_string());
        let codes = documented.get(&key).unwrap_or_else(|| panic!("{key:?}: status not documented"));
        assert!(codes.contains(code), "{key:?}: {code} not among {codes:?}");
        provoked.insert((method.clone(), template.clone(), status.to_string(), code.clone()));
    }
    let mut missing = Vec::new();
    for ((method, template, status), codes) in &documented {
        for code in codes {
            let skip = NOT_PROBED.iter().any(|(m, t, s, c)| (*m, *t, *s, *c) == (method, template, status, code))
                || (template == "/api/v1/releases"
                    && status == "422"
                    && VERIFIER_ONLY_IN_SIGNING.contains(&code.as_str()));
            if !skip && !provoked.contains(&(method.clone(), template.clone(), status.clone(), code.clone())) {
                missing.push(format!("{method} {template} {status} {code}"));
            }
        }
    }
    assert!(missing.is_empty(), "documented but never provoked:\n{}", missing.join("\n"));

    tight.stop().await;
    bare.stop().await;
    main.stop().await;
}
