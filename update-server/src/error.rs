//! API errors: an HTTP status, a stable machine-readable code and a
//! message that says what to do next, as JSON
//! `{"error": code, "message": text}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::blobs::BlobError;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (e.g. `unknown-signer`, `forbidden`).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for `429`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// 429: over a rate limit; try again after `seconds`.
    pub fn rate_limited(seconds: u64, message: impl Into<String>) -> Self {
        ApiError { retry_after: Some(seconds), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", message) }
    }

    /// 413: a body over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message)
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no or an invalid credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid credential that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 409: conflicts with the server's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed but refused (a signature, a digest...).
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = gantry_protocol::ErrorBody { error: self.code.to_owned(), message: self.message };
        let mut r = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

/// How a body the extractors refused is answered: the same JSON error as
/// everything else, with the code its status stands for.
pub fn body_rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(status, "unsupported-media-type", text),
        // Well-formed JSON of the wrong shape: a missing field, a wrong
        // type, an unknown field.
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::new(status, "invalid-body", text),
        StatusCode::BAD_REQUEST => ApiError::bad_request("bad-request", text),
        _ => ApiError::new(status, "bad-request", text),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::DigestMismatch { .. } => ApiError::refused("digest-mismatch", e.to_string()),
            BlobError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            BlobError::Upload(_) => ApiError::bad_request("upload-interrupted", e.to_string()),
            BlobError::Store(_) | BlobError::Config(_) => ApiError::internal(e),
        }
    }
}
