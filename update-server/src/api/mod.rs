//! The HTTP API: routes, shared state and the extractors that say who is
//! calling. Endpoints are documented in docs/api.md.
//!
//! ```text
//!  /api/v1/device/*   devices: challenge, login, enroll, check-in, reports  (device bearer token)
//!  /api/v1/*          operators: tokens, trust root, releases, devices       (API token + role)
//!  /blobs/sha256/<h>  content-addressed blobs, ETag + Range, no credential
//!  /healthz /metrics /openapi.json
//! ```

mod blobs;
mod device;
mod extract;
mod operator;
mod rollouts;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post, put};
use gantry_keys::KeySource;
use tower_http::timeout::TimeoutLayer;

use crate::auth::device::DeviceAuth;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::store::Store;

pub use extract::{ApiJson, DeviceCaller, OperatorCaller};
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
}

/// The state handlers share.
pub type Shared = Arc<AppState>;

/// The whole API.
pub fn router(state: Shared) -> Router {
    let limits = &state.config.limits;
    let envelope_limit = || DefaultBodyLimit::max(limits.max_envelope_bytes);
    let device = Router::new()
        .route("/challenge", post(device::challenge))
        .route("/login", post(device::login))
        .route("/enroll", post(device::enroll))
        .route("/checkin", post(device::checkin))
        .route("/reports", post(device::report));
    let operator = Router::new()
        .route("/server", get(operator::server_info))
        .route("/tokens", get(operator::list_tokens).post(operator::create_token))
        .route("/tokens/{id}", axum::routing::delete(operator::revoke_token))
        .route("/trust-root", get(operator::get_trust_root).put(operator::put_trust_root).layer(envelope_limit()))
        .route("/releases", get(operator::list_releases).post(operator::upload_release).layer(envelope_limit()))
        .route("/releases/{digest}", get(operator::get_release))
        .route("/devices", get(operator::list_devices).post(operator::preauthorize_device))
        .route("/devices/{id}", get(operator::get_device).patch(operator::update_device))
        .route("/devices/{id}/assignments/{stream}", put(operator::assign).delete(operator::unassign))
        .route("/devices/{id}/reports", get(operator::device_reports))
        .route("/enrollment-tokens", post(operator::create_enrollment_token))
        .route("/rollouts", get(rollouts::list).post(rollouts::create))
        .route("/rollouts/{id}", get(rollouts::get))
        .route("/rollouts/{id}/{action}", post(rollouts::act));
    let api = Router::new()
        .nest("/api/v1/device", device)
        .nest("/api/v1", operator)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(limits.max_json_bytes))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, limits.request_timeout.0));
    // One span per request (method, path); responses logged at DEBUG.
    let trace = tower_http::trace::TraceLayer::new_for_http();
    // Blob uploads bound their own size and time; downloads stream.
    let blob_routes = Router::new()
        .route("/api/v1/blobs/sha256/{hex}", put(blobs::upload).layer(DefaultBodyLimit::disable()))
        .route("/blobs/sha256/{hex}", get(blobs::download).head(blobs::download));
    api.merge(blob_routes).layer(trace).with_state(state)
}

/// Adopts the database's desired-state generation at once, so a change
/// made through this node is seen by its next check-in.
pub(crate) async fn refresh_generation(s: &Shared) {
    match s.store.desired_generation().await {
        Ok(g) => s.fleet.set_generation(g),
        Err(e) => tracing::warn!(error = %e, "cannot read the desired-state generation"),
    }
}

async fn metrics(State(s): State<Shared>) -> String {
    s.metrics.render(s.fleet.cached())
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json"))
}
