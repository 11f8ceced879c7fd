//! The device API: challenge, login, enrollment, check-in, reports.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_keys::{PublicKey, decode_cose_key, read_public_key_pem};
use gantry_protocol::{
    Assignment, BlobRef, ChallengeRequest, ChallengeResponse, CheckinRequest, CheckinResponse, EnrollRequest,
    LoginRequest, LoginResponse, MAX_TRUST_ROOTS, POLL_AFTER_HEADER, Report, ReportState, ValidationError,
};
use gantry_signing::device_auth::{LoginPolicy, valid_device_id, verify_login_proof};
use gantry_signing::ticket::{MAX_STREAM_NAME, NONCE_MAX, NONCE_MIN, Ticket};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

use super::{ApiJson, DeviceCaller, Shared};
use crate::auth::secret_hash;
use crate::error::ApiError;
use crate::fleet::CachedDevice;
use crate::metrics::inc;
use crate::ratelimit::DeviceLimit;
use crate::store::{DeviceOutcome, NewDevice, Recorded, now};

/// Header carrying the seconds until the next check-in (on 200 and 304).
const POLL_AFTER: HeaderName = HeaderName::from_static(POLL_AFTER_HEADER);

// Every stream a ticket can name can be reported and listed.
const _: () = assert!(gantry_protocol::MAX_STREAM == MAX_STREAM_NAME);

/// A body refused by the rules `gantry-protocol` shares with the device.
fn invalid(what: &str, e: ValidationError) -> ApiError {
    ApiError::bad_request(e.code(), format!("{what}: {e}"))
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(s).map_err(|_| ApiError::bad_request("bad-request", format!("{field} is not standard base64")))
}

fn check_device_id(id: &str) -> Result<(), ApiError> {
    if valid_device_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid-device-id", "device_id: 1-128 of A-Z a-z 0-9 . _ : -"))
    }
}

/// A public key as the API takes it: SPKI PEM, or base64 of a COSE_Key.
pub(super) fn parse_public_key(text: &str) -> Result<PublicKey, ApiError> {
    let bad = |e: String| ApiError::bad_request("invalid-public-key", e);
    if text.trim_start().starts_with("-----BEGIN") {
        read_public_key_pem(text, "public_key").map_err(|e| bad(e.to_string()))
    } else {
        decode_cose_key(&b64("public_key", text)?).map_err(|e| bad(format!("public_key (COSE_Key): {e}")))
    }
}

/// `POST /api/v1/device/challenge`: a fresh challenge to sign. Answered
/// for any well-formed id, enrolled or not, so it reveals nothing (and
/// neither do enroll and login: see [`enroll`]).
pub(super) async fn challenge(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    check_device_id(&req.device_id)?;
    let ttl = s.config.devices.challenge_ttl.secs().max(1);
    let c = s.device_auth.challenge(&req.device_id, now() as u64, ttl);
    Ok(Json(ChallengeResponse { challenge: B64.encode(c), expires_in: ttl }))
}

fn login_refused(s: &Shared, e: impl std::fmt::Display) -> ApiError {
    inc(&s.metrics.login_refusals);
    ApiError::unauthorized(format!("login refused: {e}"))
}

/// Checks the challenge, then the proof under `key`.
fn check_proof(s: &Shared, device_id: &str, key: &PublicKey, challenge: &str, proof: &str) -> Result<(), ApiError> {
    let challenge = b64("challenge", challenge)?;
    let proof = b64("proof", proof)?;
    let now = now() as u64;
    s.device_auth.redeem_challenge(&challenge, device_id, now).map_err(|e| login_refused(s, e))?;
    let policy = LoginPolicy {
        device_key: key,
        device_id,
        challenge: &challenge,
        now: Some(now),
        max_clock_skew: s.config.devices.max_clock_skew.map(|d| d.secs()).unwrap_or(u64::MAX),
    };
    verify_login_proof(&proof, &policy).map_err(|e| login_refused(s, format_args!("{e} ({})", e.code())))?;
    Ok(())
}

fn issue_token(s: &Shared, device_id: &str) -> LoginResponse {
    inc(&s.metrics.logins);
    let ttl = s.config.devices.token_ttl.secs().max(1);
    let token = s.device_auth.token(device_id, now() as u64 + ttl);
    LoginResponse { device_id: device_id.to_owned(), token, expires_in: ttl }
}

async fn enrolled(s: &Shared, id: &str) -> Result<CachedDevice, ApiError> {
    match s.fleet.device(&s.store, id).await? {
        Some(d) if d.disabled => Err(ApiError::forbidden(format!("device {id} is disabled"))),
        Some(d) => Ok(d),
        None => Err(ApiError::forbidden(format!("device {id} is not enrolled"))),
    }
}

/// `POST /api/v1/device/login`: a signed challenge for a bearer token.
pub(super) async fn login(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    check_device_id(&req.device_id)?;
    let device = match s.fleet.device(&s.store, &req.device_id).await? {
        Some(d) if !d.disabled => d,
        // One answer for unknown and disabled devices and bad proofs.
        _ => return Err(login_refused(&s, "unknown or disabled device")),
    };
    check_proof(&s, &req.device_id, &device.public_key()?, &req.challenge, &req.proof)?;
    Ok(Json(issue_token(&s, &req.device_id)))
}

/// One answer for every enrollment refused for its token, whatever the
/// device id: without a valid token, nobody learns which ids are enrolled.
fn token_refused() -> ApiError {
    ApiError::forbidden("enrollment token unknown, revoked, used up or expired")
}

/// `POST /api/v1/device/enroll`: a device enrolls itself with an
/// enrollment token, proving it holds the key it enrolls; answered like a
/// login. The token is checked before anything about the device id is
/// looked at.
pub(super) async fn enroll(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), ApiError> {
    check_device_id(&req.device_id)?;
    let key = parse_public_key(&req.public_key)?;
    check_proof(&s, &req.device_id, &key, &req.challenge, &req.proof)?;
    let hash = secret_hash(&req.enrollment_token);
    let token = match s.store.find_enrollment_token(&hash).await? {
        Some(t) if t.live(now()) => t,
        _ => return Err(token_refused()),
    };
    let cose = key.to_cose_key();
    if let Some(existing) = s.store.device(&req.device_id).await? {
        // The caller holds a valid token now. Enrolling again with the same
        // key (a retry after a lost answer) is a login; another key is
        // someone else's device id; a disabled device stays out.
        return if existing.public_key != cose {
            Err(ApiError::conflict("device-exists", format!("device {} is enrolled with another key", req.device_id)))
        } else if existing.disabled {
            Err(ApiError::forbidden(format!("device {} is disabled", req.device_id)))
        } else {
            Ok((StatusCode::OK, Json(issue_token(&s, &req.device_id))))
        };
    }
    if token.uses_left <= 0 {
        return Err(token_refused());
    }
    let grant = s.store.use_enrollment_token(&hash).await?.ok_or_else(token_refused)?;
    let key_id = key.key_id().to_string();
    let by = format!("enrollment-token:{}", grant.token_id);
    let new = NewDevice {
        id: &req.device_id,
        public_key: &cose,
        key_id: &key_id,
        enrolled_by: &by,
        groups: &grant.groups,
        tags: &grant.tags,
    };
    if !s.store.insert_device(&new).await? {
        return Err(ApiError::conflict("device-exists", format!("device {} was enrolled meanwhile", req.device_id)));
    }
    tracing::info!(device = %req.device_id, key = %key_id, token = %grant.token_id, "device enrolled");
    Ok((StatusCode::CREATED, Json(issue_token(&s, &req.device_id))))
}

fn poll_after(s: &Shared) -> u64 {
    let d = &s.config.devices;
    let jitter = d.poll_jitter.secs();
    d.poll_interval.secs() + if jitter == 0 { 0 } else { OsRng.next_u64() % (jitter + 1) }
}

/// `POST /api/v1/device/checkin`: the device's inventory and a fresh
/// nonce; 304 if what it should run has not changed since the ETag it
/// sends in `If-None-Match`, else 200 with a ticket signed for the nonce.
pub(super) async fn checkin(
    State(s): State<Shared>,
    caller: DeviceCaller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CheckinRequest>,
) -> Result<Response, ApiError> {
    let nonce = b64("nonce", &req.nonce)?;
    if !(NONCE_MIN..=NONCE_MAX).contains(&nonce.len()) {
        return Err(ApiError::bad_request("bad-request", "nonce: 16 to 32 random bytes"));
    }
    req.validate().map_err(|e| invalid("check-in", e))?;
    let id = &caller.device_id;
    s.limiters.device(DeviceLimit::Checkin, id).inspect_err(|_| inc(&s.metrics.rate_limited))?;
    let device = enrolled(&s, id).await?;

    // The inventory (with the vendor and class) is written only when it
    // changed.
    let inventory = serde_json::to_string(&req.inventory).map_err(ApiError::internal)?;
    let mut h = Sha256::new();
    for part in [Some(inventory.as_str()), req.vendor_id.as_deref(), req.class_id.as_deref()] {
        let part = part.unwrap_or_default();
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hash: [u8; 32] = h.finalize().into();
    if device.inventory_hash != Some(hash) {
        s.store.save_inventory(id, &inventory, &hash, req.vendor_id.as_deref(), req.class_id.as_deref()).await?;
        s.fleet.set_inventory_hash(id, hash);
        inc(&s.metrics.inventory_writes);
    }
    let now = now();
    s.fleet.touch(id, now);

    // A device behind on trust-root rotations is sent the successors; they
    // verify on the device, against the root it holds, or not at all.
    let trust_roots = match req.trust_root_version {
        Some(held) => s.fleet.trust_roots_after(&s.store, held, MAX_TRUST_ROOTS).await?,
        None => Vec::new(),
    };
    let desired = &device.desired;
    let poll = poll_after(&s);
    let etag = HeaderValue::from_str(&desired.etag).map_err(ApiError::internal)?;
    let poll_header = HeaderValue::from(poll);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == desired.etag));
    if unchanged && trust_roots.is_empty() {
        inc(&s.metrics.checkins_unchanged);
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (POLL_AFTER, poll_header)]).into_response());
    }

    let ticket = Ticket {
        device_id: id.clone(),
        nonce,
        issued_at: now as u64,
        expires_at: now as u64 + s.config.devices.ticket_ttl.secs().max(1),
        assignments: desired.assignments.clone(),
    };
    let signed = ticket.sign(s.server_key.as_ref()).map_err(ApiError::internal)?;
    inc(&s.metrics.checkins_ticket);
    let assignments = desired
        .rows
        .iter()
        .map(|r| {
            // Stored as SQL integers; never negative.
            let unsigned = |n: i64| u64::try_from(n).map_err(ApiError::internal);
            Ok(Assignment {
                stream: r.stream.clone(),
                manifest_digest: r.manifest_digest.clone(),
                sequence: unsigned(r.sequence)?,
                envelope: BlobRef {
                    url: format!("/blobs/sha256/{}", r.envelope_sha256),
                    sha256: r.envelope_sha256.clone(),
                    size: unsigned(r.envelope_size)?,
                },
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let body = CheckinResponse {
        ticket: B64.encode(signed),
        etag: desired.etag.clone(),
        poll_after: poll,
        assignments,
        trust_roots: trust_roots.iter().map(|d| B64.encode(d)).collect(),
    };
    Ok((StatusCode::OK, [(header::ETAG, etag), (POLL_AFTER, poll_header)], Json(body)).into_response())
}

/// `POST /api/v1/device/reports`: progress or the result of an update.
pub(super) async fn report(
    State(s): State<Shared>,
    caller: DeviceCaller,
    ApiJson(report): ApiJson<Report>,
) -> Result<StatusCode, ApiError> {
    report.validate().map_err(|e| invalid("report", e))?;
    s.limiters.device(DeviceLimit::Report, &caller.device_id).inspect_err(|_| inc(&s.metrics.rate_limited))?;
    enrolled(&s, &caller.device_id).await?;
    let keep = s.config.reports.max_per_device.max(1);
    let max_streams = s.config.reports.max_streams_per_device;
    if let Recorded::TooManyStreams { max } =
        s.store.record_report(&caller.device_id, &report, keep, max_streams).await?
    {
        return Err(ApiError::refused(
            "too-many-streams",
            format!("this device already reports on {max} streams (reports.max_streams_per_device)"),
        ));
    }
    // A report on a release a rollout assigned moves that rollout.
    let outcome = match report.state {
        ReportState::Installed => DeviceOutcome::Installed,
        ReportState::Failed | ReportState::Reverted => DeviceOutcome::Failed,
        ReportState::Downloading | ReportState::Downloaded | ReportState::Installing => DeviceOutcome::Updating,
    };
    let rollout = s.store.rollout_report(&caller.device_id, &report.stream, &report.manifest_digest, outcome).await?;
    if report.state.is_result() {
        if let Some(id) = rollout
            && crate::rollout::evaluate(&s.store, &id, s.config.rollouts.stuck_after.0).await?
                != crate::rollout::Outcome::Unchanged
        {
            super::refresh_generation(&s).await;
        }
        tracing::info!(device = %caller.device_id, stream = %report.stream, state = %report.state, digest = %report.manifest_digest, "update result");
    }
    Ok(StatusCode::NO_CONTENT)
}
