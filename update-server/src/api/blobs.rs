//! Blob downloads (anyone: the URL is the digest) and uploads (release
//! managers).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{OperatorCaller, Shared};
use crate::auth::operator::Permission;
use crate::blobs::range::{RangeAnswer, answer};
use crate::error::ApiError;
use crate::metrics::inc;

fn check_hex(hex: &str) -> Result<(), ApiError> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ApiError::not_found("blobs are named by 64 lowercase hex digits of their SHA-256"))
    }
}

/// `GET|HEAD /blobs/sha256/{hex}`: ETag (the digest), single byte ranges
/// (206, or 416 past the end), `If-None-Match` (304), `If-Range`.
pub(super) async fn download(
    State(s): State<Shared>,
    Path(hex): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_hex(&hex)?;
    let size = s.blobs.size(&hex).await?.ok_or_else(|| ApiError::not_found(format!("no blob {hex}")))?;
    let etag = format!("\"{hex}\"");
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let common = [
        (header::ETAG, etag_value),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    // A range is honoured only for the same content (If-Range); a blob
    // never changes, so any other validator means "send it all".
    let range_header = match header_str(header::IF_RANGE) {
        Some(v) if v.trim() != etag => None,
        _ => header_str(header::RANGE),
    };
    let (status, range) = match answer(range_header, size) {
        RangeAnswer::Full => (StatusCode::OK, None),
        RangeAnswer::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        RangeAnswer::Unsatisfiable => {
            let unsatisfiable = HeaderValue::from_str(&format!("bytes */{size}")).map_err(ApiError::internal)?;
            let e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the range is outside the blob's {size} bytes"),
            );
            let mut r = e.into_response();
            r.headers_mut().extend(common);
            r.headers_mut().insert(header::CONTENT_RANGE, unsatisfiable);
            return Ok(r);
        }
    };
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        inc(&s.metrics.blob_responses);
        s.metrics.blob_bytes.fetch_add(length, std::sync::atomic::Ordering::Relaxed);
        let body = s.blobs.get(&hex, range.clone()).await?;
        Response::new(Body::from_stream(body.stream))
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.extend(common);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(r) = range {
        let value = format!("bytes {}-{}/{size}", r.start, r.end - 1);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).map_err(ApiError::internal)?);
    }
    Ok(response)
}

/// `PUT /api/v1/blobs/sha256/{hex}` (release-manager): the raw bytes,
/// streamed into the store and kept only if they hash to `hex`. A refusal
/// may leave the body unread, so it closes the connection (a client
/// reusing it would otherwise see its next request fail).
pub(super) async fn upload(
    State(s): State<Shared>,
    caller: Result<OperatorCaller, ApiError>,
    Path(hex): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match store_upload(&s, caller, &hex, &headers, body).await {
        Ok(status) => status.into_response(),
        Err(e) => {
            let mut r = e.into_response();
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn store_upload(
    s: &Shared,
    caller: Result<OperatorCaller, ApiError>,
    hex: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let caller = caller?;
    caller.require(Permission::UploadReleases)?;
    let hex = hex.to_owned();
    check_hex(&hex)
        .map_err(|_| ApiError::bad_request("bad-request", "name the blob by its SHA-256: 64 lowercase hex"))?;
    let limit = s.config.limits.max_blob_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("blobs are limited to {limit} bytes"),
        ));
    }
    if let Some(size) = s.blobs.size(&hex).await? {
        s.store.insert_blob(&hex, size).await?;
        return Ok(StatusCode::OK);
    }
    let stream = body.into_data_stream();
    let upload = s.blobs.put_stream(&hex, stream, limit);
    let size = tokio::time::timeout(s.config.limits.upload_timeout.0, upload)
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "blob upload took too long"))??;
    s.store.insert_blob(&hex, size).await?;
    tracing::info!(blob = %hex, size, by = %caller.name(), "blob stored");
    Ok(StatusCode::CREATED)
}
