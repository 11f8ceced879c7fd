//! Operator API tokens and device enrollment tokens. Only SHA-256 hashes of
//! token secrets are stored.

use sqlx::Row as _;

use super::{Store, StoreError, now};

/// An operator API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiTokenRecord {
    /// Public id (for listing and revoking).
    pub id: String,
    /// A human name ("ci", "alice").
    pub name: String,
    /// Its role.
    pub role: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Who created it (token name, or `bootstrap`).
    pub created_by: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Expiry time, if it expires.
    pub expires_at: Option<i64>,
}

/// An enrollment token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnrollmentTokenRecord {
    /// Public id (for listing and revoking).
    pub id: String,
    /// Groups a device enrolled with it joins.
    pub groups: Vec<String>,
    /// Tags it gets.
    pub tags: Vec<String>,
    /// Enrollments left.
    pub uses_left: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// Creation time.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

impl EnrollmentTokenRecord {
    /// Whether it can still be presented (not revoked, not expired); it may
    /// be used up.
    pub fn live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What an enrollment token grants the device that uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnrollmentGrant {
    /// Groups the device joins.
    pub groups: Vec<String>,
    /// Tags the device gets.
    pub tags: Vec<String>,
    /// Id of the token used (recorded as `enrolled_by`).
    pub token_id: String,
}

fn api_token(row: &sqlx::any::AnyRow) -> Result<ApiTokenRecord, sqlx::Error> {
    Ok(ApiTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn enrollment_token(row: &sqlx::any::AnyRow) -> Result<EnrollmentTokenRecord, StoreError> {
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        let s: String = row.try_get(col)?;
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("enrollment token {col}: {e}")))
    };
    Ok(EnrollmentTokenRecord {
        id: row.try_get("id")?,
        groups: list("groups_json")?,
        tags: list("tags_json")?,
        uses_left: row.try_get("uses_left")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Number of API tokens ever created (0 on first start).
    pub async fn api_token_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM api_tokens").fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// Stores a new API token by the hash of its secret.
    pub async fn insert_api_token(&self, record: &ApiTokenRecord, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.role)
        .bind(hash)
        .bind(record.created_at)
        .bind(&record.created_by)
        .bind(record.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live (neither revoked nor expired) token whose secret hashes to
    /// `hash`.
    pub async fn find_api_token(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(api_token).transpose()?)
    }

    /// Every token, newest first.
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at DESC, id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(api_token).collect::<Result<_, _>>()?)
    }

    /// Revokes token `id`; false if there is no live token of that id.
    pub async fn revoke_api_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores an enrollment token.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_enrollment_token(
        &self,
        id: &str,
        hash: &str,
        groups: &[String],
        tags: &[String],
        uses: i64,
        expires_at: i64,
        by: &str,
    ) -> Result<(), StoreError> {
        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_hash, groups_json, tags_json, uses_left, expires_at, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(hash)
        .bind(json(groups))
        .bind(json(tags))
        .bind(uses)
        .bind(expires_at)
        .bind(now())
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The enrollment token whose secret hashes to `hash`, whatever its
    /// state.
    pub async fn find_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentTokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(enrollment_token).transpose()
    }

    /// Every enrollment token, newest first.
    pub async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_at DESC, id").fetch_all(&self.pool).await?;
        rows.iter().map(enrollment_token).collect()
    }

    /// Revokes enrollment token `id`; false if there is no such token not
    /// revoked yet.
    pub async fn revoke_enrollment_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses one enrollment of the token hashing to `hash`, if it has uses
    /// left, has not expired and is not revoked; atomic, so two devices
    /// cannot share the last use.
    pub async fn use_enrollment_token(&self, hash: &str) -> Result<Option<EnrollmentGrant>, StoreError> {
        let row = sqlx::query(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1 \
             WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2 AND revoked_at IS NULL \
             RETURNING id, groups_json, tags_json",
        )
        .bind(hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let list = |col: &str| -> Result<Vec<String>, StoreError> {
            let s: String = row.try_get(col)?;
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("enrollment token {col}: {e}")))
        };
        Ok(Some(EnrollmentGrant {
            groups: list("groups_json")?,
            tags: list("tags_json")?,
            token_id: row.try_get("id")?,
        }))
    }
}
