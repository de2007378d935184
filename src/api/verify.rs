//! `POST /v1/verify`: one item or a batch; cached verdicts first, the rest computed on the
//! blocking pool (the checker is CPU-bound), then written back to the cache.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ErrorBody, parse_json};
use super::metrics::Metrics;
use super::{AppState, work};
use crate::outcome::{self, Mode, Options, Reason, Verdict};

/// One reference/candidate pair.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyItem {
    /// Echoed back in a batch answer.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    /// The reference answer (a bare answer, or a solution with a `\boxed{}` answer).
    pub reference: String,
    /// A bare final answer or a whole solution.
    pub candidate: String,
    #[serde(default)]
    pub mode: Mode,
    /// Comparison policies; overrides the request-level `options`.
    #[serde(default)]
    pub options: Option<Options>,
}

/// A batch: `{"items": [...], "options"?}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBatch {
    #[schema(value_type = Vec<VerifyItem>)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub options: Option<Options>,
}

/// The request body: a single item or a batch.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum VerifyRequest {
    Single(VerifyItem),
    Batch(VerifyBatch),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct VerifyResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    pub equivalent: bool,
    pub extracted: Option<String>,
    pub reason: Reason,
    /// True when the verdict came from the cache.
    pub cached: bool,
}

/// A batch item that could not be judged.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct ItemError {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
#[serde(untagged)]
pub enum BatchItem {
    Ok(VerifyResult),
    Err(ItemError),
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyBatchResponse {
    pub items: Vec<BatchItem>,
}

#[utoipa::path(
    post,
    path = "/v1/verify",
    request_body(content = VerifyRequest, description = "`{reference, candidate, mode?, options?}` or `{items: [...], options?}`"),
    responses(
        (status = 200, description = "Verdict (single) or verdicts (batch, same order; bad items get an error object)", body = VerifyResult),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body or batch too large, or a single input over the length budget", body = ErrorBody),
        (status = 422, description = "Wrong shape or types", body = ErrorBody),
        (status = 429, description = "Too many requests in flight", body = ErrorBody),
        (status = 504, description = "Request deadline exceeded", body = ErrorBody),
    ),
    tag = "verify"
)]
pub async fn verify(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let _permit = st.inflight.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!("{} requests in flight", st.limits.max_inflight))
    })?;
    if value.get("items").is_some() {
        let batch: VerifyBatch =
            serde_json::from_value(value).map_err(|e| ApiError::Validation(e.to_string()))?;
        if batch.items.len() > st.limits.max_batch {
            return Err(ApiError::TooLarge(format!(
                "batch of {} items exceeds max_batch {}",
                batch.items.len(),
                st.limits.max_batch
            )));
        }
        let default_opts = batch.options.unwrap_or(st.limits.options);
        let parsed: Vec<Result<VerifyItem, ItemError>> = batch
            .items
            .into_iter()
            .map(|v| {
                let id = v.get("id").cloned();
                serde_json::from_value::<VerifyItem>(v).map_err(|e| ItemError {
                    id,
                    error: ApiError::Validation(e.to_string()).body(),
                })
            })
            .collect();
        let results = verify_items(&st, parsed, default_opts).await?;
        let items = results.into_iter().map(|r| match r {
            Ok(v) => BatchItem::Ok(v),
            Err(e) => BatchItem::Err(e),
        });
        let resp = VerifyBatchResponse {
            items: items.collect(),
        };
        return Ok(Json(
            serde_json::to_value(resp).map_err(|e| ApiError::Internal(e.to_string()))?,
        ));
    }
    let item: VerifyItem = parse_json(&body)?;
    let opts = st.limits.options;
    let mut out = verify_items(&st, vec![Ok(item)], opts).await?;
    match out.pop() {
        Some(Ok(v)) => Ok(Json(
            serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))?,
        )),
        Some(Err(e)) => Err(match e.error.error_type.as_str() {
            "too_large" => ApiError::TooLarge(e.error.error),
            _ => ApiError::Validation(e.error.error),
        }),
        None => Err(ApiError::Internal("no result".into())),
    }
}

/// Verify parsed items: cache lookups, computation of misses, cache writes.
pub(crate) async fn verify_items(
    st: &Arc<AppState>,
    items: Vec<Result<VerifyItem, ItemError>>,
    default_opts: Options,
) -> Result<Vec<Result<VerifyResult, ItemError>>, ApiError> {
    let budget = st.limits.budget;
    let m = &st.metrics;
    // Length budget first: an over-long input is an item error, not a verdict.
    let items: Vec<Result<(VerifyItem, Options, String), ItemError>> = items
        .into_iter()
        .map(|r| {
            let it = r?;
            let longest = it.reference.len().max(it.candidate.len());
            if longest > budget.max_solution_len {
                return Err(ItemError {
                    id: it.id,
                    error: ApiError::TooLarge(format!(
                        "input of {longest} bytes exceeds max_solution_len {}",
                        budget.max_solution_len
                    ))
                    .body(),
                });
            }
            let opts = it.options.unwrap_or(default_opts);
            let key = crate::store::cache_key(&outcome::key_material(
                &it.reference,
                &it.candidate,
                it.mode,
                &opts,
                &budget,
            ));
            Ok((it, opts, key))
        })
        .collect();
    let keys: Vec<String> = items
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|x| x.2.clone()))
        .collect();
    let cached = work::cache_lookup(st, &keys).await;
    // Compute the misses on the blocking pool.
    let todo: Vec<(usize, String, String, Mode, Options)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (it, opts, key) = r.as_ref().ok()?;
            let hit = cached
                .get(key)
                .and_then(|b| serde_json::from_str::<Verdict>(b).ok())
                .is_some();
            (!hit).then(|| {
                (
                    i,
                    it.reference.clone(),
                    it.candidate.clone(),
                    it.mode,
                    *opts,
                )
            })
        })
        .collect();
    // A lone check runs here first, under a short clock: most finish in tens of
    // microseconds, less than the hop to a blocking thread and back costs.
    let inline = match todo.as_slice() {
        [(i, r, c, mode, opts)] if st.limits.inline_check_us > 0 => {
            let clock = std::time::Duration::from_micros(st.limits.inline_check_us);
            outcome::check_within(r, c, *mode, opts, &budget, clock).map(|v| vec![(*i, v)])
        }
        _ => None,
    };
    let computed = match inline {
        Some(v) => {
            Metrics::add(&m.inline_checks, 1);
            v
        }
        None => {
            work::on_workers(
                todo,
                move |(i, r, c, mode, opts), deadline| {
                    let budget = work::clipped(&budget, deadline);
                    (i, outcome::check(&r, &c, mode, &opts, &budget))
                },
                st.limits.request_timeout_ms,
                &st.checkers,
            )
            .await?
        }
    };
    let mut fresh: std::collections::HashMap<usize, Verdict> = computed.into_iter().collect();
    let mut to_store = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, r) in items.into_iter().enumerate() {
        match r {
            Err(e) => {
                Metrics::add(&m.verify_item_errors, 1);
                out.push(Err(e));
            }
            Ok((it, _, key)) => {
                let (v, was_cached) = match fresh.remove(&i) {
                    Some(v) => {
                        Metrics::add(&m.cache_misses, 1);
                        if let Ok(body) = serde_json::to_string(&v) {
                            to_store.push((key, body));
                        }
                        (v, false)
                    }
                    None => match cached
                        .get(&key)
                        .and_then(|b| serde_json::from_str::<Verdict>(b).ok())
                    {
                        Some(v) => {
                            Metrics::add(&m.cache_hits, 1);
                            (v, true)
                        }
                        None => return Err(ApiError::Internal("verdict missing".into())),
                    },
                };
                Metrics::add(
                    if v.equivalent {
                        &m.verify_equal
                    } else {
                        &m.verify_not_equal
                    },
                    1,
                );
                out.push(Ok(VerifyResult {
                    id: it.id,
                    equivalent: v.equivalent,
                    extracted: v.extracted,
                    reason: v.reason,
                    cached: was_cached,
                }));
            }
        }
    }
    work::cache_store(st, "verify", outcome::ENGINE_VERSION, &to_store).await;
    Ok(out)
}
