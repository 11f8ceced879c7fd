//! Devices, their groups and tags, what they should run (assignments) and
//! what they report.

use gantry_protocol::{Report, ReportState};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, now};

/// A device to enroll.
#[derive(Clone, Debug)]
pub struct NewDevice<'a> {
    /// Device id.
    pub id: &'a str,
    /// COSE_Key of its public key.
    pub public_key: &'a [u8],
    /// Hex key id of that key.
    pub key_id: &'a str,
    /// Who enrolled it (operator token name, or `enrollment-token:<id>`).
    pub enrolled_by: &'a str,
    /// Groups.
    pub groups: &'a [String],
    /// Tags.
    pub tags: &'a [String],
}

/// A device as stored.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    /// Device id.
    pub id: String,
    /// COSE_Key of its public key.
    pub public_key: Vec<u8>,
    /// Hex key id.
    pub key_id: String,
    /// Enrollment time.
    pub enrolled_at: i64,
    /// Who enrolled it.
    pub enrolled_by: String,
    /// Refused at login and check-in.
    pub disabled: bool,
    /// Last check-in (flushed in batches, so up to a flush interval old).
    pub last_seen: Option<i64>,
    /// Last inventory, JSON.
    pub inventory: Option<String>,
    /// SHA-256 of the last inventory's canonical JSON.
    pub inventory_hash: Option<Vec<u8>>,
    /// Groups, sorted.
    pub groups: Vec<String>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Vendor id it reported at its last check-in, hex.
    pub vendor_id: Option<String>,
    /// Class id it reported at its last check-in, hex.
    pub class_id: Option<String>,
}

/// What [`Store::record_report`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored.
    Stored,
    /// Refused: the device already has `max` streams and this is a new one.
    TooManyStreams {
        /// The limit.
        max: u32,
    },
}

/// Which devices to list.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    /// Only members of this group.
    pub group: Option<String>,
    /// Only devices with this tag.
    pub tag: Option<String>,
    /// Only ids after this one (pagination).
    pub after: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// One stream assigned to a device, with what a ticket and the device need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRow {
    /// Stream.
    pub stream: String,
    /// Manifest digest, hex.
    pub manifest_digest: String,
    /// Sequence number.
    pub sequence: i64,
    /// Envelope SHA-256, hex.
    pub envelope_sha256: String,
    /// Envelope size.
    pub envelope_size: i64,
}

/// What a device confirmed it runs on one stream.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamRecord {
    /// Stream.
    pub stream: String,
    /// Manifest digest, hex.
    pub manifest_digest: String,
    /// Last reported state.
    pub state: String,
    /// When.
    pub updated_at: i64,
}

/// One progress or result report as stored: what the device sent (the
/// wire type, `gantry_protocol::Report`) and when it arrived. Its JSON is
/// the report's fields and `at` (`ReportRecord` in openapi.json).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReportRecord {
    /// The report.
    #[serde(flatten)]
    pub report: Report,
    /// When the server received it, Unix seconds.
    pub at: i64,
}

fn device(row: &AnyRow, groups: Vec<String>, tags: Vec<String>) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        public_key: row.try_get("public_key")?,
        key_id: row.try_get("key_id")?,
        enrolled_at: row.try_get("enrolled_at")?,
        enrolled_by: row.try_get("enrolled_by")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        last_seen: row.try_get("last_seen")?,
        inventory: row.try_get("inventory")?,
        inventory_hash: row.try_get("inventory_hash")?,
        groups,
        tags,
        vendor_id: row.try_get("vendor_id")?,
        class_id: row.try_get("class_id")?,
    })
}

/// Devices per last-seen statement: two bind parameters each, well under
/// SQLite's limit (32,766 in the bundled 3.46) and PostgreSQL's (65,535).
/// Measured on 100,000 devices out of 1,000,000, 1,000 to 16,000 rows per
/// statement all flush in about the same time; per-device statements took
/// 8x (SQLite) to 12x (PostgreSQL) longer.
const LAST_SEEN_CHUNK: usize = 4_000;

/// `UPDATE … FROM (VALUES …)` for `rows` devices: both SQLite (3.33 and
/// later) and PostgreSQL take it, and name the columns of a `VALUES` list
/// `column1`, `column2`. SQLite gets anonymous `?` placeholders: it looks
/// each `$N` up among the names seen so far, quadratic in a long list.
fn last_seen_sql(backend: Backend, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(200 + rows * 16);
    sql.push_str("UPDATE devices SET last_seen = v.column2 FROM (VALUES ");
    for k in 0..rows {
        if k > 0 {
            sql.push_str(", ");
        }
        match backend {
            Backend::Sqlite => sql.push_str("(?, ?)"),
            Backend::Postgres => {
                let _ = write!(sql, "(${}, ${})", 2 * k + 1, 2 * k + 2);
            }
        }
    }
    sql.push_str(
        ") AS v WHERE devices.id = v.column1 AND (devices.last_seen IS NULL OR devices.last_seen < v.column2)",
    );
    sql
}

impl Store {
    /// Enrolls a device. `Ok(false)` if the id is taken (by any key).
    pub async fn insert_device(&self, d: &NewDevice<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = Self::insert_device_in(&mut tx, d, now()).await?;
        if inserted {
            tx.commit().await?;
        }
        Ok(inserted)
    }

    /// Enrolls many devices in one transaction (a factory's list, or a
    /// load test's fleet), writing exactly the rows [`Store::insert_device`]
    /// writes; ids already taken are skipped. Returns how many were new.
    pub async fn insert_devices(&self, devices: &[NewDevice<'_>]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        let mut inserted = 0;
        for d in devices {
            inserted += u64::from(Self::insert_device_in(&mut tx, d, at).await?);
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn insert_device_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        d: &NewDevice<'_>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO devices (id, public_key, key_id, enrolled_at, enrolled_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(d.id)
        .bind(d.public_key.to_vec())
        .bind(d.key_id)
        .bind(at)
        .bind(d.enrolled_by)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        for g in d.groups {
            sqlx::query("INSERT INTO device_groups (device_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(d.id)
                .bind(g)
                .execute(&mut **tx)
                .await?;
        }
        for t in d.tags {
            sqlx::query("INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(d.id)
                .bind(t)
                .execute(&mut **tx)
                .await?;
        }
        Ok(true)
    }

    /// A device, with its groups and tags.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let Some(row) = sqlx::query("SELECT * FROM devices WHERE id = $1").bind(id).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let groups = self.strings("SELECT name FROM device_groups WHERE device_id = $1 ORDER BY name", id).await?;
        let tags = self.strings("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag", id).await?;
        Ok(Some(device(&row, groups, tags)?))
    }

    async fn strings(&self, sql: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(sql).bind(id).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// Devices matching `filter`, by id (groups and tags included).
    pub async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM devices d WHERE ($1 = '' OR d.id > $1) \
             AND ($2 = '' OR EXISTS (SELECT 1 FROM device_groups g WHERE g.device_id = d.id AND g.name = $2)) \
             AND ($3 = '' OR EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = $3)) \
             ORDER BY d.id LIMIT $4",
        )
        .bind(filter.after.clone().unwrap_or_default())
        .bind(filter.group.clone().unwrap_or_default())
        .bind(filter.tag.clone().unwrap_or_default())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let groups = self.strings("SELECT name FROM device_groups WHERE device_id = $1 ORDER BY name", &id).await?;
            let tags = self.strings("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag", &id).await?;
            out.push(device(row, groups, tags)?);
        }
        Ok(out)
    }

    /// Replaces a device's groups and/or tags, and sets `disabled`; false
    /// if there is no such device.
    pub async fn update_device(
        &self,
        id: &str,
        groups: Option<&[String]>,
        tags: Option<&[String]>,
        disabled: Option<bool>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM devices WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(false);
        }
        if let Some(groups) = groups {
            sqlx::query("DELETE FROM device_groups WHERE device_id = $1").bind(id).execute(&mut *tx).await?;
            for g in groups {
                sqlx::query("INSERT INTO device_groups (device_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(g)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(tags) = tags {
            sqlx::query("DELETE FROM device_tags WHERE device_id = $1").bind(id).execute(&mut *tx).await?;
            for t in tags {
                sqlx::query("INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(disabled) = disabled {
            sqlx::query("UPDATE devices SET disabled = $1 WHERE id = $2")
                .bind(disabled as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Other nodes must see the change at their next check-in.
            Self::bump_generation(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a new inventory and the vendor and class the device reported
    /// with it (only called when their hash changed).
    pub async fn save_inventory(
        &self,
        id: &str,
        json: &str,
        hash: &[u8],
        vendor_id: Option<&str>,
        class_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET inventory = $1, inventory_hash = $2, vendor_id = $3, class_id = $4 WHERE id = $5",
        )
        .bind(json)
        .bind(hash.to_vec())
        .bind(vendor_id.map(str::to_owned))
        .bind(class_id.map(str::to_owned))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether any device reported `class_id` (hex).
    pub async fn class_in_fleet(&self, class_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM devices WHERE class_id = $1 LIMIT 1")
            .bind(class_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Writes a batch of last-seen times: one `UPDATE … FROM (VALUES …)`
    /// per few thousand devices, each statement its own transaction
    /// (a failed flush is retried whole, and writing a time twice is
    /// harmless). A stored time never goes backwards, unknown ids are
    /// ignored and an id given twice keeps its latest time.
    pub async fn flush_last_seen(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        // One row per id (PostgreSQL updates a row joined twice from either
        // row, unpredictably), sorted so that nodes flushing overlapping
        // batches lock rows in the same order.
        let mut rows: Vec<(&str, i64)> = batch.iter().map(|(id, at)| (id.as_str(), *at)).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        rows.dedup_by(|next, kept| next.0 == kept.0);
        for chunk in rows.chunks(LAST_SEEN_CHUNK) {
            // Full chunks share one prepared statement; the last, shorter
            // one is not kept.
            let full = chunk.len() == LAST_SEEN_CHUNK;
            let sql = last_seen_sql(self.backend, chunk.len());
            let mut q = sqlx::query(&sql);
            for (id, at) in chunk {
                q = q.bind(*id).bind(*at);
            }
            let mut tx = self.pool.begin().await?;
            if self.backend == Backend::Postgres {
                // An index lookup per device, not a hash join over a scan
                // of every device: the planner prices the lookups as disk
                // reads and picks the scan from a few thousand rows on,
                // which costs a full pass over the table per chunk.
                sqlx::query(
                    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
                )
                .execute(&mut *tx)
                .await?;
            }
            q.persistent(full).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// What `id` should run, per stream, in stream order.
    pub async fn desired(&self, id: &str) -> Result<Vec<DesiredRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.stream, a.manifest_digest, r.sequence, r.envelope_sha256, r.envelope_size \
             FROM device_assignments a JOIN releases r ON r.manifest_digest = a.manifest_digest \
             WHERE a.device_id = $1 ORDER BY a.stream",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let row = |r: &AnyRow| -> Result<DesiredRow, sqlx::Error> {
            Ok(DesiredRow {
                stream: r.try_get(0)?,
                manifest_digest: r.try_get(1)?,
                sequence: r.try_get(2)?,
                envelope_sha256: r.try_get(3)?,
                envelope_size: r.try_get(4)?,
            })
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Assigns a release to a device's stream (replacing what was there).
    pub async fn assign(&self, id: &str, stream: &str, digest: &str, by: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO device_assignments (device_id, stream, manifest_digest, assigned_at, assigned_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, stream) DO UPDATE SET \
             manifest_digest = excluded.manifest_digest, assigned_at = excluded.assigned_at, \
             assigned_by = excluded.assigned_by, rollout_id = NULL",
        )
        .bind(id)
        .bind(stream)
        .bind(digest)
        .bind(now())
        .bind(by)
        .execute(&mut *tx)
        .await?;
        Self::bump_generation(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a device's assignment on `stream`; false if there was none.
    pub async fn unassign(&self, id: &str, stream: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM device_assignments WHERE device_id = $1 AND stream = $2")
            .bind(id)
            .bind(stream)
            .execute(&mut *tx)
            .await?;
        Self::bump_generation(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a device's report, keeping its newest `keep` reports; an
    /// `installed` one also becomes the stream's confirmed state. A report
    /// on a stream the device has no row for yet is refused once it has
    /// `max_streams` of them.
    pub async fn record_report(
        &self,
        id: &str,
        report: &Report,
        keep: u32,
        max_streams: u32,
    ) -> Result<Recorded, StoreError> {
        // Checked before the transaction, whose first statement must be a
        // write: in SQLite's WAL mode a transaction that read first cannot
        // take the write lock once another writer committed (SQLITE_BUSY,
        // no waiting). Two reports racing on two new streams may pass the
        // cap by one; the cap bounds rows, not exactly.
        if report.state.is_result() {
            let known = sqlx::query("SELECT 1 FROM device_streams WHERE device_id = $1 AND stream = $2")
                .bind(id)
                .bind(&report.stream)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if !known {
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM device_streams WHERE device_id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get(0)?;
                if n >= i64::from(max_streams) {
                    return Ok(Recorded::TooManyStreams { max: max_streams });
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO device_reports (device_id, stream, manifest_digest, state, progress, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&report.stream)
        .bind(&report.manifest_digest)
        .bind(report.state.as_str())
        .bind(report.progress)
        .bind(report.detail().map(str::to_owned))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        // Only the newest `keep` stay: everything at or below the id of the
        // (keep + 1)-th newest goes (nothing while there are fewer).
        sqlx::query(
            "DELETE FROM device_reports WHERE device_id = $1 AND id <= \
             (SELECT id FROM device_reports WHERE device_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(id)
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        if report.state.is_result() {
            let digest_kept = if report.state == ReportState::Installed {
                "excluded.manifest_digest"
            } else {
                "device_streams.manifest_digest"
            };
            let sql = format!(
                "INSERT INTO device_streams (device_id, stream, manifest_digest, state, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, stream) DO UPDATE SET \
                 manifest_digest = {digest_kept}, state = excluded.state, updated_at = excluded.updated_at"
            );
            sqlx::query(&sql)
                .bind(id)
                .bind(&report.stream)
                .bind(&report.manifest_digest)
                .bind(report.state.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Recorded::Stored)
    }

    /// Deletes every report received before `at`, in batches; returns how
    /// many went.
    pub async fn delete_reports_before(&self, at: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM device_reports WHERE id IN (SELECT id FROM device_reports WHERE at < $1 LIMIT 10000)",
            )
            .bind(at)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    /// What a device confirmed, per stream.
    pub async fn streams(&self, id: &str) -> Result<Vec<StreamRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream, manifest_digest, state, updated_at FROM device_streams WHERE device_id = $1 ORDER BY stream",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let row = |r: &AnyRow| -> Result<StreamRecord, sqlx::Error> {
            Ok(StreamRecord {
                stream: r.try_get(0)?,
                manifest_digest: r.try_get(1)?,
                state: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// A device's latest reports, newest first.
    pub async fn reports(&self, id: &str, limit: i64) -> Result<Vec<ReportRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream, manifest_digest, state, progress, detail, at FROM device_reports \
             WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let row = |r: &AnyRow| -> Result<ReportRecord, sqlx::Error> {
            let state: String = r.try_get(2)?;
            let state = state.parse::<ReportState>().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let mut report = Report::new(r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?, state);
            report.progress = r.try_get(3)?;
            // Stored after `Report::validate`: within MAX_DETAIL, kept whole.
            if let Some(detail) = r.try_get::<Option<String>, _>(4)? {
                report = report.with_detail(&detail);
            }
            Ok(ReportRecord { report, at: r.try_get(5)? })
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// What a device has been assigned, per stream (for operators).
    pub async fn assignments(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT stream, manifest_digest FROM device_assignments WHERE device_id = $1 ORDER BY stream")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, sqlx::Error>>()?)
    }
}
