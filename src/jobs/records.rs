//! Eval records for the dashboard: what one needs to hold (model, dataset, kind, metric
//! values, counts, the judged samples), the checks a posted record passes, and the class
//! each sample is filed under. Three writers share this: `POST /v1/evals`, the CLI's
//! `stepkto eval ... --record`, and a job's finished rounds.
//!
//! A sample's class is the paper's split of solutions: `wrong` when its final answer is
//! wrong, `flawed` when the answer is right but a step is labelled wrong (the numerator of
//! the flawed-step rate), `correct` when the answer is right and no step is labelled wrong,
//! `unknown` when the record does not say whether the answer is right.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::store::evals::{EvalRecord, EvalSampleRow};

pub const CLASSES: [&str; 4] = ["correct", "wrong", "flawed", "unknown"];

/// Bounds on a record; the request body limit bounds its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Most samples in one record.
    pub max_samples: usize,
    /// Most steps in one sample.
    pub max_steps: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_samples: 100_000,
            max_steps: 1_000,
        }
    }
}

/// Most bad samples listed in an error (the count is always whole).
const MAX_LISTED: usize = 100;
/// Longest model, dataset or kind name.
const MAX_NAME: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("{count} samples are not valid (nothing was stored); the first: sample {}: {}", .listed[0].0, .listed[0].1)]
    Samples {
        count: usize,
        /// (sample index, what is wrong), at most 100.
        listed: Vec<(usize, String)>,
    },
}

fn field(f: &str, m: impl Into<String>) -> RecordError {
    RecordError::Field {
        field: f.to_string(),
        message: m.into(),
    }
}

/// A record as posted (and as the CLI builds it).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEval {
    /// The evaluated model's name as the dashboard groups it.
    pub model: String,
    /// The dataset's name (e.g. `math500`, `processbench-gsm8k`).
    pub dataset: String,
    /// `processbench`, `flawed-steps`, `generate` (what the CLI writes) or a name of your own
    /// (lowercase letters, digits and `-`).
    pub kind: String,
    /// The training round the model comes from, when it has one.
    #[serde(default)]
    pub round: Option<i64>,
    /// Metric values: numbers, null, or one level of named numbers (e.g. `pass_at_k`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
    /// Counts: non-negative integers.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub counts: Map<String, Value>,
    /// The judged samples; see `EvalSample`.
    #[serde(default)]
    #[schema(value_type = Vec<EvalSample>)]
    pub samples: Vec<Value>,
}

/// One judged sample. Fields other than these are kept as given.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // the schema of what `classify` reads
pub struct EvalSample {
    pub id: Option<String>,
    pub problem: Option<String>,
    /// True: the final answer matches the reference; null or absent: not known.
    pub final_answer_correct: Option<bool>,
    pub steps: Option<Vec<EvalStep>>,
    /// First step labelled wrong (-1: none); counted with the steps' own labels.
    pub first_wrong_step: Option<i64>,
    pub extracted: Option<String>,
    pub answer: Option<String>,
}

/// One step of a sample.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EvalStep {
    pub text: Option<String>,
    /// The step's label: false = wrong, null = no evidence.
    pub correct: Option<bool>,
    /// The PRM's P(step correct).
    pub score: Option<f64>,
    /// `verified`, `refuted` or `unknown`.
    pub symbolic: Option<String>,
    /// The false claim of a refuted step.
    pub detail: Option<String>,
}

fn name(f: &str, v: &str) -> Result<(), RecordError> {
    if v.trim().is_empty() {
        return Err(field(f, "must not be empty"));
    }
    if v.len() > MAX_NAME {
        return Err(field(f, format!("longer than {MAX_NAME} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(field(f, "holds control characters"));
    }
    Ok(())
}

/// The class of one sample, or what is wrong with it.
pub fn classify(s: &Value, max_steps: usize) -> Result<&'static str, String> {
    let o = s.as_object().ok_or("a sample must be a JSON object")?;
    let answer = match o.get("final_answer_correct") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("final_answer_correct must be true, false or null".into()),
    };
    let mut flawed = false;
    match o.get("steps") {
        None | Some(Value::Null) => {}
        Some(Value::Array(steps)) => {
            if steps.len() > max_steps {
                return Err(format!("more than {max_steps} steps"));
            }
            for (h, st) in steps.iter().enumerate() {
                let st = st
                    .as_object()
                    .ok_or_else(|| format!("steps[{h}] must be an object"))?;
                let wrong_type = |k: &str, want: &str| format!("steps[{h}].{k} must be {want}");
                match st.get("text") {
                    None | Some(Value::String(_)) => {}
                    _ => return Err(wrong_type("text", "a string")),
                }
                match st.get("correct") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(c)) => flawed |= !c,
                    _ => return Err(wrong_type("correct", "true, false or null")),
                }
                match st.get("score") {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) if (0.0..=1.0).contains(&n.as_f64().unwrap_or(-1.0)) => {
                    }
                    _ => return Err(wrong_type("score", "a probability in [0, 1]")),
                }
                match st.get("symbolic") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(x))
                        if ["verified", "refuted", "unknown"].contains(&x.as_str()) => {}
                    _ => return Err(wrong_type("symbolic", "verified, refuted or unknown")),
                }
            }
        }
        Some(_) => return Err("steps must be a list of step objects".into()),
    }
    match o.get("first_wrong_step") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(x) if x >= -1 => flawed |= x >= 0,
            _ => return Err("first_wrong_step must be an integer >= -1".into()),
        },
    }
    Ok(match answer {
        Some(false) => "wrong",
        Some(true) if flawed => "flawed",
        Some(true) => "correct",
        None => "unknown",
    })
}

fn check_metrics(m: &Map<String, Value>) -> Result<(), RecordError> {
    for (k, v) in m {
        match v {
            Value::Number(_) | Value::Null => {}
            Value::Object(inner) => {
                if let Some((k2, _)) = inner.iter().find(|(_, x)| !(x.is_number() || x.is_null())) {
                    return Err(field(
                        &format!("metrics.{k}.{k2}"),
                        "must be a number or null",
                    ));
                }
            }
            _ => {
                return Err(field(
                    &format!("metrics.{k}"),
                    "must be a number, null, or an object of numbers",
                ));
            }
        }
    }
    Ok(())
}

/// Check a record and file its samples; nothing is returned (and so nothing stored) when
/// any part is bad.
pub fn build(
    id: String,
    job_id: Option<String>,
    e: NewEval,
    lim: &RecordLimits,
) -> Result<(EvalRecord, Vec<EvalSampleRow>), RecordError> {
    name("model", &e.model)?;
    name("dataset", &e.dataset)?;
    if e.kind.is_empty()
        || e.kind.len() > 32
        || !e
            .kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(field(
            "kind",
            "1 to 32 lowercase letters, digits and '-' (processbench, flawed-steps, generate, ...)",
        ));
    }
    if e.round.is_some_and(|r| r < 0) {
        return Err(field("round", "must be >= 0"));
    }
    check_metrics(&e.metrics)?;
    if let Some((k, _)) = e.counts.iter().find(|(_, v)| v.as_u64().is_none()) {
        return Err(field(
            &format!("counts.{k}"),
            "must be a non-negative integer",
        ));
    }
    if e.samples.len() > lim.max_samples {
        return Err(field(
            "samples",
            format!(
                "{} samples; a record holds at most {} (--max-eval-samples)",
                e.samples.len(),
                lim.max_samples
            ),
        ));
    }
    let mut tally: Map<String, Value> = CLASSES.iter().map(|c| (c.to_string(), json!(0))).collect();
    let (mut rows, mut bad) = (Vec::with_capacity(e.samples.len()), Vec::new());
    let mut bad_count = 0;
    for (i, s) in e.samples.iter().enumerate() {
        match classify(s, lim.max_steps) {
            Ok(class) => {
                let n = tally[class].as_u64().unwrap_or(0);
                tally[class] = json!(n + 1);
                rows.push(EvalSampleRow {
                    idx: i as i64,
                    class: class.to_string(),
                    body: s.to_string(),
                });
            }
            Err(m) => {
                bad_count += 1;
                if bad.len() < MAX_LISTED {
                    bad.push((i, m));
                }
            }
        }
    }
    if bad_count > 0 {
        return Err(RecordError::Samples {
            count: bad_count,
            listed: bad,
        });
    }
    let body = json!({"metrics": e.metrics, "counts": e.counts, "classes": tally});
    Ok((
        EvalRecord {
            id,
            model: e.model,
            job_id,
            round: e.round,
            dataset: e.dataset,
            kind: e.kind,
            body: body.to_string(),
            created_at: 0,
        },
        rows,
    ))
}

/// A generate-eval report (`train::eval::EvalReport` as JSON) as record metrics and counts:
/// the rates are metrics, the integers counts.
pub fn split_report(report: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let (mut metrics, mut counts) = (Map::new(), Map::new());
    if let Some(o) = report.as_object() {
        for (k, v) in o {
            match v {
                Value::Number(n) if n.is_u64() => {
                    counts.insert(k.clone(), v.clone());
                }
                Value::Number(_) | Value::Null | Value::Object(_) => {
                    metrics.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    (metrics, counts)
}

/// The samples of a JSONL text (a round's `eval-records.jsonl`); unreadable lines are left
/// out, since the trainer wrote them.
pub fn samples_of(jsonl: &str) -> Vec<Value> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_answer_and_the_step_labels() {
        let c = |v: Value| classify(&v, 10);
        assert_eq!(c(json!({"final_answer_correct": false})), Ok("wrong"));
        assert_eq!(
            c(
                json!({"final_answer_correct": true, "steps": [{"correct": true}, {"correct": null}]})
            ),
            Ok("correct")
        );
        assert_eq!(
            c(
                json!({"final_answer_correct": true, "steps": [{"correct": true}, {"correct": false}]})
            ),
            Ok("flawed")
        );
        assert_eq!(
            c(json!({"final_answer_correct": true, "first_wrong_step": 0})),
            Ok("flawed")
        );
        assert_eq!(
            c(json!({"final_answer_correct": true, "first_wrong_step": -1})),
            Ok("correct")
        );
        assert_eq!(c(json!({"steps": [{"correct": false}]})), Ok("unknown"));
        assert!(c(json!([1])).is_err());
        assert!(c(json!({"final_answer_correct": "yes"})).is_err());
        assert!(c(json!({"steps": [{"score": 1.5}]})).is_err());
        assert!(c(json!({"steps": [{"symbolic": "maybe"}]})).is_err());
        assert!(c(json!({"steps": [{"text": 3}]})).is_err());
        assert!(c(json!({"first_wrong_step": -2})).is_err());
        assert!(classify(&json!({"steps": vec![json!({}); 11]}), 10).is_err());
    }

    #[test]
    fn report_numbers_split_into_metrics_and_counts() {
        let (m, c) = split_report(
            &json!({"problems": 3, "pass_at_1": 0.5, "flawed_step_rate": null, "pass_at_k": {"1": 0.5}, "k": 4}),
        );
        assert_eq!(Value::Object(c), json!({"problems": 3, "k": 4}));
        assert_eq!(
            Value::Object(m),
            json!({"pass_at_1": 0.5, "flawed_step_rate": null, "pass_at_k": {"1": 0.5}})
        );
    }
}
