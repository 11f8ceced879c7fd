//! The operator API: tokens, the trust root, releases, devices and what
//! they should run.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use gantry_keys::trust::{Role as TrustRole, SignedTrustRoot, VerifiedTrustRoot};
use gantry_signing::{Policy, VerifiedManifest, verify};
use serde::{Deserialize, Serialize};

use super::device::parse_public_key;
use super::{ApiBytes, ApiJson, ApiQuery, OperatorCaller, Shared};
use crate::auth::operator::{Permission, Role};
use crate::auth::{new_secret, random_bytes, secret_hash};
use crate::error::ApiError;
use crate::metrics::inc;
use crate::store::{
    ApiTokenRecord, DeviceFilter, DeviceRecord, EnrollmentTokenRecord, NewDevice, PayloadRecord, ReleaseRecord,
    ReportRecord, StreamRecord, now, storable,
};

fn new_id() -> String {
    hex::encode(random_bytes::<8>())
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Group names and tags: 1-64 of `A-Z a-z 0-9 . _ : = -`, at most 32.
fn check_labels(what: &str, labels: &[String]) -> Result<(), ApiError> {
    let ok = |l: &String| {
        !l.is_empty() && l.len() <= 64 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:=-".contains(&b))
    };
    if labels.len() > 32 || !labels.iter().all(ok) {
        return Err(ApiError::bad_request(
            "bad-request",
            format!("{what}: at most 32, each 1-64 of A-Z a-z 0-9 . _ : = -"),
        ));
    }
    Ok(())
}

// ---- server and tokens ----------------------------------------------------

#[derive(Serialize)]
pub(super) struct ServerInfo {
    version: &'static str,
    database: &'static str,
    server_key_id: String,
    server_key_algorithm: String,
    server_public_key_pem: String,
    trust_root_version: Option<u64>,
    server_key_in_trust_root: Option<bool>,
}

/// `GET /api/v1/server`: the server's ticket key (to add to the trust
/// root's `server` role) and whether the installed root lists it.
pub(super) async fn server_info(State(s): State<Shared>, caller: OperatorCaller) -> Result<Json<ServerInfo>, ApiError> {
    caller.require(Permission::Read)?;
    let key = s.server_key.public_key();
    let root = load_trust_root(&s).await?;
    Ok(Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION"),
        database: match s.store.backend() {
            crate::store::Backend::Sqlite => "sqlite",
            crate::store::Backend::Postgres => "postgres",
        },
        server_key_id: key.key_id().to_string(),
        server_key_algorithm: s.server_key.algorithm().name().to_owned(),
        server_public_key_pem: key.to_spki_pem(),
        trust_root_version: root.as_ref().map(|r| r.root().version),
        server_key_in_trust_root: root
            .as_ref()
            .map(|r| r.root().policy(TrustRole::Server).keys.contains(&key.key_id())),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    role: Role,
    /// Lifetime, humantime (`"90d"`); none: until revoked.
    expires_in: Option<String>,
}

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME: usize = 64;

/// A lifetime as the API takes it (humantime), as an expiry time.
fn expiry(field: &str, text: &str, max: Option<std::time::Duration>) -> Result<i64, ApiError> {
    let ttl =
        humantime::parse_duration(text).map_err(|e| ApiError::bad_request("bad-request", format!("{field}: {e}")))?;
    if ttl.is_zero() {
        return Err(ApiError::bad_request("bad-request", format!("{field}: must be positive")));
    }
    if let Some(max) = max
        && ttl > max
    {
        return Err(ApiError::bad_request(
            "bad-request",
            format!("{field}: at most {}", humantime::format_duration(max)),
        ));
    }
    // Anything past the year 2^63 s would wrap; no lifetime needs that.
    Ok(now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)))
}

#[derive(Serialize)]
pub(super) struct CreatedToken {
    #[serde(flatten)]
    record: ApiTokenRecord,
    /// The secret, shown once.
    token: String,
}

/// Creates an API token; the secret is returned once, only its hash kept.
pub async fn create_api_token(
    store: &crate::store::Store,
    name: &str,
    role: Role,
    by: &str,
    expires_at: Option<i64>,
) -> Result<(ApiTokenRecord, String), ApiError> {
    let secret = new_secret("gop_");
    let record = ApiTokenRecord {
        id: new_id(),
        name: name.to_owned(),
        role: role.name().to_owned(),
        created_at: now(),
        created_by: by.to_owned(),
        revoked_at: None,
        expires_at,
    };
    store.insert_api_token(&record, &secret_hash(&secret)).await?;
    Ok((record, secret))
}

/// `POST /api/v1/tokens` (admin).
pub(super) async fn create_token(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(Permission::ManageTokens)?;
    if req.name.is_empty() || req.name.len() > MAX_TOKEN_NAME || !gantry_protocol::printable(&req.name) {
        return Err(ApiError::bad_request(
            "bad-request",
            format!("name: 1-{MAX_TOKEN_NAME} bytes, no control or bidirectional formatting characters"),
        ));
    }
    let expires_at = req.expires_in.as_deref().map(|t| expiry("expires_in", t, None)).transpose()?;
    let (record, token) = create_api_token(&s.store, &req.name, req.role, &caller.name(), expires_at).await?;
    tracing::info!(id = %record.id, name = %record.name, role = %record.role, by = %caller.name(), "API token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { record, token })))
}

/// `GET /api/v1/tokens` (admin).
pub(super) async fn list_tokens(
    State(s): State<Shared>,
    caller: OperatorCaller,
) -> Result<Json<Vec<ApiTokenRecord>>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    Ok(Json(s.store.list_api_tokens().await?))
}

/// `DELETE /api/v1/tokens/{id}` (admin).
pub(super) async fn revoke_token(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::ManageTokens)?;
    if s.store.revoke_api_token(&id).await? {
        tracing::info!(%id, by = %caller.name(), "API token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live API token {id}")))
    }
}

// ---- trust root -----------------------------------------------------------

/// The installed trust root, re-verified (signatures and expiry).
async fn load_trust_root(s: &Shared) -> Result<Option<VerifiedTrustRoot>, ApiError> {
    let Some(bytes) = s.store.trust_root().await? else { return Ok(None) };
    let doc = SignedTrustRoot::from_bytes(&bytes).map_err(ApiError::internal)?;
    match doc.verify_self_signed(now() as u64) {
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(ApiError::conflict(
            "trust-root-invalid",
            format!(
                "the installed trust root no longer verifies ({e}); install its successor with PUT /api/v1/trust-root"
            ),
        )),
    }
}

#[derive(Serialize)]
pub(super) struct TrustRootInstalled {
    version: u64,
    expires: u64,
    server_key_in_trust_root: bool,
}

/// `PUT /api/v1/trust-root` (admin): the first root must be self-signed; a
/// later one must be a valid successor (higher version, signed by a
/// threshold of the previous and of its own root keys).
pub(super) async fn put_trust_root(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiBytes(body): ApiBytes,
) -> Result<Json<TrustRootInstalled>, ApiError> {
    caller.require(Permission::ManageTrustRoot)?;
    let doc = SignedTrustRoot::from_bytes(&body).map_err(|e| ApiError::refused("trust-root-refused", e.to_string()))?;
    let version = doc.unverified_content().version;
    if storable(version).is_none() {
        return Err(ApiError::refused(
            "trust-root-refused",
            format!("version {version} is above 2^63 - 1, the largest the database stores"),
        ));
    }
    let now = now() as u64;
    let current = match s.store.trust_root().await? {
        Some(bytes) => Some(SignedTrustRoot::from_bytes(&bytes).map_err(ApiError::internal)?),
        None => None,
    };
    let verified = match &current {
        None => doc.verify_self_signed(now),
        Some(cur) => {
            // The current root's own expiry does not matter for rotation.
            let cur = SignedTrustRoot::verify_chain(std::slice::from_ref(cur), u64::MIN).map_err(ApiError::internal)?;
            cur.verify_successor(&doc, now)
        }
    }
    .map_err(|e| ApiError::refused("trust-root-refused", e.to_string()))?;
    let root = verified.root();
    s.store.insert_trust_root(root.version, verified.to_bytes(), &caller.name()).await?;
    s.fleet.invalidate_trust_roots();
    let in_role = root.policy(TrustRole::Server).keys.contains(&s.server_key.key_id());
    if !in_role {
        tracing::warn!(
            server_key = %s.server_key.key_id(),
            "the trust root's server role does not list this server's key: devices will refuse its tickets"
        );
    }
    tracing::info!(version = root.version, by = %caller.name(), "trust root installed");
    Ok(Json(TrustRootInstalled { version: root.version, expires: root.expires, server_key_in_trust_root: in_role }))
}

/// `GET /api/v1/trust-root`: the installed document (CBOR).
pub(super) async fn get_trust_root(
    State(s): State<Shared>,
    caller: OperatorCaller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Read)?;
    let bytes = s.store.trust_root().await?.ok_or_else(|| ApiError::not_found("no trust root installed"))?;
    Ok(([(header::CONTENT_TYPE, "application/cbor")], bytes))
}

// ---- releases -------------------------------------------------------------

#[derive(Serialize)]
pub(super) struct ReleaseView {
    #[serde(flatten)]
    release: ReleaseRecord,
    payloads: Vec<PayloadRecord>,
    /// What the upload accepted but an operator should know.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn refused(s: &Shared, code: &'static str, message: String) -> ApiError {
    inc(&s.metrics.releases_refused);
    tracing::warn!(%code, %message, "release refused");
    ApiError::refused(code, message)
}

/// The stream a release belongs to: its first component's first segment
/// (the container name, or `firmware`).
fn stream_of(m: &VerifiedManifest<'_>) -> Option<String> {
    let first = m.manifest().component(0)?.segments().next()?;
    let name = std::str::from_utf8(first).ok()?;
    (!name.is_empty() && name.len() <= 64).then(|| name.to_owned())
}

/// `POST /api/v1/releases` (release-manager): a signed SUIT envelope,
/// verified against the installed trust root's `release` role; every
/// payload it names by `/blobs/sha256/<hex>` must already be uploaded with
/// the declared size.
pub(super) async fn upload_release(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    caller.require(Permission::UploadReleases)?;
    let root = load_trust_root(&s)
        .await?
        .ok_or_else(|| ApiError::conflict("no-trust-root", "install a trust root first: PUT /api/v1/trust-root"))?;
    let anchors = root.root().role_keys(TrustRole::Release);
    let threshold = root.root().policy(TrustRole::Release).threshold as usize;
    let policy = Policy::new(&anchors, threshold);
    let m = verify(&body, &policy).map_err(|e| refused(&s, e.code(), format!("release refused: {e}")))?;
    m.check_integrated_payloads().map_err(|e| refused(&s, e.code(), format!("release refused: {e}")))?;
    let stream = stream_of(&m)
        .ok_or_else(|| refused(&s, "malformed", "release refused: the first component id names no stream".into()))?;
    let sequence = storable(m.sequence_number()).ok_or_else(|| {
        refused(
            &s,
            "sequence-too-large",
            format!(
                "release refused: sequence number {} is above 2^63 - 1, the largest the database stores",
                m.sequence_number()
            ),
        )
    })?;
    let digest = hex::encode(m.digest());
    let (vendor_id, class_id) = (m.vendor_id().map(hex::encode), m.class_id().map(hex::encode));
    // Devices refuse a release that is not newer than what they run: one
    // not newer than what this stream already has can never be installed.
    if s.store.release(&digest).await?.is_none()
        && let Some(newest) = s.store.newest_release(&stream, vendor_id.as_deref(), class_id.as_deref()).await?
        && newest.sequence >= sequence
    {
        inc(&s.metrics.releases_refused);
        return Err(ApiError::conflict(
            "sequence-not-newer",
            format!(
                "release refused: sequence {sequence} is not above {} of release {} already uploaded for stream \
                 {stream}; devices refuse to go back, so build it with a higher sequence number",
                newest.sequence, newest.manifest_digest
            ),
        ));
    }

    let mut payloads = Vec::new();
    let mut missing = Vec::new();
    for i in 0..m.manifest().component_count() {
        let d = m.declared_image(i).map_err(|e| refused(&s, e.code(), format!("release refused: {e}")))?;
        let uri = d.uri.unwrap_or_default();
        if uri.starts_with('#') {
            continue; // integrated, checked above
        }
        let (Some(sha256), Some(size)) = (d.sha256, d.size) else {
            return Err(refused(
                &s,
                "malformed",
                format!("release refused: component {i} has no SHA-256 digest and size"),
            ));
        };
        let hex = hex::encode(sha256);
        if uri != format!("/blobs/sha256/{hex}") {
            return Err(refused(
                &s,
                "unsupported-uri",
                format!("release refused: component {i} has URI {uri:?}; devices fetch /blobs/sha256/<its digest>"),
            ));
        }
        match s.blobs.size(&hex).await? {
            Some(stored) if stored == size => {}
            Some(stored) => {
                return Err(refused(
                    &s,
                    "payload-mismatch",
                    format!("release refused: blob {hex} has {stored} bytes, the manifest declares {size}"),
                ));
            }
            None => missing.push(hex.clone()),
        }
        payloads.push(PayloadRecord { component: i as i64, uri: uri.to_owned(), sha256: hex, size: size as i64 });
    }
    if !missing.is_empty() {
        inc(&s.metrics.releases_refused);
        return Err(ApiError::conflict(
            "missing-blobs",
            format!("upload these payloads first (PUT /api/v1/blobs/sha256/<hex>): {}", missing.join(", ")),
        ));
    }

    let envelope_sha256 = s.blobs.put_bytes(body.clone()).await?;
    s.store.insert_blob(&envelope_sha256, body.len() as u64).await?;
    let mut warnings = Vec::new();
    if let Some(class) = &class_id
        && !s.store.class_in_fleet(class).await?
    {
        warnings.push(format!(
            "no device of the fleet has reported class {class}: no device can be assigned this release yet"
        ));
    }
    let record = ReleaseRecord {
        manifest_digest: digest,
        stream,
        sequence,
        envelope_sha256,
        envelope_size: body.len() as i64,
        vendor_id,
        class_id,
        created_at: now(),
        created_by: caller.name(),
    };
    let created = s.store.insert_release(&record, &payloads).await?;
    let status = if created {
        inc(&s.metrics.releases_accepted);
        tracing::info!(digest = %record.manifest_digest, stream = %record.stream, sequence = record.sequence, by = %caller.name(), "release accepted");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let release = s.store.release(&record.manifest_digest).await?.unwrap_or(record);
    let payloads = s.store.release_payloads(&release.manifest_digest).await?;
    Ok((status, Json(ReleaseView { release, payloads, warnings })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseQuery {
    stream: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/releases?stream=&limit=`.
pub(super) async fn list_releases(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
) -> Result<Json<Vec<ReleaseRecord>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(s.store.releases(q.stream.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await?))
}

/// `GET /api/v1/releases/{digest}`.
pub(super) async fn get_release(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(digest): Path<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    caller.require(Permission::Read)?;
    let release = s.store.release(&digest).await?.ok_or_else(|| ApiError::not_found(format!("no release {digest}")))?;
    let payloads = s.store.release_payloads(&digest).await?;
    Ok(Json(ReleaseView { release, payloads, warnings: Vec::new() }))
}

// ---- devices --------------------------------------------------------------

#[derive(Serialize)]
pub(super) struct DeviceView {
    device_id: String,
    key_id: String,
    enrolled_at: i64,
    enrolled_by: String,
    disabled: bool,
    last_seen: Option<i64>,
    groups: Vec<String>,
    tags: Vec<String>,
    vendor_id: Option<String>,
    class_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inventory: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignments: Option<Vec<AssignmentRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<Vec<StreamRecord>>,
}

#[derive(Serialize)]
pub(super) struct AssignmentRef {
    stream: String,
    manifest_digest: String,
}

impl DeviceView {
    fn new(d: DeviceRecord) -> Self {
        DeviceView {
            device_id: d.id,
            key_id: d.key_id,
            enrolled_at: d.enrolled_at,
            enrolled_by: d.enrolled_by,
            disabled: d.disabled,
            last_seen: d.last_seen,
            groups: d.groups,
            tags: d.tags,
            vendor_id: d.vendor_id,
            class_id: d.class_id,
            inventory: d.inventory.and_then(|i| serde_json::from_str(&i).ok()),
            assignments: None,
            installed: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreauthorizeRequest {
    device_id: String,
    public_key: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /api/v1/devices` (operator): enrolls a device by its public key;
/// the device then logs in without an enrollment token.
pub(super) async fn preauthorize_device(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiJson(req): ApiJson<PreauthorizeRequest>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    caller.require(Permission::ManageDevices)?;
    if !gantry_signing::device_auth::valid_device_id(&req.device_id) {
        return Err(ApiError::bad_request("invalid-device-id", "device_id: 1-128 of A-Z a-z 0-9 . _ : -"));
    }
    check_labels("groups", &req.groups)?;
    check_labels("tags", &req.tags)?;
    let key = parse_public_key(&req.public_key)?;
    let key_id = key.key_id().to_string();
    let by = caller.name();
    let new = NewDevice {
        id: &req.device_id,
        public_key: &key.to_cose_key(),
        key_id: &key_id,
        enrolled_by: &by,
        groups: &req.groups,
        tags: &req.tags,
    };
    if !s.store.insert_device(&new).await? {
        return Err(ApiError::conflict("device-exists", format!("device {} is already enrolled", req.device_id)));
    }
    s.fleet.invalidate(&req.device_id);
    tracing::info!(device = %req.device_id, key = %key_id, by = %by, "device pre-authorized");
    let d = s.store.device(&req.device_id).await?.ok_or_else(|| ApiError::internal("device vanished"))?;
    Ok((StatusCode::CREATED, Json(DeviceView::new(d))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceQuery {
    group: Option<String>,
    tag: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct DeviceList {
    devices: Vec<DeviceView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// `GET /api/v1/devices?group=&tag=&after=&limit=`.
pub(super) async fn list_devices(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiQuery(q): ApiQuery<DeviceQuery>,
) -> Result<Json<DeviceList>, ApiError> {
    caller.require(Permission::Read)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = DeviceFilter { group: q.group, tag: q.tag, after: q.after, limit };
    let devices: Vec<_> = s.store.devices(&filter).await?.into_iter().map(DeviceView::new).collect();
    let next = (devices.len() as i64 == limit).then(|| devices.last().map(|d| d.device_id.clone())).flatten();
    Ok(Json(DeviceList { devices, next }))
}

/// `GET /api/v1/devices/{id}`: with its inventory, assignments and the
/// installed state it confirmed.
pub(super) async fn get_device(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require(Permission::Read)?;
    let d = s.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let mut view = DeviceView::new(d);
    let assignments = s.store.assignments(&id).await?;
    view.assignments = Some(
        assignments.into_iter().map(|(stream, manifest_digest)| AssignmentRef { stream, manifest_digest }).collect(),
    );
    view.installed = Some(s.store.streams(&id).await?);
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceUpdate {
    groups: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// `PATCH /api/v1/devices/{id}` (operator): replace groups and/or tags,
/// disable or re-enable.
pub(super) async fn update_device(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DeviceUpdate>,
) -> Result<Json<DeviceView>, ApiError> {
    caller.require(Permission::ManageDevices)?;
    if let Some(g) = &req.groups {
        check_labels("groups", g)?;
    }
    if let Some(t) = &req.tags {
        check_labels("tags", t)?;
    }
    if !s.store.update_device(&id, req.groups.as_deref(), req.tags.as_deref(), req.disabled).await? {
        return Err(ApiError::not_found(format!("no device {id}")));
    }
    s.fleet.invalidate(&id);
    let d = s.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    Ok(Json(DeviceView::new(d)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignRequest {
    manifest_digest: String,
}

/// `PUT /api/v1/devices/{id}/assignments/{stream}` (deploy): the release
/// this device should run on `stream`.
pub(super) async fn assign(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path((id, stream)): Path<(String, String)>,
    ApiJson(req): ApiJson<AssignRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Deploy)?;
    if !is_hex32(&req.manifest_digest) {
        return Err(ApiError::bad_request("bad-request", "manifest_digest: 64 lowercase hex digits"));
    }
    let device = s.store.device(&id).await?.ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let release = s
        .store
        .release(&req.manifest_digest)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no release {}", req.manifest_digest)))?;
    if release.stream != stream {
        return Err(ApiError::refused(
            "wrong-stream",
            format!("release {} belongs to stream {}, not {stream}", release.manifest_digest, release.stream),
        ));
    }
    for (what, wanted, has) in
        [("vendor", &release.vendor_id, &device.vendor_id), ("class", &release.class_id, &device.class_id)]
    {
        if let (Some(wanted), Some(has)) = (wanted, has)
            && wanted != has
        {
            return Err(ApiError::refused(
                "wrong-class",
                format!(
                    "release {} is for {what} {wanted}; device {id} reported {what} {has}",
                    release.manifest_digest
                ),
            ));
        }
    }
    s.store.assign(&id, &stream, &req.manifest_digest, &caller.name()).await?;
    s.fleet.invalidate(&id);
    tracing::info!(device = %id, %stream, digest = %req.manifest_digest, by = %caller.name(), "release assigned");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/devices/{id}/assignments/{stream}` (deploy).
pub(super) async fn unassign(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path((id, stream)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Deploy)?;
    if !s.store.unassign(&id, &stream).await? {
        return Err(ApiError::not_found(format!("device {id} has no assignment on {stream}")));
    }
    s.fleet.invalidate(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/devices/{id}/reports?limit=`: newest first.
pub(super) async fn device_reports(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<Vec<ReportRecord>>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(s.store.reports(&id, q.limit.unwrap_or(100).clamp(1, 1000)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrollmentTokenRequest {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// How many devices may enroll with it (default 1).
    uses: Option<i64>,
    /// Lifetime, humantime (default `24h`).
    expires_in: Option<String>,
}

#[derive(Serialize)]
pub(super) struct EnrollmentTokenCreated {
    id: String,
    token: String,
    uses: i64,
    expires_at: i64,
}

/// `POST /api/v1/enrollment-tokens` (operator).
pub(super) async fn create_enrollment_token(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiJson(req): ApiJson<EnrollmentTokenRequest>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    caller.require(Permission::ManageDevices)?;
    check_labels("groups", &req.groups)?;
    check_labels("tags", &req.tags)?;
    let bounds = &s.config.enrollment;
    let uses = req.uses.unwrap_or(1);
    if !(1..=i64::from(bounds.max_uses)).contains(&uses) {
        return Err(ApiError::bad_request(
            "bad-request",
            format!("uses: 1 to {} (enrollment.max_uses)", bounds.max_uses),
        ));
    }
    let expires_at = expiry("expires_in", req.expires_in.as_deref().unwrap_or("24h"), Some(bounds.max_lifetime.0))?;
    let (id, token) = (new_id(), new_secret("gen_"));
    s.store
        .insert_enrollment_token(&id, &secret_hash(&token), &req.groups, &req.tags, uses, expires_at, &caller.name())
        .await?;
    tracing::info!(%id, uses, by = %caller.name(), "enrollment token created");
    Ok((StatusCode::CREATED, Json(EnrollmentTokenCreated { id, token, uses, expires_at })))
}

/// `GET /api/v1/enrollment-tokens` (operator): every token, newest first,
/// without its secret.
pub(super) async fn list_enrollment_tokens(
    State(s): State<Shared>,
    caller: OperatorCaller,
) -> Result<Json<Vec<EnrollmentTokenRecord>>, ApiError> {
    caller.require(Permission::ManageDevices)?;
    Ok(Json(s.store.list_enrollment_tokens().await?))
}

/// `DELETE /api/v1/enrollment-tokens/{id}` (operator): no device enrolls
/// with it any more (devices enrolled with it stay).
pub(super) async fn revoke_enrollment_token(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::ManageDevices)?;
    if s.store.revoke_enrollment_token(&id).await? {
        tracing::info!(%id, by = %caller.name(), "enrollment token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no enrollment token {id} that is not revoked")))
    }
}
