//! Stepwise judging. Two kinds of judge: [`symbolic`] checks the arithmetic and algebra
//! written inside each step with the outcome engine; PRMs ([`prm`]) are Hugging Face
//! checkpoints run with candle ([`model`]), fed as their family's [`recipe`] says, and
//! scheduled by a per-model [`batcher`] on a device from the pool.

pub mod batcher;
mod claims;
mod conditions;
pub mod model;
pub mod prm;
pub mod recipe;
pub mod symbolic;

/// What can go wrong loading or running a PRM; the API maps each variant to a status.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The checkpoint cannot be loaded (missing file, unsupported architecture, bad recipe).
    #[error("{0}")]
    Load(String),
    /// This input cannot be scored by this recipe.
    #[error("{0}")]
    Input(String),
    /// More tokens than the model's context; inputs are never truncated.
    #[error("input of {tokens} tokens exceeds the model context limit of {limit} tokens")]
    TooLong { tokens: usize, limit: usize },
    /// The model's queue is full.
    #[error("{0}")]
    Overloaded(String),
    /// The request's deadline passed before its items were scored.
    #[error("deadline of {0} ms exceeded")]
    Timeout(u64),
    /// The inference backend failed.
    #[error("{0}")]
    Backend(String),
    /// The model cannot serve (its inference thread has stopped).
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::model::ModelError> for JudgeError {
    fn from(e: crate::model::ModelError) -> Self {
        match e {
            crate::model::ModelError::Load(s) => JudgeError::Load(s),
            // the template raised on this input (e.g. `raise_exception`)
            t @ crate::model::ModelError::Template(_) => JudgeError::Input(t.to_string()),
        }
    }
}

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::devices::DevicePool;
use crate::outcome::Budget;
use batcher::{BatchConfig, Batcher};
use prm::{ModelSpec, Prm};
use recipe::Tokenized;

/// What the symbolic check found in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every closed-form claim in the step holds (and there is at least one).
    Verified,
    /// A claim is exactly false (beyond any rounding the step states).
    Refuted,
    /// No claim could be decided.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SymbolicCheck {
    pub status: Status,
    /// The failing claim for `refuted`; a count of checked claims otherwise.
    pub detail: String,
}

/// Per-step judgement: P(step correct), the label at the threshold, and the symbolic check.
pub struct StepVerdict {
    pub score: f64,
    pub label: bool,
    pub symbolic: SymbolicCheck,
}

impl StepVerdict {
    /// A step is labelled correct when its score reaches the threshold.
    pub fn new(score: f64, threshold: f64, symbolic: SymbolicCheck) -> StepVerdict {
        StepVerdict {
            score,
            label: score >= threshold,
            symbolic,
        }
    }
}

/// The loaded PRMs, each behind its batcher on a leased device. `symbolic` is not in here:
/// it needs no loading and is always available.
#[derive(Default)]
pub struct Judges {
    pub prms: Vec<Arc<Batcher>>,
}

impl Judges {
    /// Load every model on a device from `pool` and start its inference thread.
    pub fn load(
        specs: &[ModelSpec],
        pool: &Arc<DevicePool>,
        cfg: BatchConfig,
    ) -> Result<Judges, JudgeError> {
        let mut prms: Vec<Arc<Batcher>> = Vec::new();
        for spec in specs {
            let holder = format!("judge:{}", spec.dir.display());
            let lease = pool.lease(&holder);
            let t0 = std::time::Instant::now();
            let prm = Prm::load(spec, lease.device())?;
            if prm.id == "symbolic" || prms.iter().any(|p| p.prm.id == prm.id) {
                return Err(JudgeError::Load(format!(
                    "model id {:?} is taken; name it with --model NAME=DIR",
                    prm.id
                )));
            }
            tracing::info!(model = %prm.id, recipe = prm.recipe.name, device = lease.name(),
                numerics = prm.numerics(), params = prm.params, secs = t0.elapsed().as_secs_f64(), "PRM loaded");
            let b = Batcher::spawn(Arc::new(prm), lease, cfg)
                .map_err(|e| JudgeError::Load(format!("cannot start inference thread: {e}")))?;
            prms.push(Arc::new(b));
        }
        Ok(Judges { prms })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Batcher>> {
        self.prms.iter().find(|b| b.prm.id == id)
    }

    /// Every judge id, `symbolic` first.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once("symbolic".to_string())
            .chain(self.prms.iter().map(|b| b.prm.id.clone()))
            .collect()
    }
}

/// PRM scores plus the symbolic check of each step.
pub fn with_scores(
    scores: &[f32],
    problem: &str,
    steps: &[String],
    threshold: f64,
    budget: &Budget,
) -> Vec<StepVerdict> {
    scores
        .iter()
        .zip(symbolic::check_solution(problem, steps, budget))
        .map(|(&p, sym)| StepVerdict::new(p as f64, threshold, sym))
        .collect()
}

/// Score items with a PRM from synchronous code (the CLI): tokenize, queue in chunks the
/// queue can hold, wait. One result per item, in order.
pub fn score_blocking(
    b: &Batcher,
    items: &[(String, Vec<String>)],
    timeout_ms: u64,
) -> Vec<Result<Vec<f32>, JudgeError>> {
    let mut out: Vec<Result<Vec<f32>, JudgeError>> = Vec::with_capacity(items.len());
    for chunk in items.chunks(b.config.max_queue.max(1)) {
        let toks: Vec<Result<Tokenized, JudgeError>> =
            chunk.iter().map(|(p, s)| b.prm.tokenize(p, s)).collect();
        let ok: Vec<Tokenized> = toks
            .iter()
            .filter_map(|t| t.as_ref().ok().cloned())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        let mut rx = match b.submit(ok, deadline, timeout_ms) {
            Ok(rx) => rx.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                out.extend(
                    chunk
                        .iter()
                        .map(|_| Err(JudgeError::Overloaded(msg.clone()))),
                );
                continue;
            }
        };
        for t in toks {
            out.push(match t {
                Err(e) => Err(e),
                Ok(_) => match rx.next().map(|r| r.blocking_recv()) {
                    Some(Ok(reply)) => reply,
                    _ => Err(JudgeError::Backend("the inference thread stopped".into())),
                },
            });
        }
    }
    out
}

/// Judge steps with the symbolic judge: refuted 0, verified 1, unknown 0.5 (no evidence).
pub fn judge_steps(
    problem: &str,
    steps: &[String],
    threshold: f64,
    budget: &Budget,
) -> Vec<StepVerdict> {
    symbolic::check_solution(problem, steps, budget)
        .into_iter()
        .map(|symbolic| {
            let score = match symbolic.status {
                Status::Verified => 1.0,
                Status::Refuted => 0.0,
                Status::Unknown => 0.5,
            };
            StepVerdict::new(score, threshold, symbolic)
        })
        .collect()
}

/// Index of the first step labelled wrong, or -1.
pub fn first_wrong(v: &[StepVerdict]) -> i64 {
    v.iter()
        .position(|s| !s.label)
        .map(|i| i as i64)
        .unwrap_or(-1)
}
