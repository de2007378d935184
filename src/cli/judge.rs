//! `stepkto judge` and `stepkto eval {processbench, flawed-steps}`: the step judges over
//! JSONL files, and the two evaluations the Step-KTO paper reports.

use std::io::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{CliError, output, read_lines, write_line};
use crate::config::{EvalCommand, FlawedStepsArgs, JudgeArgs, ModelArgs, ProcessBenchArgs};
use crate::devices::DevicePool;
use crate::judge::batcher::Batcher;
use crate::judge::{
    JudgeError, Judges, StepVerdict, first_wrong, judge_steps, score_blocking, with_scores,
};
use crate::outcome::Budget;
use crate::steps::split_solution;

/// Items handed to the judge at once; bounds memory on long files.
const CHUNK: usize = 256;
/// The CLI has no client to give up, so its deadline per chunk is a day.
const CLI_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// The judge a command runs: `symbolic`, or one PRM on its inference thread.
struct CliJudge {
    prm: Option<Arc<Batcher>>,
    threshold: f64,
    budget: Budget,
}

impl CliJudge {
    fn open(m: &ModelArgs, threshold: f64, budget: Budget) -> Result<CliJudge, CliError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(CliError::Config(crate::config::ConfigError::Value {
                name: "--threshold",
                why: format!("must be in [0, 1], got {threshold}"),
            }));
        }
        let prm = match m.single()? {
            None => None,
            Some(spec) => {
                let pool = DevicePool::new(&m.device)?;
                let mut j = Judges::load(&[spec], &pool, m.batch()?)?;
                j.prms.pop()
            }
        };
        Ok(CliJudge {
            prm,
            threshold,
            budget,
        })
    }

    fn name(&self) -> &str {
        self.prm.as_ref().map_or("symbolic", |b| b.prm.id.as_str())
    }

    /// Verdicts per item (problem, steps), in order.
    fn judge(&self, items: &[(String, Vec<String>)]) -> Vec<Result<Vec<StepVerdict>, JudgeError>> {
        match &self.prm {
            None => items
                .iter()
                .map(|(problem, steps)| {
                    Ok(judge_steps(problem, steps, self.threshold, &self.budget))
                })
                .collect(),
            Some(b) => score_blocking(b, items, CLI_TIMEOUT_MS)
                .into_iter()
                .zip(items)
                .map(|(r, (problem, steps))| {
                    r.map(|scores| {
                        with_scores(&scores, problem, steps, self.threshold, &self.budget)
                    })
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct JudgeLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    problem: Option<String>,
    #[serde(default)]
    steps: Option<Vec<String>>,
    #[serde(default)]
    solution: Option<String>,
}

/// `stepkto judge`.
pub fn judge(args: &JudgeArgs) -> Result<(), CliError> {
    let budget = args.budget.to_budget()?;
    let judge = CliJudge::open(&args.models, args.threshold, budget)?;
    let mut out = output(args.output.as_deref())?;
    let lines = read_lines(&args.input)?;
    for (c, chunk) in lines.chunks(CHUNK).enumerate() {
        // Parse the chunk; a bad line becomes its own error object in place.
        let parsed: Vec<Result<ParsedLine, Value>> = chunk
            .iter()
            .enumerate()
            .map(|(k, line)| parse_judge_line(line, c * CHUNK + k + 1))
            .collect();
        let items: Vec<(String, Vec<String>)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(_, pr, st)| (pr.clone(), st.clone())))
            .collect();
        let mut verdicts = judge.judge(&items).into_iter();
        for p in parsed {
            let v = match p {
                Err(e) => e,
                Ok((id, _, _)) => match verdicts.next() {
                    Some(Ok(v)) => judged(id, &v),
                    Some(Err(e)) => json!({"id": id, "error": e.to_string()}),
                    None => json!({"id": id, "error": "not judged"}),
                },
            };
            write_line(&mut out, &v)?;
        }
    }
    out.flush()?;
    tracing::debug!(judge = judge.name(), "judge done");
    Ok(())
}

/// A judge input line: id, problem, steps.
type ParsedLine = (Option<Value>, String, Vec<String>);

fn parse_judge_line(line: &str, n: usize) -> Result<ParsedLine, Value> {
    let j = serde_json::from_str::<JudgeLine>(line)
        .map_err(|e| json!({"error": format!("line {n}: {e}")}))?;
    let steps = match (j.steps, j.solution) {
        (Some(s), _) => s,
        (None, Some(sol)) => split_solution(&sol),
        (None, None) => {
            return Err(
                json!({"id": j.id, "error": format!("line {n}: needs `steps` or `solution`")}),
            );
        }
    };
    Ok((j.id, j.problem.unwrap_or_default(), steps))
}

/// One output line of `stepkto judge`.
fn judged(id: Option<Value>, verdicts: &[StepVerdict]) -> Value {
    let steps: Vec<Value> = verdicts
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"index": i, "score": s.score, "label": s.label, "symbolic": s.symbolic}))
        .collect();
    json!({"id": id, "steps": steps, "first_wrong_step": first_wrong(verdicts)})
}

pub fn eval(cmd: &EvalCommand) -> Result<(), CliError> {
    match cmd {
        EvalCommand::Processbench(a) => processbench(a),
        EvalCommand::FlawedSteps(a) => flawed_steps(a),
        EvalCommand::Generate(a) => super::train::eval_generate(a),
    }
}

#[derive(Debug, Deserialize)]
struct PbLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    problem: String,
    steps: Vec<String>,
    label: i64,
    #[serde(default)]
    final_answer_correct: Option<bool>,
}

/// A judged solution as an eval record holds it: each step's text beside its verdict.
fn sample_steps(steps: &[String], verdicts: Option<&[StepVerdict]>) -> Vec<Value> {
    steps
        .iter()
        .enumerate()
        .map(|(h, t)| match verdicts.and_then(|v| v.get(h)) {
            Some(v) => {
                let refuted = v.symbolic.status == crate::judge::Status::Refuted;
                let mut o = json!({"text": t, "correct": v.label, "score": v.score,
                    "symbolic": v.symbolic.status});
                if refuted {
                    o["detail"] = json!(v.symbolic.detail);
                }
                o
            }
            None => json!({"text": t}),
        })
        .collect()
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// ProcessBench as its paper defines it: the prediction is the first step below the
/// threshold (or -1); accuracy on erroneous samples (label >= 0) and on correct samples
/// (label = -1) must match exactly; F1 is their harmonic mean.
fn processbench(a: &ProcessBenchArgs) -> Result<(), CliError> {
    let judge = CliJudge::open(&a.models, a.threshold, a.budget.to_budget()?)?;
    let (mut err_n, mut err_ok, mut cor_n, mut cor_ok) = (0u64, 0u64, 0u64, 0u64);
    let (mut early, mut caught_at_label, mut bad_lines) = (0u64, 0u64, 0u64);
    let mut samples: Vec<PbLine> = Vec::new();
    for line in read_lines(&a.input)? {
        match serde_json::from_str::<PbLine>(&line) {
            Ok(p) => samples.push(p),
            Err(_) => bad_lines += 1,
        }
    }
    let mut preds = Vec::with_capacity(samples.len());
    let mut judged: Vec<Value> = Vec::new();
    for chunk in samples.chunks(CHUNK) {
        let items: Vec<(String, Vec<String>)> = chunk
            .iter()
            .map(|p| (p.problem.clone(), p.steps.clone()))
            .collect();
        for (p, r) in chunk.iter().zip(judge.judge(&items)) {
            // An item the judge cannot score (over its context) counts as a miss, and is said.
            let (pred, verdicts, error) = match r {
                Ok(v) => (first_wrong(&v), Some(v), None),
                Err(e) => {
                    eprintln!("warning: {e}");
                    (-2, None, Some(e.to_string()))
                }
            };
            preds.push(pred);
            if a.record.record {
                let mut o = json!({"id": p.id, "problem": p.problem,
                    "steps": sample_steps(&p.steps, verdicts.as_deref()),
                    "final_answer_correct": p.final_answer_correct,
                    "label": p.label, "prediction": pred, "match": pred == p.label});
                if let Some(e) = error {
                    o["error"] = json!(e);
                }
                judged.push(o);
            }
        }
    }
    for (p, pred) in samples.iter().zip(preds) {
        if p.label >= 0 {
            err_n += 1;
            err_ok += (pred == p.label) as u64;
            caught_at_label += (pred == p.label) as u64;
            early += (pred >= 0 && pred < p.label) as u64;
        } else {
            cor_n += 1;
            cor_ok += (pred == -1) as u64;
            early += (pred >= 0) as u64;
        }
    }
    let pct = |x: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            100.0 * x as f64 / n as f64
        }
    };
    let (e, c) = (pct(err_ok, err_n), pct(cor_ok, cor_n));
    let f1 = if e + c == 0.0 {
        0.0
    } else {
        2.0 * e * c / (e + c)
    };
    println!("judge: {}, threshold {}", judge.name(), a.threshold);
    println!(
        "samples: {} ({} erroneous, {} correct){}",
        err_n + cor_n,
        err_n,
        cor_n,
        if bad_lines > 0 {
            format!(", {bad_lines} unreadable lines skipped")
        } else {
            String::new()
        }
    );
    println!("accuracy on erroneous samples: {e:.1}% ({err_ok}/{err_n})");
    println!("accuracy on correct samples:   {c:.1}% ({cor_ok}/{cor_n})");
    println!("F1:                            {f1:.1}");
    println!(
        "false alarms (a step flagged before the first error, or in a correct sample): {early} = {:.2}% of samples",
        pct(early, err_n + cor_n)
    );
    println!("erroneous samples caught at the labelled step: {caught_at_label}/{err_n}");
    let frac = |x: f64| x / 100.0;
    super::record::record(
        &a.record,
        &a.input,
        super::record::Measured {
            kind: "processbench",
            default_model: Some(judge.name().to_string()),
            metrics: obj(json!({"f1": frac(f1), "accuracy_erroneous": frac(e),
                "accuracy_correct": frac(c), "threshold": a.threshold})),
            counts: obj(
                json!({"samples": err_n + cor_n, "erroneous": err_n, "correct": cor_n,
                "erroneous_matched": err_ok, "correct_matched": cor_ok, "false_alarms": early,
                "unreadable_lines": bad_lines}),
            ),
            samples: judged,
        },
    )
}

#[derive(Debug, Deserialize)]
struct FlawLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    problem: String,
    final_answer_correct: bool,
    #[serde(default)]
    first_wrong_step: Option<i64>,
    #[serde(default)]
    label: Option<i64>,
    #[serde(default)]
    steps: Option<Vec<String>>,
}

/// Step rows from a file's first-wrong-step label: the steps before it right, it wrong,
/// the ones after it unjudged (the label says nothing about them).
fn labelled_steps(steps: &[String], first_wrong: i64) -> Vec<Value> {
    steps
        .iter()
        .enumerate()
        .map(|(h, t)| {
            let h = h as i64;
            let correct = if first_wrong < 0 || h < first_wrong {
                json!(true)
            } else if h == first_wrong {
                json!(false)
            } else {
                Value::Null
            };
            json!({"text": t, "correct": correct})
        })
        .collect()
}

/// The paper's flawed-step rate: among solutions with a correct final answer, the share with
/// at least one step labelled wrong.
fn flawed_steps(a: &FlawedStepsArgs) -> Result<(), CliError> {
    super::record::check(&a.record, "flawed-steps", false)?;
    let use_judge = !a.models.models.is_empty();
    let judge = CliJudge::open(&a.models, a.threshold, a.budget.to_budget()?)?;
    let (mut correct, mut flawed, mut skipped, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut to_judge: Vec<(String, Vec<String>)> = Vec::new();
    let mut judged_ids: Vec<Option<Value>> = Vec::new();
    let mut samples: Vec<Value> = Vec::new();
    let recording = a.record.record;
    for line in read_lines(&a.input)? {
        let Ok(f) = serde_json::from_str::<FlawLine>(&line) else {
            skipped += 1;
            continue;
        };
        if !f.final_answer_correct {
            wrong += 1;
            if recording {
                let steps = f.steps.as_deref().map(|s| sample_steps(s, None));
                samples.push(json!({"id": f.id, "problem": f.problem, "steps": steps,
                    "final_answer_correct": false}));
            }
            continue;
        }
        match (use_judge, f.steps) {
            (true, Some(steps)) => {
                to_judge.push((f.problem, steps));
                judged_ids.push(f.id);
            }
            (true, None) => skipped += 1,
            (false, steps) => match f.first_wrong_step.or(f.label) {
                Some(x) if x >= -1 => {
                    correct += 1;
                    flawed += (x >= 0) as u64;
                    if recording {
                        let steps = steps.as_deref().map(|s| labelled_steps(s, x));
                        samples.push(json!({"id": f.id, "problem": f.problem, "steps": steps,
                            "final_answer_correct": true, "first_wrong_step": x}));
                    }
                }
                _ => skipped += 1,
            },
        }
    }
    let mut ids = judged_ids.into_iter();
    for chunk in to_judge.chunks(CHUNK) {
        for ((problem, steps), r) in chunk.iter().zip(judge.judge(chunk)) {
            let id = ids.next().flatten();
            match r {
                Ok(v) => {
                    correct += 1;
                    let fw = first_wrong(&v);
                    flawed += (fw >= 0) as u64;
                    if recording {
                        samples.push(json!({"id": id, "problem": problem,
                            "steps": sample_steps(steps, Some(&v)),
                            "final_answer_correct": true, "first_wrong_step": fw}));
                    }
                }
                Err(_) => skipped += 1,
            }
        }
    }
    let rate = if correct == 0 {
        0.0
    } else {
        100.0 * flawed as f64 / correct as f64
    };
    println!("solutions with a correct final answer: {correct}");
    println!("of which with a step labelled wrong:   {flawed}");
    println!(
        "flawed-step rate: {rate:.1}%{}",
        if skipped > 0 {
            format!(" ({skipped} lines skipped: unreadable or without steps/labels)")
        } else {
            String::new()
        }
    );
    super::record::record(
        &a.record,
        &a.input,
        super::record::Measured {
            kind: "flawed-steps",
            default_model: None,
            metrics: obj(json!({
                "flawed_step_rate": (correct > 0).then(|| flawed as f64 / correct as f64),
            })),
            counts: obj(json!({"correct": correct, "flawed": flawed, "wrong": wrong,
                "skipped": skipped})),
            samples,
        },
    )
}
