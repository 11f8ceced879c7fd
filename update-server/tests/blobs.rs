//! Content-addressed blob downloads: ETag, Range (206 / 416), 304, HEAD.

mod common;

use common::{TestServer, sha256};

async fn blobs_answer_ranges_and_validators(s: &TestServer) {
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let hex = hex::encode(sha256(&data));
    assert_eq!(s.put_bytes(&format!("/api/v1/blobs/sha256/{hex}"), &s.admin, data.clone()).await.status(), 201);
    // Uploading it again is a no-op.
    assert_eq!(s.put_bytes(&format!("/api/v1/blobs/sha256/{hex}"), &s.admin, data.clone()).await.status(), 200);
    let url = s.url(&format!("/blobs/sha256/{hex}"));
    let etag = format!("\"{hex}\"");
    let get = |range: Option<&str>| {
        let mut r = s.http.get(&url);
        if let Some(range) = range {
            r = r.header("Range", range);
        }
        r.send()
    };

    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-length"], "1000");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(r.bytes().await.unwrap(), data);

    for (range, from, to) in [
        ("bytes=0-9", 0, 10),
        ("bytes=990-", 990, 1000),
        ("bytes=-5", 995, 1000),
        ("bytes=500-5000", 500, 1000),
        ("bytes=999-999", 999, 1000),
    ] {
        let r = get(Some(range)).await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], format!("bytes {from}-{}/1000", to - 1).as_str(), "{range}");
        assert_eq!(r.headers()["content-length"], (to - from).to_string().as_str());
        assert_eq!(r.bytes().await.unwrap(), data[from..to], "{range}");
    }
    for range in ["bytes=1000-", "bytes=1000-2000", "bytes=-0"] {
        let r = get(Some(range)).await.unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */1000");
    }
    // Several ranges, or nonsense: the whole blob.
    for range in ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2"] {
        let r = get(Some(range)).await.unwrap();
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
    // Resuming with If-Range: the same ETag gives the range, another the whole.
    let r = s.http.get(&url).header("Range", "bytes=100-").header("If-Range", etag.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 206);
    let r = s.http.get(&url).header("Range", "bytes=100-").header("If-Range", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Conditional GET and HEAD.
    let r = s.http.get(&url).header("If-None-Match", etag.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = s.http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "1000");
    // Unknown and malformed names.
    assert_eq!(s.http.get(s.url(&format!("/blobs/sha256/{}", "0".repeat(64)))).send().await.unwrap().status(), 404);
    assert_eq!(s.http.get(s.url("/blobs/sha256/../../etc/passwd")).send().await.unwrap().status(), 404);
    assert_eq!(s.http.get(s.url(&format!("/blobs/sha256/{}", hex.to_uppercase()))).send().await.unwrap().status(), 404);
}
on_both_backends!(blobs_answer_ranges_and_validators);

async fn openapi_describes_the_routes(s: &TestServer) {
    let doc: serde_json::Value = s.http.get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/device/challenge",
        "/api/v1/device/login",
        "/api/v1/device/enroll",
        "/api/v1/device/checkin",
        "/api/v1/device/reports",
        "/blobs/sha256/{hex}",
        "/api/v1/blobs/sha256/{hex}",
        "/api/v1/releases",
        "/api/v1/devices/{id}/assignments/{stream}",
        "/api/v1/rollouts/{id}/{action}",
        "/api/v1/trust-root",
        "/api/v1/tokens",
        "/api/v1/enrollment-tokens",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
}
on_both_backends!(openapi_describes_the_routes);
