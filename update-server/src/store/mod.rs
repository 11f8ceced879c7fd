//! Storage: one relational database through sqlx's `Any` driver, so the
//! same queries run on SQLite (the embedded default) and PostgreSQL
//! (several server nodes on one database).
//!
//! Queries use `$1`-style placeholders, which both databases accept, and
//! only types both map the same way (`TEXT`, `BIGINT`, byte strings).
//! Schemas are versioned migrations, one directory per backend
//! (`migrations/{sqlite,postgres}/`), embedded in the binary and applied at
//! start in sqlx's own bookkeeping table, so `sqlx migrate info` reads it.

mod devices;
mod migrations;
mod releases;
mod rollouts;
mod tokens;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row as _};

pub use devices::{DesiredRow, DeviceFilter, DeviceRecord, NewDevice, Recorded, ReportRecord, StreamRecord};
pub use releases::{PayloadRecord, ReleaseRecord};
pub use rollouts::{DeviceOutcome, RolloutRecord, StageCount};
pub use tokens::{ApiTokenRecord, EnrollmentGrant, EnrollmentTokenRecord};

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file in the data directory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL names no supported backend.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    /// A stored value is not what the server wrote.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// The server's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Both databases store integers as signed 64-bit (`BIGINT`): a `u64`
/// above `i64::MAX` cannot be stored as a number that sorts right, so the
/// API refuses it rather than let it wrap. `None` for those.
pub fn storable(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://...`), creating a SQLite
    /// file if missing, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        migrations::run(url, backend).await?;
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            // One writer at a time in SQLite: a few connections, WAL (set by
            // the migration step, persistent) and a busy timeout.
            Backend::Sqlite => {
                options
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => options.max_connections(16).connect(url).await?,
        };
        Ok(Store { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The desired-state generation: bumped by every change to what any
    /// device should run, polled by every node to drop its caches.
    pub async fn desired_generation(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM generations WHERE name = 'desired'").fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    async fn bump_generation<'c, E>(executor: E) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        sqlx::query("UPDATE generations SET value = value + 1 WHERE name = 'desired'").execute(executor).await?;
        Ok(())
    }

    /// The newest trust root document, if one was installed.
    pub async fn trust_root(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT document FROM trust_roots ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
    }

    /// Every trust root installed, oldest first: the chain a device that
    /// holds an older one walks to the newest.
    pub async fn trust_roots(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows =
            sqlx::query("SELECT version, document FROM trust_roots ORDER BY version").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let version: i64 = r.try_get(0)?;
                Ok((version as u64, r.try_get::<Vec<u8>, _>(1)?))
            })
            .collect()
    }

    /// Records a verified trust root; its version must be storable
    /// ([`storable`]).
    pub async fn insert_trust_root(&self, version: u64, document: &[u8], by: &str) -> Result<(), StoreError> {
        let version = storable(version).ok_or_else(|| StoreError::Corrupt(format!("trust root version {version}")))?;
        sqlx::query("INSERT INTO trust_roots (version, document, installed_at, installed_by) VALUES ($1, $2, $3, $4)")
            .bind(version)
            .bind(document.to_vec())
            .bind(now())
            .bind(by)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
