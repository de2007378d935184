//! `/v1/evals`: eval records (a model on a dataset: metric values, counts and the judged
//! samples), posted by eval scripts, written by `stepkto eval ... --record` and by every
//! finished round of a job; read back by the dashboard, down to one judged solution.
//! The checks live in `jobs::records`; this file only maps them to HTTP.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::datasets::store;
use super::error::{ApiError, ErrorBody, page, parse_json};
use crate::jobs::records::{self, CLASSES, NewEval, RecordError, RecordLimits};
use crate::store::evals::{EvalFilter, EvalRecord, EvalSampleRow};
use crate::store::jobs::new_id;

/// Most records or samples one page returns.
const MAX_PAGE: i64 = 1_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvalCreated {
    pub id: String,
    pub samples: usize,
    /// Samples per class: correct, wrong, flawed, unknown.
    #[schema(value_type = Object)]
    pub classes: Value,
}

/// A record as the list and `GET /v1/evals/{id}` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvalView {
    pub id: String,
    pub model: String,
    pub dataset: String,
    pub kind: String,
    pub round: Option<i64>,
    /// The job whose round this is (null for posted and CLI records).
    pub job_id: Option<String>,
    #[schema(value_type = Object)]
    pub metrics: Value,
    #[schema(value_type = Object)]
    pub counts: Value,
    /// Samples per class.
    #[schema(value_type = Object)]
    pub classes: Value,
    pub created_at: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvalList {
    pub records: Vec<EvalView>,
    /// Records matching the filter in all.
    pub total: i64,
}

/// One judged sample: its position, its class, and the sample as recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SampleView {
    pub index: i64,
    pub class: String,
    #[schema(value_type = Object)]
    pub sample: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SamplePage {
    pub samples: Vec<SampleView>,
    /// Samples of the chosen class (or all) in the record.
    pub total: i64,
}

/// The 422 of a record with bad samples.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BadSamples {
    pub error: String,
    pub error_type: String,
    /// `{index, error}`, at most 100.
    #[schema(value_type = Vec<Object>)]
    pub bad_samples: Vec<Value>,
    pub bad_sample_count: usize,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub model: Option<String>,
    pub dataset: Option<String>,
    pub kind: Option<String>,
    /// Only the rounds of this job.
    pub job: Option<String>,
    /// Default 100, at most 1000.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SamplesQuery {
    /// `correct`, `wrong`, `flawed` or `unknown` (default: all).
    pub filter: Option<String>,
    /// Default 100, at most 1000.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

pub(crate) fn view(r: &EvalRecord) -> EvalView {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(json!({}));
    EvalView {
        id: r.id.clone(),
        model: r.model.clone(),
        dataset: r.dataset.clone(),
        kind: r.kind.clone(),
        round: r.round,
        job_id: r.job_id.clone(),
        metrics: body["metrics"].clone(),
        counts: body["counts"].clone(),
        classes: body["classes"].clone(),
        created_at: r.created_at,
    }
}

fn sample_view(s: EvalSampleRow) -> SampleView {
    SampleView {
        index: s.idx,
        class: s.class,
        sample: serde_json::from_str(&s.body).unwrap_or(Value::Null),
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        ApiError::Validation(e.to_string())
    }
}

#[utoipa::path(post, path = "/v1/evals", tag = "evals", request_body = NewEval,
    responses((status = 201, body = EvalCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = BadSamples)))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let db = store(&st)?;
    let e: NewEval = parse_json(&body)?;
    let limits = RecordLimits {
        max_samples: st.max_eval_samples,
        ..Default::default()
    };
    let (rec, samples) = match records::build(new_id("ev-"), None, e, &limits) {
        Ok(x) => x,
        Err(e) => {
            let RecordError::Samples { count, listed } = &e else {
                return Err(e.into());
            };
            let body = BadSamples {
                error: e.to_string(),
                error_type: "validation".into(),
                bad_samples: listed
                    .iter()
                    .map(|(i, m)| json!({"index": i, "error": m}))
                    .collect(),
                bad_sample_count: *count,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
        }
    };
    db.insert_eval(&rec, &samples).await?;
    let classes: Value =
        serde_json::from_str::<Value>(&rec.body).unwrap_or_default()["classes"].clone();
    let out = EvalCreated {
        id: rec.id,
        samples: samples.len(),
        classes,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(get, path = "/v1/evals", tag = "evals", params(ListQuery),
    responses((status = 200, body = EvalList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<EvalList>, ApiError> {
    let (limit, offset) = page(q.limit, q.offset, 100, MAX_PAGE)?;
    let f = EvalFilter {
        model: q.model.as_deref(),
        dataset: q.dataset.as_deref(),
        kind: q.kind.as_deref(),
        job_id: q.job.as_deref(),
    };
    let (rows, total) = store(&st)?.list_evals(&f, limit, offset).await?;
    Ok(Json(EvalList {
        records: rows.iter().map(view).collect(),
        total,
    }))
}

async fn record(st: &AppState, id: &str) -> Result<EvalRecord, ApiError> {
    store(st)?
        .get_eval(id)
        .await?
        .ok_or_else(|| ApiError::Missing(format!("no eval record {id}")))
}

#[utoipa::path(get, path = "/v1/evals/{id}", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, body = EvalView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<EvalView>, ApiError> {
    Ok(Json(view(&record(&st, &id).await?)))
}

#[utoipa::path(get, path = "/v1/evals/{id}/samples", tag = "evals",
    params(("id" = String, Path), SamplesQuery),
    responses((status = 200, body = SamplePage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn samples(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<SamplesQuery>,
) -> Result<Json<SamplePage>, ApiError> {
    let (limit, offset) = page(q.limit, q.offset, 100, MAX_PAGE)?;
    if let Some(f) = &q.filter
        && !CLASSES.contains(&f.as_str())
    {
        return Err(ApiError::Validation(format!(
            "filter must be one of {}",
            CLASSES.join(", ")
        )));
    }
    record(&st, &id).await?;
    let (rows, total) = store(&st)?
        .eval_samples(&id, q.filter.as_deref(), limit, offset)
        .await?;
    Ok(Json(SamplePage {
        samples: rows.into_iter().map(sample_view).collect(),
        total,
    }))
}

#[utoipa::path(get, path = "/v1/evals/{id}/samples/{index}", tag = "evals",
    params(("id" = String, Path), ("index" = i64, Path)),
    responses((status = 200, body = SampleView), (status = 404, body = ErrorBody)))]
pub async fn sample(
    State(st): State<Arc<AppState>>,
    Path((id, index)): Path<(String, i64)>,
) -> Result<Json<SampleView>, ApiError> {
    store(&st)?
        .eval_sample(&id, index)
        .await?
        .map(|s| Json(sample_view(s)))
        .ok_or_else(|| ApiError::Missing(format!("no sample {index} in eval record {id}")))
}
