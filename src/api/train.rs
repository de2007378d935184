//! `/v1/train`: Step-KTO, KTO and SFT runs as jobs in the database. A posted config is
//! checked at once (422 naming the field) and queued; a worker in any server process on
//! the same database claims it (`jobs`). These handlers only read and write rows, and the
//! samples file of a round from the job's directory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::datasets::store;
use super::error::{ApiError, ErrorBody, page};
use crate::jobs::method_name;
use crate::jobs::spec::{JobSpec, job_dir};
use crate::store::jobs::{JobRow, MetricRow, STATES, new_id};

/// Most rows one page returns.
const MAX_PAGE: i64 = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobCreated {
    pub id: String,
    pub state: String,
}

/// A job as `GET /v1/train/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub method: String,
    /// queued | running | succeeded | failed | cancelled
    pub state: String,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub attempts: i64,
    pub worker: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The worker's last report: phase, round, rounds, step, round_steps, global_step,
    /// tokens_per_s, eta_seconds, last_metrics, disk_bytes (and final_model when done).
    #[schema(value_type = Object)]
    pub progress: Value,
    #[schema(value_type = Object)]
    pub config: Value,
}

fn view(j: &JobRow) -> JobView {
    JobView {
        id: j.id.clone(),
        method: j.method.clone(),
        state: j.state.clone(),
        error: j.error.clone(),
        cancel_requested: j.cancel_requested,
        attempts: j.attempts,
        worker: j.worker.clone(),
        created_at: j.created_at,
        started_at: j.started_at,
        finished_at: j.finished_at,
        progress: serde_json::from_str(&j.progress).unwrap_or(json!({})),
        config: serde_json::from_str(&j.config).unwrap_or(Value::Null),
    }
}

async fn job(st: &AppState, id: &str) -> Result<JobRow, ApiError> {
    store(st)?
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no job {id}")))
}

#[utoipa::path(post, path = "/v1/train", tag = "train",
    request_body(content = Object, description = "a `stepkto train` config in JSON plus `method`; datasets by id; `judge.model`: `symbolic` or a served model"),
    responses((status = 202, body = JobCreated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let db = store(&st)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    // the dataset formats the config names, looked up before the synchronous check
    let mut formats = std::collections::HashMap::new();
    for f in ["problems", "dataset", "eval_problems"] {
        if let Some(id) = v.get(f).and_then(Value::as_str)
            && let Some(d) = db.get_dataset(id).await?
        {
            formats.insert(id.to_string(), d.format);
        }
    }
    let served: Vec<String> = st.judges.prms.iter().map(|b| b.prm.id.clone()).collect();
    let max_threads = st
        .workers
        .as_ref()
        .filter(|w| w.config.max_concurrent > 0)
        .map(|w| w.config.train_threads.max(1));
    let spec = JobSpec::parse(&v, &served, &|id| formats.get(id).cloned(), max_threads)?;
    let id = new_id("job_");
    db.insert_job(&id, method_name(spec.method), &v.to_string())
        .await?;
    tracing::info!(job = %id, method = method_name(spec.method), "job queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(JobCreated {
            id,
            state: "queued".into(),
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Default 100, at most 10000.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/v1/train", tag = "train", params(ListQuery),
    responses((status = 200, body = Vec<JobView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::Validation(format!(
            "state: {s:?} is not one of {}",
            STATES.join(", ")
        )));
    }
    let (limit, offset) = page(q.limit, q.offset, 100, MAX_PAGE)?;
    let jobs = store(&st)?
        .list_jobs(q.state.as_deref(), limit, offset)
        .await?;
    Ok(Json(jobs.iter().map(view).collect()))
}

#[utoipa::path(get, path = "/v1/train/{id}", tag = "train", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(view(&job(&st, &id).await?)))
}

#[utoipa::path(post, path = "/v1/train/{id}/cancel", tag = "train", params(("id" = String, Path)),
    responses((status = 200, body = JobView, description = "queued: cancelled at once; running: stops at its next step"), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let j = store(&st)?
        .request_cancel(&id)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no job {id}")))?;
    Ok(Json(view(&j)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Rows with a step above this (default 0: from the start).
    pub since: Option<i64>,
    /// Default 1000, at most 10000.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/train/{id}/metrics", tag = "train",
    params(("id" = String, Path), MetricsQuery),
    responses((status = 200, body = Vec<MetricRow>), (status = 404, body = ErrorBody)))]
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<Vec<MetricRow>>, ApiError> {
    job(&st, &id).await?;
    let (limit, _) = page(q.limit, None, 1000, MAX_PAGE)?;
    let rows = store(&st)?
        .metrics_since(&id, q.since.unwrap_or(0), limit)
        .await?;
    Ok(Json(rows))
}

#[utoipa::path(get, path = "/v1/train/{id}/rounds", tag = "train", params(("id" = String, Path)),
    responses((status = 200, description = "per round: round, model directory, round info (label counts, seconds), eval report", body = Vec<Object>),
        (status = 404, body = ErrorBody)))]
pub async fn rounds(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    job(&st, &id).await?;
    let rows = store(&st)?.rounds(&id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|(_, b)| serde_json::from_str(&b).unwrap_or(Value::Null))
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SamplesQuery {
    /// Default 50, at most 10000.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// `flawed` (right answer, a step judged wrong), `wrong` (wrong answer), `correct`
    /// (right answer, no step judged wrong).
    pub filter: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SamplesPage {
    /// Samples matching the filter in the whole round.
    pub total: usize,
    /// Each as the round's samples file holds it, without `token_ids`.
    #[schema(value_type = Vec<Object>)]
    pub samples: Vec<Value>,
}

/// The class of one sample line: correct, flawed or wrong.
fn class(v: &Value) -> &'static str {
    let right = v["correct"].as_bool().unwrap_or(false);
    let flawed = v["steps"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x["correct"] == json!(false)));
    match (right, flawed) {
        (false, _) => "wrong",
        (true, true) => "flawed",
        (true, false) => "correct",
    }
}

#[utoipa::path(get, path = "/v1/train/{id}/rounds/{round}/samples", tag = "train",
    params(("id" = String, Path), ("round" = usize, Path), SamplesQuery),
    responses((status = 200, body = SamplesPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn samples(
    State(st): State<Arc<AppState>>,
    Path((id, round)): Path<(String, usize)>,
    Query(q): Query<SamplesQuery>,
) -> Result<Json<SamplesPage>, ApiError> {
    job(&st, &id).await?;
    if let Some(f) = &q.filter
        && !["flawed", "wrong", "correct"].contains(&f.as_str())
    {
        return Err(ApiError::Validation(format!(
            "filter: {f:?} is not one of flawed, wrong, correct"
        )));
    }
    let (limit, offset) = page(q.limit, q.offset, 50, MAX_PAGE)?;
    let Some(root) = &st.jobs_dir else {
        return Err(ApiError::NotReady(
            "this server has no jobs directory".into(),
        ));
    };
    let file = job_dir(root, &id)
        .join("run")
        .join(format!("round-{round}"))
        .join("samples.jsonl");
    let text = tokio::fs::read_to_string(&file).await.map_err(|_| {
        ApiError::Missing(format!(
            "job {id} has no samples for round {round} on this server (not sampled yet, or the job ran on another machine)"
        ))
    })?;
    let mut total = 0;
    let mut out = Vec::new();
    for l in text.lines() {
        let Ok(mut v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let c = class(&v);
        if q.filter.as_deref().is_some_and(|f| c != f) {
            continue;
        }
        total += 1;
        if total > offset as usize && out.len() < limit as usize {
            if let Some(o) = v.as_object_mut() {
                o.remove("token_ids");
                o.insert("class".into(), json!(c));
            }
            out.push(v);
        }
    }
    Ok(Json(SamplesPage {
        total,
        samples: out,
    }))
}

/// `GET /v1/train/{id}/events`: `progress` events while the job runs and `state` events
/// when its state changes; the stream ends after a final state.
#[utoipa::path(get, path = "/v1/train/{id}/events", tag = "train", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream of `state` and `progress` events (JSON data)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn events(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let first = job(&st, &id).await?;
    let permit = st.event_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded("too many open event streams (--max-event-streams)".into())
    })?;
    struct S {
        /// Held while the stream lives; given back when the client goes.
        _permit: tokio::sync::OwnedSemaphorePermit,
        st: Arc<AppState>,
        id: String,
        state: Option<String>,
        progress: String,
        done: bool,
        first: Option<JobRow>,
        pending: std::collections::VecDeque<Event>,
    }
    let s = S {
        _permit: permit,
        st: st.clone(),
        id,
        state: None,
        progress: String::new(),
        done: false,
        first: Some(first),
        pending: Default::default(),
    };
    // The database is polled (every 500 ms) rather than an in-process channel, so the
    // stream sees a job that a worker in another process runs.
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), s));
            }
            if s.done {
                return None;
            }
            let j = match s.first.take() {
                Some(j) => j,
                None => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match store(&s.st) {
                        Ok(db) => match db.get_job(&s.id).await {
                            Ok(Some(j)) => j,
                            Ok(None) => return None, // the job is gone
                            Err(_) => continue,
                        },
                        Err(_) => continue,
                    }
                }
            };
            if j.progress != s.progress {
                s.progress = j.progress.clone();
                s.pending
                    .push_back(Event::default().event("progress").data(j.progress.clone()));
            }
            if s.state.as_deref() != Some(j.state.as_str()) {
                s.state = Some(j.state.clone());
                s.done = !matches!(j.state.as_str(), "queued" | "running");
                let data = json!({"id": j.id, "state": j.state, "error": j.error});
                s.pending
                    .push_back(Event::default().event("state").data(data.to_string()));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
