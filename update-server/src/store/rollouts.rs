//! Rollouts: a release assigned to a group or tag filter in stages. The
//! engine that moves them is `crate::rollout`; this is their storage.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now};

/// A rollout as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RolloutRecord {
    /// Id.
    pub id: String,
    /// The release rolled out.
    pub manifest_digest: String,
    /// Its stream.
    pub stream: String,
    /// Only devices in this group, if set.
    pub target_group: Option<String>,
    /// Only devices with all these tags.
    pub target_tags: Vec<String>,
    /// Cumulative percentages of the targeted devices per stage, ending at 100.
    pub stages: Vec<u32>,
    /// Percent of the devices assigned so far that must have confirmed the
    /// install before the next stage starts.
    pub success_threshold: i64,
    /// Percent of the devices assigned so far whose install failed (or was
    /// reverted) at which the rollout halts by itself.
    pub error_threshold: i64,
    /// `running`, `paused`, `halted`, `completed` or `cancelled`.
    pub state: String,
    /// Index of the stage in progress.
    pub current_stage: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last state change.
    pub updated_at: i64,
    /// Who created it.
    pub created_by: String,
}

/// What a device's report means for the rollout that assigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// `downloading`, `downloaded`, `installing`: it is at work (`updating`,
    /// and `stuck` once it stays quiet for `rollouts.stuck_after`).
    Updating,
    /// `installed`.
    Installed,
    /// `failed` or `reverted`.
    Failed,
}

/// How many of a rollout's devices of one stage are in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageCount {
    /// Stage index.
    pub stage: i64,
    /// `pending`, `assigned`, `updating`, `stuck`, `installed` or `failed`.
    pub state: String,
    /// Devices.
    pub devices: i64,
}

fn rollout(r: &AnyRow) -> Result<RolloutRecord, StoreError> {
    let json = |col: &str| -> Result<String, StoreError> { Ok(r.try_get::<String, _>(col)?) };
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("rollout: {e}"));
    Ok(RolloutRecord {
        id: r.try_get("id")?,
        manifest_digest: r.try_get("manifest_digest")?,
        stream: r.try_get("stream")?,
        target_group: r.try_get("target_group")?,
        target_tags: serde_json::from_str(&json("target_tags_json")?).map_err(corrupt)?,
        stages: serde_json::from_str(&json("stages_json")?).map_err(corrupt)?,
        success_threshold: r.try_get("success_threshold")?,
        error_threshold: r.try_get("error_threshold")?,
        state: r.try_get("state")?,
        current_stage: r.try_get("current_stage")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        created_by: r.try_get("created_by")?,
    })
}

const SELECT_ROLLOUT: &str =
    "SELECT o.*, r.stream FROM rollouts o JOIN releases r ON r.manifest_digest = o.manifest_digest";

impl Store {
    /// Enabled devices in `group` (if set) carrying every tag in `tags`,
    /// each with the class id it reported (if any).
    pub async fn target_devices(
        &self,
        group: Option<&str>,
        tags: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut sql = String::from(
            "SELECT d.id, d.class_id FROM devices d WHERE d.disabled = 0 \
             AND ($1 = '' OR EXISTS (SELECT 1 FROM device_groups g WHERE g.device_id = d.id AND g.name = $1))",
        );
        for i in 0..tags.len() {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = d.id AND t.tag = ${})",
                i + 2
            ));
        }
        sql.push_str(" ORDER BY d.id");
        let mut q = sqlx::query(&sql).bind(group.unwrap_or_default());
        for t in tags {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, sqlx::Error>>()?)
    }

    /// Stores a rollout and its devices (each with its stage, pending).
    pub async fn insert_rollout(&self, r: &RolloutRecord, devices: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rollouts (id, manifest_digest, target_group, target_tags_json, stages_json, success_threshold, \
             error_threshold, state, current_stage, created_at, updated_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.manifest_digest)
        .bind(r.target_group.clone())
        .bind(serde_json::to_string(&r.target_tags).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.stages).unwrap_or_else(|_| "[100]".into()))
        .bind(r.success_threshold)
        .bind(r.error_threshold)
        .bind(&r.state)
        .bind(r.current_stage)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(&r.created_by)
        .execute(&mut *tx)
        .await?;
        for (device, stage) in devices {
            sqlx::query(
                "INSERT INTO rollout_devices (rollout_id, device_id, stage, state, updated_at) VALUES ($1, $2, $3, 'pending', $4)",
            )
            .bind(&r.id)
            .bind(device)
            .bind(*stage)
            .bind(r.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A rollout.
    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_ROLLOUT} WHERE o.id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(rollout).transpose()
    }

    /// Rollouts, newest first; only those in `state` if given.
    pub async fn rollouts(&self, state: Option<&str>, limit: i64) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_ROLLOUT} WHERE ($1 = '' OR o.state = $1) ORDER BY o.created_at DESC, o.id LIMIT $2"
        ))
        .bind(state.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout).collect()
    }

    /// Device counts per stage and state.
    pub async fn rollout_counts(&self, id: &str) -> Result<Vec<StageCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT stage, state, COUNT(*) FROM rollout_devices WHERE rollout_id = $1 GROUP BY stage, state ORDER BY stage, state",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let row = |r: &AnyRow| -> Result<StageCount, sqlx::Error> {
            Ok(StageCount { stage: r.try_get(0)?, state: r.try_get(1)?, devices: r.try_get(2)? })
        };
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Moves a rollout from one of `from` to `to`; false if it was in none
    /// of them (another node or request got there first).
    pub async fn set_rollout_state(&self, id: &str, from: &[&str], to: &str) -> Result<bool, StoreError> {
        let mut done = false;
        for f in from {
            let r = sqlx::query("UPDATE rollouts SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4")
                .bind(to)
                .bind(now())
                .bind(id)
                .bind(*f)
                .execute(&self.pool)
                .await?;
            done |= r.rows_affected() == 1;
        }
        Ok(done)
    }

    /// Advances a running rollout from stage `from` to `from + 1`; false
    /// if it is not running at `from` any more.
    pub async fn advance_rollout(&self, id: &str, from: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE rollouts SET current_stage = $1, updated_at = $2 WHERE id = $3 AND current_stage = $4 AND state = 'running'",
        )
        .bind(from + 1)
        .bind(now())
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Assigns the release to the rollout's pending devices of stages up
    /// to `stage`, remembering what each was assigned before.
    pub async fn assign_rollout_stage(&self, r: &RolloutRecord, stage: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let pending = sqlx::query(
            "SELECT device_id FROM rollout_devices WHERE rollout_id = $1 AND stage <= $2 AND state = 'pending' ORDER BY device_id",
        )
        .bind(&r.id)
        .bind(stage)
        .fetch_all(&mut *tx)
        .await?;
        let at = now();
        for row in &pending {
            let device: String = row.try_get(0)?;
            let previous =
                sqlx::query("SELECT manifest_digest FROM device_assignments WHERE device_id = $1 AND stream = $2")
                    .bind(&device)
                    .bind(&r.stream)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|p| p.try_get::<String, _>(0))
                    .transpose()?;
            sqlx::query(
                "INSERT INTO device_assignments (device_id, stream, manifest_digest, assigned_at, assigned_by, rollout_id) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id, stream) DO UPDATE SET \
                 manifest_digest = excluded.manifest_digest, assigned_at = excluded.assigned_at, \
                 assigned_by = excluded.assigned_by, rollout_id = excluded.rollout_id",
            )
            .bind(&device)
            .bind(&r.stream)
            .bind(&r.manifest_digest)
            .bind(at)
            .bind(format!("rollout:{}", r.id))
            .bind(&r.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE rollout_devices SET state = 'assigned', previous_digest = $1, updated_at = $2 \
                 WHERE rollout_id = $3 AND device_id = $4",
            )
            .bind(previous)
            .bind(at)
            .bind(&r.id)
            .bind(&device)
            .execute(&mut *tx)
            .await?;
        }
        Self::bump_generation(&mut *tx).await?;
        tx.commit().await?;
        Ok(pending.len() as u64)
    }

    /// Records what a device reported about `digest` on `stream` for the
    /// rollout that assigned it that; returns that rollout's id.
    pub async fn rollout_report(
        &self,
        device: &str,
        stream: &str,
        digest: &str,
        outcome: DeviceOutcome,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT rollout_id FROM device_assignments WHERE device_id = $1 AND stream = $2 AND manifest_digest = $3 \
             AND rollout_id IS NOT NULL",
        )
        .bind(device)
        .bind(stream)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get(0)?;
        // A result is final until the next one; progress only moves a
        // device that has no result yet.
        let (state, from) = match outcome {
            DeviceOutcome::Updating => ("updating", "('assigned', 'updating', 'stuck')"),
            DeviceOutcome::Installed => ("installed", "('assigned', 'updating', 'stuck', 'installed', 'failed')"),
            DeviceOutcome::Failed => ("failed", "('assigned', 'updating', 'stuck', 'installed', 'failed')"),
        };
        sqlx::query(&format!(
            "UPDATE rollout_devices SET state = $1, updated_at = $2 WHERE rollout_id = $3 AND device_id = $4 \
             AND state IN {from}"
        ))
        .bind(state)
        .bind(now())
        .bind(&id)
        .bind(device)
        .execute(&self.pool)
        .await?;
        Ok(Some(id))
    }

    /// Marks the rollout's devices that have been `updating` since before
    /// `before` as `stuck`; returns how many.
    pub async fn mark_stuck(&self, id: &str, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE rollout_devices SET state = 'stuck' WHERE rollout_id = $1 AND state = 'updating' AND updated_at < $2",
        )
        .bind(id)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives every device the rollout assigned but which has not confirmed
    /// the install its previous assignment back (none, if it had none).
    pub async fn restore_rollout_devices(&self, r: &RolloutRecord) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT device_id, previous_digest FROM rollout_devices WHERE rollout_id = $1 \
             AND state IN ('assigned', 'updating', 'stuck', 'failed')",
        )
        .bind(&r.id)
        .fetch_all(&mut *tx)
        .await?;
        let at = now();
        for row in &rows {
            let device: String = row.try_get(0)?;
            let previous: Option<String> = row.try_get(1)?;
            // Only if the assignment is still this rollout's.
            match previous {
                Some(p) => {
                    sqlx::query(
                        "UPDATE device_assignments SET manifest_digest = $1, assigned_at = $2, assigned_by = $3, rollout_id = NULL \
                         WHERE device_id = $4 AND stream = $5 AND rollout_id = $6",
                    )
                    .bind(p)
                    .bind(at)
                    .bind(format!("rollout:{}:restored", r.id))
                    .bind(&device)
                    .bind(&r.stream)
                    .bind(&r.id)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "DELETE FROM device_assignments WHERE device_id = $1 AND stream = $2 AND rollout_id = $3",
                    )
                    .bind(&device)
                    .bind(&r.stream)
                    .bind(&r.id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Self::bump_generation(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
