//! Stepwise judging. For now one judge, [`symbolic`]: it checks the arithmetic and algebra
//! written inside each step with the outcome engine. PRM judges (candle models, recipes,
//! batching on the device pool) join it here.

pub mod symbolic;

use serde::{Deserialize, Serialize};

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
