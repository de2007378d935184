//! Budgets every outcome entry point obeys: input length, nesting depth, exponent and
//! factorial caps, size of exact integers, and wall time.
//!
//! The wall-time check is cooperative: parsers and evaluators call [`Meter::tick`] in their
//! loops. That holds inside any thread (unlike signal-based timeouts, which only interrupt
//! the main thread of a process) and costs one `Instant::now()` every few hundred ticks.

use std::time::{Duration, Instant};

/// Parser frames one level of nesting may take (list, relation, sum, product, unary, power,
/// primary, group).
pub const FRAMES_PER_LEVEL: usize = 8;

/// Stack size for threads that run checks: deep (but in-budget) nesting recurses, and the
/// default 2 MiB of spawned threads is tight in debug builds.
pub const CHECK_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Limits for one check. `Default` gives the service's defaults; all of them are
/// configurable from the CLI and per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    /// Longest whole solution accepted for extraction (bytes). Longer input is refused
    /// rather than scanned, so one request cannot occupy a core with megabytes of text.
    pub max_solution_len: usize,
    /// Longest single answer handed to the LaTeX parser (bytes).
    pub max_answer_len: usize,
    /// Deepest nesting of brackets, braces and operators the parser follows (in levels).
    pub max_depth: usize,
    /// Largest integer exponent evaluated exactly; beyond it the value is "too big to know".
    pub max_exponent: u64,
    /// Largest `n` for which `n!` is computed exactly.
    pub max_factorial: u64,
    /// Largest exact integer (in bits) any intermediate result may reach.
    pub max_bits: u64,
    /// Wall time for one check, in milliseconds.
    pub time_ms: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_solution_len: 200_000,
            max_answer_len: 4_000,
            max_depth: 100,
            max_exponent: 10_000,
            max_factorial: 2_000,
            max_bits: 200_000,
            time_ms: 2_000,
        }
    }
}

/// Why a check stopped early. Over budget is a verdict (`equivalent: false`, reason
/// `budget`), never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("input longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("nesting deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("exponent larger than {limit}")]
    Exponent { limit: u64 },
    #[error("factorial argument larger than {limit}")]
    Factorial { limit: u64 },
    #[error("intermediate result larger than {limit} bits")]
    TooBig { limit: u64 },
    #[error("a floating-point value overflowed")]
    Overflow,
    #[error("wall time of {ms} ms exceeded")]
    Time { ms: u64 },
}

/// Running account of one check against its [`Budget`].
#[derive(Debug)]
pub struct Meter {
    pub budget: Budget,
    deadline: Instant,
    ticks: u32,
    /// Set once the clock has run out: callers that ran a check under a shorter clock than
    /// the budget's (see `outcome::check_within`) learn that the verdict may differ.
    pub timed_out: bool,
}

impl Meter {
    pub fn new(budget: Budget) -> Self {
        Self::with_clock(budget, Duration::from_millis(budget.time_ms))
    }

    /// A meter whose clock runs out after `clock` (the budget's own time when shorter).
    pub fn with_clock(budget: Budget, clock: Duration) -> Self {
        Meter {
            budget,
            deadline: Instant::now() + clock.min(Duration::from_millis(budget.time_ms)),
            ticks: 0,
            timed_out: false,
        }
    }

    /// Count one unit of work; every 32 units, look at the clock. A unit is bounded by the
    /// bit cap (no single step multiplies numbers past `max_bits`), so 32 of them stay far
    /// inside any time budget while the clock costs ~1 ns a tick.
    #[inline]
    pub fn tick(&mut self) -> Result<(), BudgetError> {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks & 0x1f == 0 && Instant::now() > self.deadline {
            self.timed_out = true;
            return Err(BudgetError::Time {
                ms: self.budget.time_ms,
            });
        }
        Ok(())
    }

    /// Check a recursion depth counted in parser/evaluator frames. One level of bracket
    /// nesting costs up to [`FRAMES_PER_LEVEL`] frames, so the budget reads as nesting levels.
    pub fn depth(&self, frames: usize) -> Result<(), BudgetError> {
        if frames > self.budget.max_depth.saturating_mul(FRAMES_PER_LEVEL) {
            return Err(BudgetError::TooDeep {
                limit: self.budget.max_depth,
            });
        }
        Ok(())
    }

    pub fn bits(&self, bits: u64) -> Result<(), BudgetError> {
        if bits > self.budget.max_bits {
            return Err(BudgetError::TooBig {
                limit: self.budget.max_bits,
            });
        }
        Ok(())
    }
}
