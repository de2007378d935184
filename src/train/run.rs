//! What a training run is told: the config file (TOML or JSON, every field checked, an
//! unknown one named in the error) and its input files (problems for rounds, TRL's unpaired
//! `{"prompt", "completion", "label"}` rows or SFT rows for one offline pass). A bad input
//! line is reported with its number and skipped; the run goes on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TrainError;
use super::label::JudgeConfig;
use super::loss::{KtoConfig, StepConfig};
use super::optim::OptimConfig;
use super::sample::DEFAULT_MAX_MEMORY_MB;
use crate::config::DEFAULT_SYSTEM;

/// Which loss a run trains with (the `stepkto train` subcommand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunMethod {
    Sft,
    Kto,
    StepKto,
}

/// A training run's config. Paths are relative to the config file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The starting policy (M0): a Hugging Face directory.
    pub model: PathBuf,
    /// Where rounds, metrics and the summary go.
    pub output: PathBuf,
    /// Problems `{"id", "problem", "answer"}` to sample from in each round.
    #[serde(default)]
    pub problems: Option<PathBuf>,
    /// Rows for one offline pass instead of rounds: `{"prompt", "completion", "label"}`
    /// (TRL's unpaired format, optional `"steps"` and `"step_labels"`), or for SFT
    /// `{"prompt", "completion"}` / `{"problem", "solution"}`.
    #[serde(default)]
    pub dataset: Option<PathBuf>,
    /// Held-out problems evaluated after every round (and for the starting model).
    #[serde(default)]
    pub eval_problems: Option<PathBuf>,
    #[serde(default = "one")]
    pub rounds: usize,
    /// Problems sampled per round (a seeded draw without replacement); all when absent.
    #[serde(default)]
    pub problems_per_round: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "cpu")]
    pub device: String,
    /// The system message problems are rendered with (the chat template's).
    #[serde(default = "system")]
    pub system: String,
    #[serde(default = "one")]
    pub epochs: usize,
    /// Examples per micro-batch (also the group TRL's KL pairs are rotated within).
    #[serde(default = "eight")]
    pub micro_batch: usize,
    /// Save the training state every this many optimiser steps (for `--resume`).
    #[serde(default = "save_every")]
    pub save_every: usize,
    #[serde(default)]
    pub sample: SampleSection,
    #[serde(default)]
    pub judge: JudgeConfig,
    #[serde(default)]
    pub kto: KtoConfig,
    #[serde(default)]
    pub step: StepConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub eval: EvalSection,
}

fn one() -> usize {
    1
}
fn eight() -> usize {
    8
}
fn save_every() -> usize {
    20
}
fn cpu() -> String {
    "cpu".into()
}
fn system() -> String {
    DEFAULT_SYSTEM.into()
}

/// How training problems are sampled in each round.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleSection {
    /// Completions per problem (K).
    pub samples: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub max_batch: usize,
    /// Memory a sampling batch may hold, in MiB (KV cache and prefill; evaluation too).
    pub max_memory_mb: usize,
}

impl Default for SampleSection {
    fn default() -> Self {
        SampleSection {
            samples: 4,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 512,
            stop: Vec::new(),
            max_batch: 32,
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
        }
    }
}

/// How held-out problems are evaluated: greedy Pass@1, and `samples` draws for Maj@K and
/// the unbiased pass@k.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    pub samples: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            samples: 8,
            temperature: 0.7,
            top_p: 1.0,
            max_new_tokens: 512,
        }
    }
}

impl TrainConfig {
    /// Read a config (`.json` is JSON; anything else TOML), paths made relative to it.
    pub fn read(path: &Path) -> Result<TrainConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let bad = |e: String| TrainError::Config(format!("{}: {e}", path.display()));
        let mut cfg: TrainConfig = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            Some(&mut cfg.model),
            Some(&mut cfg.output),
            cfg.problems.as_mut(),
            cfg.dataset.as_mut(),
            cfg.eval_problems.as_mut(),
            cfg.judge.prm.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate().map_err(|(_, m)| bad(m))?;
        Ok(cfg)
    }

    /// Values serde cannot check; the error is (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |f: &str, m: &str| Err((f.to_string(), m.to_string()));
        let positive = [
            ("rounds", self.rounds),
            ("epochs", self.epochs),
            ("micro_batch", self.micro_batch),
            ("save_every", self.save_every),
            ("sample.samples", self.sample.samples),
            ("sample.max_batch", self.sample.max_batch),
            ("sample.max_memory_mb", self.sample.max_memory_mb),
            ("optim.grad_accumulation", self.optim.grad_accumulation),
            ("judge.batch", self.judge.batch),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((name.to_string(), format!("{name} must be at least 1")));
        }
        if self.problems.is_some() == self.dataset.is_some() {
            return fail(
                "problems",
                "give exactly one of `problems` (rounds) and `dataset` (one pass)",
            );
        }
        let o = &self.optim;
        if !(o.learning_rate.is_finite() && o.learning_rate >= 0.0) {
            return fail(
                "optim.learning_rate",
                "optim.learning_rate must be a finite number >= 0",
            );
        }
        if !(self.kto.beta.is_finite() && self.kto.beta > 0.0) {
            return fail("kto.beta", "kto.beta must be > 0");
        }
        Ok(())
    }

    /// The method as checked against the inputs: SFT trains on a dataset only.
    pub fn check_method(&self, method: RunMethod) -> Result<(), TrainError> {
        if method == RunMethod::Sft && self.dataset.is_none() {
            return Err(TrainError::Config(
                "sft trains on a `dataset` of prompts and completions, not on `problems`".into(),
            ));
        }
        Ok(())
    }
}

/// A problem to sample: its id (the line's, or its line number), text and reference answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub id: Value,
    pub problem: String,
    pub answer: String,
}

/// A line that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LineError {
    pub file: String,
    pub line: usize,
    pub error: String,
}

fn lines(path: &Path) -> Result<Vec<(usize, String)>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect())
}

/// Problems from a JSONL file (MATH-500's extra fields are ignored); lines without a usable
/// problem or answer come back as errors.
pub fn read_problems(path: &Path) -> Result<(Vec<Problem>, Vec<LineError>), TrainError> {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (n, l) in lines(path)? {
        match parse_problem(n, &l) {
            Ok(p) => ok.push(p),
            Err(e) => bad.push(LineError {
                file: path.display().to_string(),
                line: n,
                error: e,
            }),
        }
    }
    Ok((ok, bad))
}

/// One problem line (`n`, its 1-based number, is the id when the line has none).
pub fn parse_problem(n: usize, line: &str) -> Result<Problem, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("bad line: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (text("problem"), answer_of(&v)) {
        (Some(p), Some(a)) if !p.trim().is_empty() && !a.trim().is_empty() => Ok(Problem {
            id: v.get("id").cloned().unwrap_or(Value::from(n)),
            problem: p,
            answer: a,
        }),
        (None, _) => Err("no \"problem\" text".into()),
        _ => Err("no reference \"answer\"".into()),
    }
}

/// A reference answer given as a string or a number.
fn answer_of(v: &Value) -> Option<String> {
    match v.get("answer")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One row of an offline dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRow {
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub completion: Option<String>,
    /// `{"problem", "solution"}` rows are rendered with the chat template.
    #[serde(default)]
    pub problem: Option<String>,
    #[serde(default)]
    pub solution: Option<String>,
    /// KTO's desirable / undesirable bit (TRL's `label`).
    #[serde(default)]
    pub label: Option<bool>,
    /// Step-KTO: the completion's steps (each a substring of it, in order) and their labels;
    /// absent, the steps are the completion's paragraphs and take the outcome label.
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    #[serde(default)]
    pub step_labels: Option<Vec<bool>>,
}

/// Dataset rows, or per line why not.
pub fn read_dataset(
    path: &Path,
    method: RunMethod,
) -> Result<(Vec<DatasetRow>, Vec<LineError>), TrainError> {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (n, l) in lines(path)? {
        match parse_dataset_row(&l, method) {
            Ok(r) => ok.push(r),
            Err(e) => bad.push(LineError {
                file: path.display().to_string(),
                line: n,
                error: e,
            }),
        }
    }
    Ok((ok, bad))
}

/// One offline dataset line, checked for `method` (SFT rows need no label).
pub fn parse_dataset_row(line: &str, method: RunMethod) -> Result<DatasetRow, String> {
    serde_json::from_str::<DatasetRow>(line)
        .map_err(|e| format!("bad line: {e}"))
        .and_then(|r| check_row(r, method))
}

fn check_row(r: DatasetRow, method: RunMethod) -> Result<DatasetRow, String> {
    let raw = r.prompt.is_some() && r.completion.is_some();
    let chat = r.problem.is_some() && r.solution.is_some();
    if raw == chat || (r.prompt.is_some() != r.completion.is_some()) {
        return Err(
            "a row needs \"prompt\" and \"completion\", or \"problem\" and \"solution\"".into(),
        );
    }
    if method != RunMethod::Sft && r.label.is_none() {
        return Err("a KTO row needs a boolean \"label\"".into());
    }
    match (&r.steps, &r.step_labels) {
        (Some(s), Some(l)) if s.len() != l.len() => {
            return Err(format!("{} steps but {} step_labels", s.len(), l.len()));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("\"steps\" and \"step_labels\" come together".into());
        }
        _ => {}
    }
    Ok(r)
}
