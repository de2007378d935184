//! Stepwise judging. Two kinds of judge: [`symbolic`] checks the arithmetic and algebra
//! written inside each step with the outcome engine; PRMs ([`prm`]) are Hugging Face
//! checkpoints run with candle ([`model`]), fed as their family's [`recipe`] says, and
//! scheduled by a per-model [`batcher`] on a device from the pool.

pub mod batcher;
mod claims;
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
}

use serde::{Deserialize, Serialize};

use crate::outcome::Budget;

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

/// Judge steps with the symbolic judge: refuted 0, verified 1, unknown 0.5 (no evidence).
pub fn judge_steps(steps: &[String], threshold: f64, budget: &Budget) -> Vec<StepVerdict> {
    steps
        .iter()
        .map(|s| {
            let symbolic = symbolic::check_step(s, budget);
            let score = match symbolic.status {
                Status::Verified => 1.0,
                Status::Refuted => 0.0,
                Status::Unknown => 0.5,
            };
            StepVerdict {
                score,
                label: score >= threshold,
                symbolic,
            }
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
