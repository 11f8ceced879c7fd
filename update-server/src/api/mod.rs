//! The HTTP API: routes, shared state and the extractors that say who is
//! calling. Endpoints are documented in docs/api.md.
//!
//! ```text
//!  /api/v1/device/*   devices: challenge, login, enroll, check-in, reports  (device bearer token)
//!  /api/v1/*          operators: tokens, trust root, releases, devices       (API token + role)
//!  /blobs/sha256/<h>  content-addressed blobs, ETag + Range, no credential
//!  /healthz /metrics /openapi.json
//! ```
//!
//! Every error, the router's own included (unknown path, wrong method, a
//! body over its limit), is the JSON `ErrorBody` with a code from
//! `openapi.json`; `tests/error_contract.rs` walks them.

mod blobs;
mod device;
mod extract;
mod operator;
mod rollouts;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get, post, put};
use gantry_keys::KeySource;

use crate::auth::device::DeviceAuth;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::store::Store;

pub use extract::{ApiBytes, ApiJson, ApiQuery, DeviceCaller, OperatorCaller};
pub use operator::create_api_token;

/// Everything a request handler may need.
pub struct AppState {
    /// Configuration in effect.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Blob storage.
    pub blobs: BlobStore,
    /// Device challenges and tokens.
    pub device_auth: DeviceAuth,
    /// The online key tickets are signed with.
    pub server_key: Arc<dyn KeySource>,
    /// The check-in cache.
    pub fleet: Fleet,
    /// Counters.
    pub metrics: Metrics,
    /// Request rates per source and per device.
    pub limiters: Limiters,
}

/// The state handlers share.
pub type Shared = Arc<AppState>;

/// The whole API.
pub fn router(state: Shared) -> Router {
    let limits = &state.config.limits;
    let envelope_limit = || DefaultBodyLimit::max(limits.max_envelope_bytes);
    let device_auth = Router::new()
        .route("/challenge", post(device::challenge))
        .route("/login", post(device::login))
        .route("/enroll", post(device::enroll))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::device_auth));
    let device = Router::new()
        .route("/checkin", post(device::checkin))
        .route("/reports", post(device::report))
        .merge(device_auth);
    let operator = Router::new()
        .route("/server", get(operator::server_info))
        .route("/tokens", get(operator::list_tokens).post(operator::create_token))
        .route("/tokens/{id}", delete(operator::revoke_token))
        .route("/trust-root", get(operator::get_trust_root).put(operator::put_trust_root).layer(envelope_limit()))
        .route("/releases", get(operator::list_releases).post(operator::upload_release).layer(envelope_limit()))
        .route("/releases/{digest}", get(operator::get_release))
        .route("/devices", get(operator::list_devices).post(operator::preauthorize_device))
        .route("/devices/{id}", get(operator::get_device).patch(operator::update_device))
        .route("/devices/{id}/assignments/{stream}", put(operator::assign).delete(operator::unassign))
        .route("/devices/{id}/reports", get(operator::device_reports))
        .route("/enrollment-tokens", get(operator::list_enrollment_tokens).post(operator::create_enrollment_token))
        .route("/enrollment-tokens/{id}", delete(operator::revoke_enrollment_token))
        .route("/rollouts", get(rollouts::list).post(rollouts::create))
        .route("/rollouts/{id}", get(rollouts::get))
        .route("/rollouts/{id}/{action}", post(rollouts::act))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::operator));
    let mut api = Router::new()
        .nest("/api/v1/device", device)
        .nest("/api/v1", operator)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi));
    if state.config.metrics.listen.is_none() {
        api = api.route("/metrics", get(metrics));
    }
    let api = api
        .layer(DefaultBodyLimit::max(limits.max_json_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline));
    // One span per request (method, path); responses logged at DEBUG.
    let trace = tower_http::trace::TraceLayer::new_for_http();
    // Blob uploads bound their own size and time; downloads stream.
    let blob_routes = Router::new()
        .route(
            "/api/v1/blobs/sha256/{hex}",
            put(blobs::upload)
                .layer(DefaultBodyLimit::disable())
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::operator)),
        )
        .route("/blobs/sha256/{hex}", get(blobs::download).head(blobs::download));
    api.merge(blob_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(trace)
        .with_state(state)
}

/// Answers `408 timeout` (JSON, like every error) when a request takes
/// longer than `limits.request_timeout`; blob bodies stream after it.
async fn deadline(State(s): State<Shared>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(s.config.limits.request_timeout.0, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took longer than limits.request_timeout",
        )
        .into_response(),
    }
}

/// `/metrics` alone, for `metrics.listen`.
pub fn metrics_router(state: Shared) -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// Adopts the database's desired-state generation at once, so a change
/// made through this node is seen by its next check-in.
pub(crate) async fn refresh_generation(s: &Shared) {
    match s.store.desired_generation().await {
        Ok(g) => s.fleet.set_generation(g),
        Err(e) => tracing::warn!(error = %e, "cannot read the desired-state generation"),
    }
}

async fn metrics(State(s): State<Shared>, caller: Result<OperatorCaller, ApiError>) -> Result<String, ApiError> {
    if s.config.metrics.require_token {
        caller?.require(crate::auth::operator::Permission::Read)?;
    }
    Ok(s.metrics.render(s.fleet.cached(), s.limiters.keys()))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json"))
}
