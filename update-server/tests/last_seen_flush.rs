//! `Store::flush_last_seen` on both backends: a batch spanning several
//! statements stores every time, never moves a time backwards and ignores
//! unknown devices. An ignored test times a 100,000-entry flush:
//!
//! ```text
//! GANTRY_TEST_PG=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p gantry-server --test last_seen_flush -- --ignored --nocapture
//! ```
//!
//! (`GANTRY_FLUSH_BENCH_DEVICES` sets how many devices are registered,
//! default 1,000,000.)

mod common;

use std::collections::HashMap;
use std::time::Instant;

use gantry_server::store::Store;
use sqlx::Connection as _;

use common::{Backend, TestServer};

/// A server's store on a fresh database, and the database's URL for plain
/// connections that seed and read back.
struct Db {
    server: TestServer,
    backend: Backend,
    url: String,
}

impl Db {
    async fn open(backend: Backend) -> Option<Db> {
        let server = TestServer::start(backend).await?;
        let url = match &server.pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", server.dir.path().join("data").join("gantry.db").display()),
        };
        Some(Db { server, backend, url })
    }

    fn store(&self) -> &Store {
        &self.server.running.as_ref().expect("running").state.store
    }

    /// Runs one statement on a plain connection.
    async fn exec(&self, sql: &str, n: i64) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).bind(n).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).bind(n).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }

    /// Registers `dev-0000000` .. `dev-{n-1}` in one statement.
    async fn seed(&self, n: i64) {
        let sql = match self.backend {
            Backend::Sqlite => {
                "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n + 1 < $1) \
                 INSERT INTO devices (id, public_key, key_id, enrolled_at, enrolled_by) \
                 SELECT printf('dev-%07d', n), x'00', 'k', 0, 'test' FROM g"
            }
            Backend::Postgres => {
                "INSERT INTO devices (id, public_key, key_id, enrolled_at, enrolled_by) \
                 SELECT 'dev-' || lpad(g::text, 7, '0'), '\\x00'::bytea, 'k', 0, 'test' \
                 FROM generate_series(0, $1 - 1) g"
            }
        };
        self.exec(sql, n).await;
    }

    /// Every device's last-seen time.
    async fn last_seen(&self) -> HashMap<String, Option<i64>> {
        let sql = "SELECT id, last_seen FROM devices";
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let rows: Vec<(String, Option<i64>)> = sqlx::query_as(sql).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows.into_iter().collect()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let rows: Vec<(String, Option<i64>)> = sqlx::query_as(sql).fetch_all(&mut c).await.unwrap();
                c.close().await.unwrap();
                rows.into_iter().collect()
            }
        }
    }

    async fn close(self) {
        self.server.stop().await;
    }
}

fn id(n: i64) -> String {
    format!("dev-{n:07}")
}

/// Enough devices for the flush to span several statements (4,000 devices
/// each) and end on a shorter one.
const DEVICES: i64 = 12_000;

async fn a_big_batch_is_stored(backend: Backend) {
    let Some(db) = Db::open(backend).await else { return };
    db.seed(DEVICES).await;
    // A third never seen, a third seen long ago, a third seen after the
    // times the batch carries.
    db.exec("UPDATE devices SET last_seen = 1000 WHERE CAST(substr(id, 5) AS BIGINT) % 3 = $1", 1).await;
    db.exec("UPDATE devices SET last_seen = 5000 WHERE CAST(substr(id, 5) AS BIGINT) % 3 = $1", 2).await;

    let mut batch: Vec<(String, i64)> = Vec::new();
    for n in (0..DEVICES).rev() {
        batch.push((id(n), 2000 + n % 100));
        if n % 50 == 0 {
            batch.push((format!("ghost-{n}"), 3000));
        }
    }
    // The same device twice: the later time wins whatever the order.
    batch.push((id(3), 4000));
    batch.push((id(6), 1500));

    db.store().flush_last_seen(&[]).await.unwrap();
    db.store().flush_last_seen(&batch).await.unwrap();

    let stored = db.last_seen().await;
    assert_eq!(stored.len(), DEVICES as usize, "unknown ids are not inserted");
    for n in 0..DEVICES {
        let expected = match n {
            3 => 4000,
            _ if n % 3 == 2 => 5000,
            _ => 2000 + n % 100,
        };
        assert_eq!(stored[&id(n)], Some(expected), "{}", id(n));
    }
    // Flushing older times again changes nothing.
    let older: Vec<(String, i64)> = (0..DEVICES).map(|n| (id(n), 1)).collect();
    db.store().flush_last_seen(&older).await.unwrap();
    assert_eq!(db.last_seen().await, stored);
    assert_eq!(db.store().device(&id(1)).await.unwrap().unwrap().last_seen, Some(2001));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_is_stored_sqlite() {
    a_big_batch_is_stored(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_is_stored_postgres() {
    a_big_batch_is_stored(Backend::Postgres).await;
}

const BENCH_BATCH: i64 = 100_000;

async fn time_flush(backend: Backend) {
    let Some(db) = Db::open(backend).await else { return };
    let devices: i64 =
        std::env::var("GANTRY_FLUSH_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let t0 = Instant::now();
    db.seed(devices).await;
    println!("{backend:?}: {devices} devices registered in {:.1} s", t0.elapsed().as_secs_f64());
    // Every tenth device, in the hash order the server's map hands out.
    let step = (devices / BENCH_BATCH).max(1);
    let ids: Vec<String> = (0..BENCH_BATCH.min(devices))
        .map(|k| id(k * step))
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    for (round, label) in [(1, "first sight (NULL before)"), (2, "newer times"), (3, "newer times")] {
        let batch: Vec<(String, i64)> = ids.iter().map(|i| (i.clone(), 1_000_000 + round)).collect();
        let t0 = Instant::now();
        db.store().flush_last_seen(&batch).await.unwrap();
        println!(
            "{backend:?}: flush of {} last-seen entries, {label}: {:.3} s",
            batch.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    let stored = db.last_seen().await;
    assert!(ids.iter().all(|i| stored[i] == Some(1_000_003)));
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run with --ignored --nocapture"]
async fn time_flush_sqlite() {
    time_flush(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing; run with --ignored --nocapture"]
async fn time_flush_postgres() {
    time_flush(Backend::Postgres).await;
}
