//! Stepwise judging. For now one judge, [`symbolic`]: it checks the arithmetic and algebra
//! written inside each step with the outcome engine. PRM judges (candle models, recipes,
//! batching on the device pool) join it here.

mod claims;
pub mod symbolic;

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
