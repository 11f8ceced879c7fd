//! The first admin token, created when the database has none.

use crate::api::create_api_token;
use crate::auth::operator::Role;
use crate::error::ApiError;
use crate::store::Store;

/// Creates an admin token if no API token exists yet; returns its secret.
pub async fn bootstrap_admin(store: &Store) -> Result<Option<String>, ApiError> {
    if store.api_token_count().await? > 0 {
        return Ok(None);
    }
    let (_, secret) = create_api_token(store, "bootstrap-admin", Role::Admin, "bootstrap", None).await?;
    Ok(Some(secret))
}
