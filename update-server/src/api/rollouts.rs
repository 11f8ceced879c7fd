//! The rollout API: create, list, inspect, pause, resume, cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiJson, ApiQuery, OperatorCaller, Shared, refresh_generation};
use crate::auth::operator::Permission;
use crate::auth::random_bytes;
use crate::error::ApiError;
use crate::rollout::{self, Progress};
use crate::store::{RolloutRecord, StageCount, now};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRollout {
    manifest_digest: String,
    group: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// Cumulative percentages, strictly increasing, ending at 100.
    stages: Option<Vec<u32>>,
    /// Percent of assigned devices that must confirm before the next stage.
    success_threshold: Option<i64>,
    /// Percent of assigned devices failing that halts the rollout.
    error_threshold: Option<i64>,
}

#[derive(Serialize)]
pub(super) struct StageView {
    stage: i64,
    percent: u32,
    devices: i64,
    pending: i64,
    assigned: i64,
    updating: i64,
    stuck: i64,
    installed: i64,
    failed: i64,
}

#[derive(Serialize)]
pub(super) struct RolloutView {
    #[serde(flatten)]
    rollout: RolloutRecord,
    progress: Progress,
    stage_devices: Vec<StageView>,
    /// Devices of the filter left out because they reported another class
    /// than the release's (on creation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped_other_class: Option<usize>,
}

fn view(rollout: RolloutRecord, counts: &[StageCount]) -> RolloutView {
    let progress = rollout::progress(counts, rollout.current_stage);
    let stage_devices = rollout
        .stages
        .iter()
        .enumerate()
        .map(|(i, &percent)| {
            let n = |state: Option<&str>| {
                counts
                    .iter()
                    .filter(|c| c.stage == i as i64 && state.is_none_or(|s| s == c.state))
                    .map(|c| c.devices)
                    .sum()
            };
            StageView {
                stage: i as i64,
                percent,
                devices: n(None),
                pending: n(Some("pending")),
                assigned: n(Some("assigned")),
                updating: n(Some("updating")),
                stuck: n(Some("stuck")),
                installed: n(Some("installed")),
                failed: n(Some("failed")),
            }
        })
        .collect();
    RolloutView { rollout, progress, stage_devices, skipped_other_class: None }
}

async fn load(s: &Shared, id: &str) -> Result<RolloutView, ApiError> {
    let r = s.store.rollout(id).await?.ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    let counts = s.store.rollout_counts(id).await?;
    Ok(view(r, &counts))
}

/// `POST /api/v1/rollouts` (deploy): targets the enabled devices of a
/// group and/or tag filter, and assigns the first stage at once.
pub(super) async fn create(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiJson(req): ApiJson<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    caller.require(Permission::Deploy)?;
    let bad = |m: &str| ApiError::bad_request("bad-request", m.to_owned());
    let stages = req.stages.unwrap_or_else(|| vec![10, 50, 100]);
    if stages.is_empty()
        || stages.len() > 16
        || stages.windows(2).any(|w| w[0] >= w[1])
        || stages.last() != Some(&100)
        || stages[0] == 0
    {
        return Err(bad("stages: 1-16 cumulative percentages, strictly increasing, ending at 100"));
    }
    let success = req.success_threshold.unwrap_or(100);
    let error = req.error_threshold.unwrap_or(10);
    if !(0..=100).contains(&success) || !(0..=100).contains(&error) {
        return Err(bad("success_threshold and error_threshold: 0-100 (percent)"));
    }
    if req.group.is_none() && req.tags.is_empty() {
        return Err(bad("target a group and/or tags"));
    }
    let release = s
        .store
        .release(&req.manifest_digest)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no release {}", req.manifest_digest)))?;
    let matching = s.store.target_devices(req.group.as_deref(), &req.tags).await?;
    let total = matching.len();
    // A release reaches only devices of its class (or that never said
    // theirs).
    let devices: Vec<String> = matching
        .into_iter()
        .filter(|(_, class)| match (&release.class_id, class) {
            (Some(want), Some(has)) => want == has,
            _ => true,
        })
        .map(|(id, _)| id)
        .collect();
    let skipped = total - devices.len();
    if devices.is_empty() {
        let why = if skipped > 0 { " of the release's class" } else { "" };
        return Err(ApiError::refused("no-devices", format!("no enabled device{why} matches the group and tags")));
    }
    let at = now();
    let record = RolloutRecord {
        id: hex::encode(random_bytes::<8>()),
        manifest_digest: release.manifest_digest,
        stream: release.stream,
        target_group: req.group,
        target_tags: req.tags,
        stages,
        success_threshold: success,
        error_threshold: error,
        state: "running".into(),
        current_stage: 0,
        created_at: at,
        updated_at: at,
        created_by: caller.name(),
    };
    let plan = rollout::plan(&record.id, devices, &record.stages);
    s.store.insert_rollout(&record, &plan).await?;
    rollout::start(&s.store, &record, s.config.rollouts.stuck_after.0).await?;
    refresh_generation(&s).await;
    tracing::info!(rollout = %record.id, devices = plan.len(), skipped_other_class = skipped, by = %caller.name(), "rollout created");
    let mut view = load(&s, &record.id).await?;
    view.skipped_other_class = Some(skipped);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/rollouts?state=&limit=`.
pub(super) async fn list(
    State(s): State<Shared>,
    caller: OperatorCaller,
    ApiQuery(q): ApiQuery<RolloutQuery>,
) -> Result<Json<Vec<RolloutView>>, ApiError> {
    caller.require(Permission::Read)?;
    let mut out = Vec::new();
    for r in s.store.rollouts(q.state.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000)).await? {
        let counts = s.store.rollout_counts(&r.id).await?;
        out.push(view(r, &counts));
    }
    Ok(Json(out))
}

/// `GET /api/v1/rollouts/{id}`.
pub(super) async fn get(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(load(&s, &id).await?))
}

/// `POST /api/v1/rollouts/{id}/{pause|resume|cancel}` (deploy).
pub(super) async fn act(
    State(s): State<Shared>,
    caller: OperatorCaller,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    caller.require(Permission::Deploy)?;
    let r = s.store.rollout(&id).await?.ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    let (from, to): (&[&str], &str) = match action.as_str() {
        "pause" => (&["running"], "paused"),
        "resume" => (&["paused"], "running"),
        "cancel" => (&["running", "paused", "halted"], "cancelled"),
        _ => return Err(ApiError::not_found("actions: pause, resume, cancel")),
    };
    if !s.store.set_rollout_state(&id, from, to).await? {
        return Err(ApiError::conflict("rollout-state", format!("rollout {id} is {}; cannot {action} it", r.state)));
    }
    match to {
        "running" => {
            rollout::evaluate(&s.store, &id, s.config.rollouts.stuck_after.0).await?;
        }
        "cancelled" => {
            s.store.restore_rollout_devices(&r).await?;
        }
        _ => {}
    }
    refresh_generation(&s).await;
    tracing::info!(rollout = %id, %action, by = %caller.name(), "rollout {action}");
    Ok(Json(load(&s, &id).await?))
}
