//! How a caller watches a run and stops it: a [`Control`] carries a cancel flag, checked
//! between optimiser steps, sampling chunks and phases, and an observer that hears each
//! phase, step and finished round. The CLI passes [`Control::none`]; the job worker
//! (`jobs`) turns the events into database rows and its cancel requests into the flag.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::TrainError;

/// What a run reports while it goes.
pub enum Event<'a> {
    /// A round enters a phase: `sampling`, `reference`, `training`, `eval`.
    Phase { round: usize, phase: &'static str },
    /// One optimiser step finished (`step` of `total` in the round; `tokens` were trained on).
    Step {
        round: usize,
        step: usize,
        total: usize,
        tokens: usize,
        metrics: &'a BTreeMap<String, f64>,
    },
    /// A round finished: its `round.json` and, when there are held-out problems, the
    /// evaluation report and the evaluated samples (`eval-records.jsonl` lines).
    Round {
        round: usize,
        info: &'a Value,
        eval: Option<&'a Value>,
        records: Option<&'a str>,
    },
    /// The starting model was evaluated (round 0).
    Start {
        eval: Option<&'a Value>,
        records: Option<&'a str>,
    },
}

type Observer = Box<dyn Fn(&Event) + Send + Sync>;

#[derive(Default)]
pub struct Control {
    cancel: Arc<AtomicBool>,
    observer: Option<Observer>,
}

impl Control {
    /// Nobody watches, nothing cancels.
    pub fn none() -> Control {
        Control::default()
    }

    pub fn new(cancel: Arc<AtomicBool>, observer: Observer) -> Control {
        Control {
            cancel,
            observer: Some(observer),
        }
    }

    pub fn emit(&self, e: &Event) {
        if let Some(o) = &self.observer {
            o(e);
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once a cancel was asked for.
    pub fn check(&self) -> Result<(), TrainError> {
        if self.cancelled() {
            Err(TrainError::Cancelled)
        } else {
            Ok(())
        }
    }
}
