//! `POST /v1/datasets`, `GET /v1/datasets`, `GET /v1/datasets/{id}`: JSONL bodies of
//! problems (`{"id", "problem", "answer"}`), TRL's unpaired KTO rows (`{"prompt",
//! "completion", "label"}`, optional `steps` / `step_labels`) or SFT rows, checked line by
//! line with the trainer's own parsers, stored in the database for jobs to name by id.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::store::Store;
use crate::store::jobs::{DatasetRow, new_id};
use crate::train::run::{RunMethod, parse_dataset_row, parse_problem};

/// Most bad lines listed in a 422 (the count is always whole).
const MAX_LISTED: usize = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `problems`, `kto` or `sft`; guessed from the first line when absent (`label` -> kto,
    /// `answer` -> problems, else sft).
    pub format: Option<String>,
    /// A name to show in lists (default: the id).
    pub name: Option<String>,
    /// Store the good lines even when some are bad (default false: nothing is stored).
    #[serde(default)]
    pub allow_bad_lines: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BadLine {
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatasetCreated {
    #[serde(flatten)]
    pub dataset: DatasetRow,
    /// Lines that were skipped (only with `allow_bad_lines`), at most 100 listed.
    pub bad_lines: Vec<BadLine>,
    pub bad_line_count: usize,
}

/// The 422 of an upload with bad lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BadLines {
    pub error: String,
    pub error_type: String,
    pub bad_lines: Vec<BadLine>,
    pub bad_line_count: usize,
}

pub(crate) fn store(st: &AppState) -> Result<&Store, ApiError> {
    match &st.store {
        Some(s) if s.ready() => Ok(s),
        Some(_) => Err(ApiError::NotReady("the database is not ready".into())),
        None => Err(ApiError::NotReady(
            "this server runs without a database; datasets and jobs need one".into(),
        )),
    }
}

fn guess(line: &str) -> &'static str {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.get("label").is_some() => "kto",
        Ok(v) if v.get("answer").is_some() => "problems",
        _ => "sft",
    }
}

/// Check every line; returns (good lines, bad lines).
fn check(text: &str, format: &str) -> (Vec<String>, Vec<BadLine>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let r = match format {
            "problems" => parse_problem(i + 1, l).map(|_| ()),
            "kto" => parse_dataset_row(l, RunMethod::Kto).map(|_| ()),
            _ => parse_dataset_row(l, RunMethod::Sft).map(|_| ()),
        };
        match r {
            Ok(()) => good.push(l.to_string()),
            Err(e) => bad.push(BadLine {
                line: i + 1,
                error: e,
            }),
        }
    }
    (good, bad)
}

#[utoipa::path(post, path = "/v1/datasets", tag = "train", params(UploadQuery),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSONL rows"),
    responses((status = 201, body = DatasetCreated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = BadLines)))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    Query(q): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let db = store(&st)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadJson(format!("the body is not UTF-8: {e}")))?;
    let first = text.lines().find(|l| !l.trim().is_empty());
    let Some(first) = first else {
        return Err(ApiError::Validation("the dataset has no rows".into()));
    };
    let format = match q.format.as_deref() {
        None => guess(first),
        Some("problems") => "problems",
        Some("kto") => "kto",
        Some("sft") => "sft",
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "format: {other:?} is not one of problems, kto, sft"
            )));
        }
    };
    let (good, bad) = check(text, format);
    let bad_count = bad.len();
    let listed: Vec<BadLine> = bad.into_iter().take(MAX_LISTED).collect();
    if bad_count > 0 && (!q.allow_bad_lines || good.is_empty()) {
        let body = BadLines {
            error: format!(
                "{bad_count} of {} lines are not {format} rows; nothing was stored (pass allow_bad_lines=true to store the good ones)",
                bad_count + good.len()
            ),
            error_type: "validation".into(),
            bad_lines: listed,
            bad_line_count: bad_count,
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
    }
    let mut stored = good.join("\n");
    stored.push('\n');
    let sha: String = Sha256::digest(stored.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = new_id("ds_");
    let row = DatasetRow {
        name: q.name.clone().unwrap_or_else(|| id.clone()),
        id,
        format: format.into(),
        rows: good.len() as i64,
        bytes: stored.len() as i64,
        sha256: sha,
        created_at: crate::store::now_secs(),
    };
    db.insert_dataset(&row, &stored).await?;
    let out = DatasetCreated {
        dataset: row,
        bad_lines: listed,
        bad_line_count: bad_count,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(get, path = "/v1/datasets", tag = "train",
    responses((status = 200, body = Vec<DatasetRow>), (status = 401, body = ErrorBody)))]
pub async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Vec<DatasetRow>>, ApiError> {
    Ok(Json(store(&st)?.list_datasets().await?))
}

#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "train",
    params(("id" = String, Path)),
    responses((status = 200, body = DatasetRow), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<DatasetRow>, ApiError> {
    store(&st)?
        .get_dataset(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::Missing(format!("no dataset {id}")))
}
