//! `POST /v1/judge` and `GET /v1/models`: per-step verdicts from a step judge. The
//! `symbolic` judge (exact checks of the math in each step) is always loaded and is the
//! default; PRMs loaded with `serve --model` are listed beside it, and their answers carry
//! the symbolic check of every step too.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, ErrorBody};
use super::metrics::Metrics;
use super::{AppState, work};
use std::time::{Duration, Instant};

use crate::judge::batcher::{BatchConfig, Batcher};
use crate::judge::recipe::Tokenized;
use crate::judge::{StepVerdict, SymbolicCheck, first_wrong, judge_steps, symbolic};
use crate::steps::split_solution;

/// Bumped whenever a change can alter a symbolic verdict; part of the cache key.
pub const SYMBOLIC_ENGINE: &str = "symbolic-4";
/// Most steps one item may have.
pub const MAX_STEPS: usize = 512;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeRequest {
    /// A loaded model id (see `GET /v1/models`); `symbolic` when absent.
    #[serde(default)]
    pub model: Option<String>,
    #[schema(value_type = Vec<JudgeItem>)]
    pub items: Vec<Value>,
    /// A step scoring below this is labelled wrong (default 0.5).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Deadline for the whole request, in milliseconds (capped by the server's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One solution: its steps, or a whole solution text to split into paragraphs.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeItem {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    pub problem: String,
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    #[serde(default)]
    pub solution: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct StepResult {
    pub index: usize,
    /// P(step correct), whatever the judge.
    pub score: f64,
    /// `score >= threshold`.
    pub label: bool,
    pub symbolic: SymbolicCheck,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct Aggregate {
    pub min: f64,
    pub product: f64,
    pub last: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct JudgeResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    pub steps: Vec<StepResult>,
    /// Index of the first step labelled wrong, -1 when none.
    pub first_wrong_step: i64,
    pub aggregate: Aggregate,
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct JudgeItemError {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JudgeResponse {
    pub model: String,
    /// One entry per item, in order: a result or an item error.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub id: String,
    /// `symbolic` or a PRM recipe name.
    pub kind: String,
    pub device: String,
    pub description: String,
    /// PRMs: parameter count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<usize>,
    /// PRMs: fingerprint of the checkpoint (part of every cache key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// PRMs: most tokens per item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_context: Option<usize>,
    /// PRMs: the arithmetic of the layers' products (`f32`, `bf16x3` on AMX, `bf16` on
    /// CUDA); part of every cache key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numerics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchConfig>,
}

#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = Vec<ModelInfo>)), tag = "judge")]
pub async fn models(State(st): State<Arc<AppState>>) -> Json<Vec<ModelInfo>> {
    let mut out = vec![ModelInfo {
        id: "symbolic".into(),
        kind: "symbolic".into(),
        device: "cpu".into(),
        description: "exact checks of the arithmetic and algebra written in each step".into(),
        params: None,
        weights_sha256: None,
        max_context: None,
        numerics: None,
        batching: None,
    }];
    for b in &st.judges.prms {
        out.push(ModelInfo {
            id: b.prm.id.clone(),
            kind: b.prm.recipe.name.into(),
            device: b.device.clone(),
            description: b.prm.recipe.description.into(),
            params: Some(b.prm.params),
            weights_sha256: Some(b.prm.fingerprint.clone()),
            max_context: Some(b.prm.max_context),
            numerics: Some(b.prm.numerics().into()),
            batching: Some(b.config),
        });
    }
    Json(out)
}

/// A parsed item: its id, problem, steps and cache key.
type Parsed = (Option<Value>, String, Vec<String>, String);
/// An item that gets an error instead of a result: its id and the error.
type ItemError = (Option<Value>, ApiError);

fn aggregate(scores: &[f64]) -> Aggregate {
    if scores.is_empty() {
        return Aggregate {
            min: 1.0,
            product: 1.0,
            last: 1.0,
            mean: 1.0,
        };
    }
    Aggregate {
        min: scores.iter().copied().fold(f64::INFINITY, f64::min),
        product: scores.iter().product(),
        last: *scores.last().unwrap(),
        mean: scores.iter().sum::<f64>() / scores.len() as f64,
    }
}

#[utoipa::path(
    post,
    path = "/v1/judge",
    request_body = JudgeRequest,
    responses(
        (status = 200, description = "Per-step verdicts per item, in order; bad items get an error object", body = JudgeResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body or batch too large, or the only item over the model's context", body = ErrorBody),
        (status = 422, description = "Wrong shape, unknown model, threshold outside [0, 1], or the only item invalid", body = ErrorBody),
        (status = 429, description = "Too many requests in flight, or the model's queue is full", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    tag = "judge"
)]
pub async fn judge(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JudgeResponse>, ApiError> {
    let req: JudgeRequest = super::error::parse_json(&body?)?;
    let model = req.model.unwrap_or_else(|| "symbolic".into());
    let prm = if model == "symbolic" {
        None
    } else {
        Some(st.judges.get(&model).cloned().ok_or_else(|| {
            ApiError::Validation(format!(
                "unknown model {model:?}; loaded models: {:?}",
                st.judges.ids()
            ))
        })?)
    };
    // What produced a verdict: the symbolic engine, plus the checkpoint and recipe for PRMs.
    let engine = match &prm {
        None => SYMBOLIC_ENGINE.to_string(),
        Some(b) => format!(
            "{}+{}:{}@{}",
            SYMBOLIC_ENGINE,
            b.prm.recipe.name,
            b.prm.fingerprint,
            b.prm.numerics()
        ),
    };
    let threshold = req.threshold.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(ApiError::Validation(format!(
            "threshold must be in [0, 1], got {threshold}"
        )));
    }
    if req.items.len() > st.limits.max_batch {
        return Err(ApiError::TooLarge(format!(
            "batch of {} items exceeds max_batch {}",
            req.items.len(),
            st.limits.max_batch
        )));
    }
    let _permit = st.inflight.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!("{} requests in flight", st.limits.max_inflight))
    })?;
    let budget = st.limits.budget;
    // Parse and size-check each item; a bad one becomes its own error.
    let parsed: Vec<Result<Parsed, ItemError>> = req
        .items
        .into_iter()
        .map(|v| {
            let id = v.get("id").cloned();
            let err = |e: ApiError| (id.clone(), e);
            let it: JudgeItem =
                serde_json::from_value(v).map_err(|e| err(ApiError::Validation(e.to_string())))?;
            let steps = match (it.steps, it.solution) {
                (Some(s), None) => s,
                (None, Some(sol)) => split_solution(&sol),
                _ => {
                    return Err(err(ApiError::Validation(
                        "give exactly one of `steps` or `solution`".into(),
                    )));
                }
            };
            let size = it.problem.len() + steps.iter().map(String::len).sum::<usize>();
            if size > budget.max_solution_len {
                return Err(err(ApiError::TooLarge(format!(
                    "item of {size} bytes exceeds max_solution_len {}",
                    budget.max_solution_len
                ))));
            }
            if steps.len() > MAX_STEPS {
                return Err(err(ApiError::TooLarge(format!(
                    "{} steps exceed the limit of {MAX_STEPS}",
                    steps.len()
                ))));
            }
            let key = crate::store::cache_key(&json!([
                "judge", model, engine, it.problem, steps, threshold, budget
            ]));
            Ok((it.id, it.problem, steps, key))
        })
        .collect();
    let keys: Vec<String> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|x| x.3.clone()))
        .collect();
    let cached = work::cache_lookup(&st, &keys).await;
    let todo: Vec<(usize, String, Vec<String>)> = parsed
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (_, problem, steps, key) = r.as_ref().ok()?;
            (!cached.contains_key(key)).then(|| (i, problem.clone(), steps.clone()))
        })
        .collect();
    let deadline = req
        .timeout_ms
        .unwrap_or(st.limits.request_timeout_ms)
        .min(st.limits.request_timeout_ms)
        .max(1);
    let computed = match prm {
        None => {
            work::on_workers(
                todo,
                move |(i, problem, steps), deadline| {
                    let budget = work::clipped(&budget, deadline);
                    (
                        i,
                        Ok(result(judge_steps(&problem, &steps, threshold, &budget))),
                    )
                },
                deadline,
                &st.checkers,
            )
            .await?
        }
        Some(b) => prm_judge(b, todo, threshold, budget, deadline, &st.checkers).await?,
    };
    let mut fresh: std::collections::HashMap<usize, Result<JudgeResult, ApiError>> =
        computed.into_iter().collect();
    let mut to_store = Vec::new();
    let mut answers: Vec<Result<JudgeResult, ItemError>> = Vec::with_capacity(parsed.len());
    for (i, r) in parsed.into_iter().enumerate() {
        let answer = match r {
            Err(e) => Err(e),
            Ok((id, _, _, key)) => {
                let res = match fresh.remove(&i) {
                    Some(Err(e)) => {
                        answers.push(Err((id, e)));
                        continue;
                    }
                    Some(Ok(res)) => {
                        Metrics::add(&st.metrics.cache_misses, 1);
                        if let Ok(body) = serde_json::to_string(&res) {
                            to_store.push((key, body));
                        }
                        res
                    }
                    None => {
                        let body = cached
                            .get(&key)
                            .ok_or_else(|| ApiError::Internal("judgement missing".into()))?;
                        Metrics::add(&st.metrics.cache_hits, 1);
                        let mut res: JudgeResult = serde_json::from_str(body)
                            .map_err(|e| ApiError::Internal(e.to_string()))?;
                        res.cached = true;
                        res
                    }
                };
                Ok(JudgeResult { id, ..res })
            }
        };
        answers.push(answer);
    }
    work::cache_store(&st, "judge", &engine, &to_store).await;
    // One item is not a batch: its error is the response's (413 over the context, 422...).
    if let [Err(_)] = answers.as_slice()
        && let Some(Err((_, e))) = answers.pop()
    {
        return Err(e);
    }
    let items = answers
        .into_iter()
        .map(|a| match a {
            Ok(res) => serde_json::to_value(res),
            Err((id, e)) => serde_json::to_value(JudgeItemError {
                id,
                error: e.body(),
            }),
        })
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(JudgeResponse { model, items }))
}

fn result(v: Vec<StepVerdict>) -> JudgeResult {
    let first = first_wrong(&v);
    let steps: Vec<StepResult> = v
        .into_iter()
        .enumerate()
        .map(|(index, s)| StepResult {
            index,
            score: s.score,
            label: s.label,
            symbolic: s.symbolic,
        })
        .collect();
    let scores: Vec<f64> = steps.iter().map(|s| s.score).collect();
    JudgeResult {
        id: None,
        aggregate: aggregate(&scores),
        steps,
        first_wrong_step: first,
        cached: false,
    }
}

type Outcome = (usize, Result<JudgeResult, ApiError>);

/// Score items with a PRM: tokenize and run the symbolic checks on the worker pool, queue all
/// tokenized items on the model's batcher at once (429 if they do not fit), and wait for the
/// scores until the deadline (504). An item the model cannot take (over its context, a
/// marker in the text) gets its own error; the others are answered.
async fn prm_judge(
    b: Arc<Batcher>,
    todo: Vec<(usize, String, Vec<String>)>,
    threshold: f64,
    budget: crate::outcome::Budget,
    deadline_ms: u64,
    permits: &Arc<tokio::sync::Semaphore>,
) -> Result<Vec<Outcome>, ApiError> {
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let prm = b.clone();
    let prepared = work::on_workers(
        todo,
        move |(i, problem, steps), deadline| {
            let tok = prm.prm.tokenize(&problem, &steps);
            let budget = work::clipped(&budget, deadline);
            let sym: Vec<SymbolicCheck> = symbolic::check_solution(&problem, &steps, &budget);
            (i, tok, sym)
        },
        deadline_ms,
        permits,
    )
    .await?;
    let toks: Vec<Tokenized> = prepared
        .iter()
        .filter_map(|(_, t, _)| t.as_ref().ok().cloned())
        .collect();
    let receivers = b.submit(toks, deadline, deadline_ms)?;
    let wait = async {
        let mut scores = Vec::with_capacity(receivers.len());
        for rx in receivers {
            scores.push(
                rx.await
                    .map_err(|_| ApiError::Internal("inference thread stopped".into()))?
                    .map_err(ApiError::from)?,
            );
        }
        Ok::<_, ApiError>(scores)
    };
    let mut scores = tokio::time::timeout_at(deadline.into(), wait)
        .await
        .map_err(|_| ApiError::Timeout(deadline_ms))??
        .into_iter();
    Ok(prepared
        .into_iter()
        .map(|(i, tok, sym)| {
            let r = tok.map_err(ApiError::from).and_then(|_| {
                let s = scores
                    .next()
                    .ok_or_else(|| ApiError::Internal("score missing".into()))?;
                Ok(result(
                    s.iter()
                        .zip(sym)
                        .map(|(&p, symbolic)| StepVerdict::new(p as f64, threshold, symbolic))
                        .collect(),
                ))
            });
            (i, r)
        })
        .collect())
}
