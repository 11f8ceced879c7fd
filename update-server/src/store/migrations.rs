//! The versioned schema, embedded: `migrations/<backend>/NNNN_name.sql`.
//! Applied through sqlx's migrator with a concrete connection (it takes the
//! database's migration lock), before the `Any` pool opens.

use std::borrow::Cow;
use std::str::FromStr as _;

use futures_util::future::BoxFuture;
use sqlx::Connection as _;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, StoreError};

/// (version, description, SQL) per backend, oldest first.
type Embedded = &'static [(i64, &'static str, &'static str)];

const SQLITE: Embedded = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "rollout previous", include_str!("../../migrations/sqlite/0002_rollout_previous.sql")),
    (3, "second pass", include_str!("../../migrations/sqlite/0003_second_pass.sql")),
];
const POSTGRES: Embedded = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "rollout previous", include_str!("../../migrations/postgres/0002_rollout_previous.sql")),
    (3, "second pass", include_str!("../../migrations/postgres/0003_second_pass.sql")),
];

#[derive(Debug)]
struct Source(Embedded);

impl<'s> MigrationSource<'s> for Source {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(*version, Cow::Borrowed(*name), MigrationType::Simple, Cow::Borrowed(*sql), false)
                })
                .collect())
        })
    }
}

pub(super) async fn run(url: &str, backend: Backend) -> Result<(), StoreError> {
    match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .foreign_keys(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
            Migrator::new(Source(SQLITE)).await?.run(&mut conn).await?;
            conn.close().await?;
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            Migrator::new(Source(POSTGRES)).await?.run(&mut conn).await?;
            conn.close().await?;
        }
    }
    Ok(())
}
