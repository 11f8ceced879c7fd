//! Releases (verified envelopes) and the blobs they reference.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now};

/// A release as stored: the envelope is a blob, the rest is what the
/// server read from it after verifying it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseRecord {
    /// SUIT digest of the manifest, hex: the release's identity.
    pub manifest_digest: String,
    /// Stream (container name, or `firmware`).
    pub stream: String,
    /// Sequence number.
    pub sequence: i64,
    /// SHA-256 of the envelope, hex.
    pub envelope_sha256: String,
    /// Envelope size in bytes.
    pub envelope_size: i64,
    /// Vendor id, hex.
    pub vendor_id: Option<String>,
    /// Class id, hex.
    pub class_id: Option<String>,
    /// Upload time.
    pub created_at: i64,
    /// Who uploaded it.
    pub created_by: String,
}

/// A payload a release names by URI.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PayloadRecord {
    /// Component index.
    pub component: i64,
    /// URI (`/blobs/sha256/<hex>`).
    pub uri: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
}

fn release(r: &AnyRow) -> Result<ReleaseRecord, sqlx::Error> {
    Ok(ReleaseRecord {
        manifest_digest: r.try_get("manifest_digest")?,
        stream: r.try_get("stream")?,
        sequence: r.try_get("sequence")?,
        envelope_sha256: r.try_get("envelope_sha256")?,
        envelope_size: r.try_get("envelope_size")?,
        vendor_id: r.try_get("vendor_id")?,
        class_id: r.try_get("class_id")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
    })
}

impl Store {
    /// Records a blob the object store now holds.
    pub async fn insert_blob(&self, sha256: &str, size: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO blobs (sha256, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING")
            .bind(sha256)
            .bind(size as i64)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A blob's recorded size.
    pub async fn blob_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        let row =
            sqlx::query("SELECT size FROM blobs WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0).map(|s| s as u64)).transpose()?)
    }

    /// Stores a release and its payload list; `Ok(false)` if a release with
    /// that manifest digest exists already.
    pub async fn insert_release(&self, r: &ReleaseRecord, payloads: &[PayloadRecord]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO releases (manifest_digest, stream, sequence, envelope_sha256, envelope_size, vendor_id, class_id, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (manifest_digest) DO NOTHING",
        )
        .bind(&r.manifest_digest)
        .bind(&r.stream)
        .bind(r.sequence)
        .bind(&r.envelope_sha256)
        .bind(r.envelope_size)
        .bind(r.vendor_id.clone())
        .bind(r.class_id.clone())
        .bind(r.created_at)
        .bind(&r.created_by)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        for p in payloads {
            sqlx::query("INSERT INTO release_payloads (manifest_digest, component, uri, sha256, size) VALUES ($1, $2, $3, $4, $5)")
                .bind(&r.manifest_digest)
                .bind(p.component)
                .bind(&p.uri)
                .bind(&p.sha256)
                .bind(p.size)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A release by manifest digest (hex).
    pub async fn release(&self, digest: &str) -> Result<Option<ReleaseRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM releases WHERE manifest_digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(release).transpose()?)
    }

    /// Releases, optionally of one stream, newest sequence first.
    pub async fn releases(&self, stream: Option<&str>, limit: i64) -> Result<Vec<ReleaseRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM releases WHERE ($1 = '' OR stream = $1) ORDER BY stream, sequence DESC, manifest_digest LIMIT $2",
        )
        .bind(stream.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(release).collect::<Result<_, _>>()?)
    }

    /// The release of `stream` with the highest sequence number, among those
    /// of the same vendor and class (NULL matching NULL).
    pub async fn newest_release(
        &self,
        stream: &str,
        vendor_id: Option<&str>,
        class_id: Option<&str>,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM releases WHERE stream = $1 AND COALESCE(vendor_id, '') = $2 AND COALESCE(class_id, '') = $3 \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(stream)
        .bind(vendor_id.unwrap_or_default())
        .bind(class_id.unwrap_or_default())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(release).transpose()?)
    }

    /// The payloads a release names.
    pub async fn release_payloads(&self, digest: &str) -> Result<Vec<PayloadRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT component, uri, sha256, size FROM release_payloads WHERE manifest_digest = $1 ORDER BY component",
        )
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        let row = |r: &AnyRow| -> Result<PayloadRecord, sqlx::Error> {
            Ok(PayloadRecord {
                component: r.try_get(0)?,
                uri: r.try_get(1)?,
                sha256: r.try_get(2)?,
                size: r.try_get(3)?,
            })
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }
}
