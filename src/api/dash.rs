//! The JSON the dashboard reads beyond `/v1/evals` and `/v1/train`: the overview of eval
//! records with Wilson intervals, the comparison of two of its rows, a job's curves cut
//! down on the server, and one event stream of every job's state. Computed in
//! `jobs::dashboard`; here only mapped to HTTP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::datasets::store;
use super::error::{ApiError, ErrorBody};
use crate::jobs::dashboard::{self, Comparison, CurveBuilder, Curves, OverviewRow};
use crate::store::evals::EvalFilter;

/// Most records the overview reads; beyond it `truncated` is true and the oldest are left
/// out (filter by model or dataset to see them).
const MAX_OVERVIEW_RECORDS: i64 = 20_000;
/// Metric rows a curve request reads at a time (a job logs one per optimiser step).
const CURVE_PAGE: i64 = 5_000;
const MAX_POINTS: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    pub model: Option<String>,
    pub dataset: Option<String>,
    pub kind: Option<String>,
    /// Only the rounds of this job.
    pub job: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub rows: Vec<OverviewRow>,
    /// More than 20,000 records matched; the oldest are not in the rows.
    pub truncated: bool,
    /// The z of the intervals (95%).
    pub z: f64,
    /// Rows with n below this are marked `small_n`.
    pub small_n_below: u64,
}

#[utoipa::path(get, path = "/v1/overview", tag = "dashboard", params(OverviewQuery),
    responses((status = 200, body = Overview), (status = 422, body = ErrorBody)))]
pub async fn overview(
    State(st): State<Arc<AppState>>,
    Query(q): Query<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    let f = EvalFilter {
        model: q.model.as_deref(),
        dataset: q.dataset.as_deref(),
        kind: q.kind.as_deref(),
        job_id: q.job.as_deref(),
    };
    let (records, total) = store(&st)?.list_evals(&f, MAX_OVERVIEW_RECORDS, 0).await?;
    Ok(Json(Overview {
        rows: dashboard::overview(&records),
        truncated: total > records.len() as i64,
        z: dashboard::Z95,
        small_n_below: dashboard::SMALL_N,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CompareQuery {
    /// An eval record id.
    pub a: String,
    /// Another eval record id.
    pub b: String,
}

#[utoipa::path(get, path = "/v1/overview/compare", tag = "dashboard", params(CompareQuery),
    responses((status = 200, body = Comparison), (status = 404, body = ErrorBody)))]
pub async fn compare(
    State(st): State<Arc<AppState>>,
    Query(q): Query<CompareQuery>,
) -> Result<Json<Comparison>, ApiError> {
    let db = store(&st)?;
    let mut rows = Vec::new();
    for id in [&q.a, &q.b] {
        let r = db
            .get_eval(id)
            .await?
            .ok_or_else(|| ApiError::Missing(format!("no eval record {id}")))?;
        rows.push(dashboard::row(&r, 1));
    }
    let b = rows.pop().expect("two rows");
    let a = rows.pop().expect("two rows");
    Ok(Json(dashboard::compare(a, b)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CurvesQuery {
    /// Points per metric, 1..=10000 (default 1000): steps are averaged in equal buckets.
    pub points: Option<usize>,
    /// Comma-separated metric names (default: every numeric metric).
    pub keys: Option<String>,
}

#[utoipa::path(get, path = "/v1/train/{id}/curves", tag = "dashboard",
    params(("id" = String, Path), CurvesQuery),
    responses((status = 200, body = Curves), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn curves(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<CurvesQuery>,
) -> Result<Json<Curves>, ApiError> {
    let points = q.points.unwrap_or(1000);
    if !(1..=MAX_POINTS).contains(&points) {
        return Err(ApiError::Validation(format!(
            "points must be in 1..={MAX_POINTS}"
        )));
    }
    let db = store(&st)?;
    db.get_job(&id)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no job {id}")))?;
    let keys: Option<Vec<String>> = q.keys.as_deref().map(|k| {
        k.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    // folded a page of rows at a time: memory stays one page plus the buckets
    let mut c = CurveBuilder::new(db.last_metric_step(&id).await?, points, keys.as_deref());
    let mut since = 0;
    loop {
        let rows = db.metrics_since(&id, since, CURVE_PAGE).await?;
        let Some(last) = rows.last() else { break };
        since = last.step;
        for r in &rows {
            c.push(r);
        }
        if (rows.len() as i64) < CURVE_PAGE {
            break;
        }
    }
    let c = c.finish();
    Ok(Json(c))
}

/// `GET /v1/train/events`: a `jobs` event with every job's id, method, state and progress
/// whenever any of them changes (the database is polled each second, so jobs of other
/// server processes show too). Bounded by `--max-event-streams` with the per-job streams.
#[utoipa::path(get, path = "/v1/train/events", tag = "dashboard",
    responses((status = 200, description = "text/event-stream of `jobs` events: a JSON list of {id, method, state, error, progress, created_at}"),
        (status = 429, body = ErrorBody)))]
pub async fn job_events(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    store(&st)?;
    let permit = st.event_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded("too many open event streams (--max-event-streams)".into())
    })?;
    let s = (permit, st, String::new(), true);
    let stream = futures_util::stream::unfold(s, |(permit, st, last, first)| async move {
        let mut first = first;
        loop {
            if !first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            first = false;
            let Ok(db) = store(&st) else { continue };
            let Ok(jobs) = db.list_jobs(None, 200, 0).await else {
                continue;
            };
            let list: Vec<_> = jobs
                .iter()
                .map(|j| {
                    json!({"id": j.id, "method": j.method, "state": j.state, "error": j.error,
                        "progress": serde_json::from_str::<serde_json::Value>(&j.progress).unwrap_or(json!({})),
                        "created_at": j.created_at})
                })
                .collect();
            let data = serde_json::to_string(&list).unwrap_or_default();
            if data != last {
                let e = Event::default().event("jobs").data(data.clone());
                return Some((Ok::<_, Infallible>(e), (permit, st, data, false)));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
