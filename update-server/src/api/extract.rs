//! Extractors: JSON and raw bodies with API errors, and the two kinds of
//! caller.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::Shared;
use crate::auth::operator::{Permission, Role};
use crate::auth::secret_hash;
use crate::error::{ApiError, body_rejection};
use crate::store::{ApiTokenRecord, now};

/// A JSON body; malformed ones are answered with an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

/// A query string; a malformed one is answered `400 bad-request` as JSON.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::bad_request("bad-request", rejection.body_text())),
        }
    }
}

/// A raw body (an envelope, a trust root); one over the route's limit is
/// answered `413 too-large` as JSON, like every other error.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(ApiBytes(b)),
            Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// A device, authenticated by its bearer token (no database access).
#[derive(Clone, Debug)]
pub struct DeviceCaller {
    /// The device the token was issued to.
    pub device_id: String,
}

impl FromRequestParts<Shared> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <device token>"))?;
        let identity = state
            .device_auth
            .check_token(token, now() as u64)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired device token; log in again"))?;
        Ok(DeviceCaller { device_id: identity.device_id })
    }
}

/// An operator, authenticated by an API token.
#[derive(Clone, Debug)]
pub struct OperatorCaller {
    /// The token used.
    pub token: ApiTokenRecord,
    /// Its role.
    pub role: Role,
}

impl OperatorCaller {
    /// Refuses (403) unless the caller's role allows `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not {}; that needs one of: {}",
                self.role,
                p.describe(),
                p.roles().join(", ")
            )))
        }
    }

    /// Who to record as the author of a change.
    pub fn name(&self) -> String {
        format!("token:{}", self.token.name)
    }
}

impl FromRequestParts<Shared> for OperatorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <API token>"))?;
        if token.len() > 256 {
            return Err(ApiError::unauthorized("unknown or revoked API token"));
        }
        let record = state
            .store
            .find_api_token(&secret_hash(token))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API token"))?;
        let role = Role::from_name(&record.role)
            .ok_or_else(|| ApiError::internal(format!("token {} has unknown role {}", record.id, record.role)))?;
        Ok(OperatorCaller { token: record, role })
    }
}
