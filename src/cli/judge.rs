//! `stepkto judge` and `stepkto eval {processbench, flawed-steps}`: the step judges over
//! JSONL files, and the two evaluations the Step-KTO paper reports.

use std::io::Write;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{CliError, output, read_lines, write_line};
use crate::config::{EvalCommand, FlawedStepsArgs, JudgeArgs, ProcessBenchArgs};
use crate::judge::{first_wrong, judge_steps};
use crate::outcome::Budget;
use crate::steps::split_solution;

#[derive(Debug, Deserialize)]
struct JudgeLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    problem: Option<String>,
    #[serde(default)]
    steps: Option<Vec<String>>,
    #[serde(default)]
    solution: Option<String>,
}

fn check_model(model: &str) -> Result<(), CliError> {
    if model == "symbolic" {
        Ok(())
    } else {
        Err(CliError::Model(model.to_string()))
    }
}

/// `stepkto judge`.
pub fn judge(args: &JudgeArgs) -> Result<(), CliError> {
    check_model(&args.model)?;
    let budget = args.budget.to_budget()?;
    let mut out = output(args.output.as_deref())?;
    for (n, line) in read_lines(&args.input)?.iter().enumerate() {
        write_line(&mut out, &judge_line(line, n + 1, args.threshold, &budget))?;
    }
    out.flush()?;
    Ok(())
}

/// One output line of `stepkto judge`: the judgement, or an error object for the line.
fn judge_line(line: &str, n: usize, threshold: f64, budget: &Budget) -> Value {
    let j = match serde_json::from_str::<JudgeLine>(line) {
        Ok(j) => j,
        Err(e) => return json!({"error": format!("line {n}: {e}")}),
    };
    let steps = match (j.steps, j.solution) {
        (Some(s), _) => s,
        (None, Some(sol)) => split_solution(&sol),
        (None, None) => {
            return json!({"id": j.id, "error": format!("line {n}: needs `steps` or `solution`")});
        }
    };
    let verdicts = judge_steps(&steps, threshold, budget);
    let steps: Vec<Value> = verdicts
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"index": i, "score": s.score, "label": s.label, "symbolic": s.symbolic}))
        .collect();
    json!({"id": j.id, "steps": steps, "first_wrong_step": first_wrong(&verdicts)})
}

pub fn eval(cmd: &EvalCommand) -> Result<(), CliError> {
    match cmd {
        EvalCommand::Processbench(a) => processbench(a),
        EvalCommand::FlawedSteps(a) => flawed_steps(a),
    }
}

#[derive(Debug, Deserialize)]
struct PbLine {
    steps: Vec<String>,
    label: i64,
}

/// ProcessBench as its paper defines it: the prediction is the first step below the
/// threshold (or -1); accuracy on erroneous samples (label >= 0) and on correct samples
/// (label = -1) must match exactly; F1 is their harmonic mean.
fn processbench(a: &ProcessBenchArgs) -> Result<(), CliError> {
    check_model(&a.model)?;
    let budget = a.budget.to_budget()?;
    let (mut err_n, mut err_ok, mut cor_n, mut cor_ok) = (0u64, 0u64, 0u64, 0u64);
    let (mut early, mut caught_at_label, mut bad_lines) = (0u64, 0u64, 0u64);
    for line in read_lines(&a.input)? {
        let Ok(p) = serde_json::from_str::<PbLine>(&line) else {
            bad_lines += 1;
            continue;
        };
        let pred = first_wrong(&judge_steps(&p.steps, a.threshold, &budget));
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
    Ok(())
}

#[derive(Debug, Deserialize)]
struct FlawLine {
    final_answer_correct: bool,
    #[serde(default)]
    first_wrong_step: Option<i64>,
    #[serde(default)]
    label: Option<i64>,
    #[serde(default)]
    steps: Option<Vec<String>>,
}

/// The paper's flawed-step rate: among solutions with a correct final answer, the share with
/// at least one step labelled wrong.
fn flawed_steps(a: &FlawedStepsArgs) -> Result<(), CliError> {
    if let Some(m) = &a.model {
        check_model(m)?;
    }
    let budget = a.budget.to_budget()?;
    let (mut correct, mut flawed, mut skipped) = (0u64, 0u64, 0u64);
    for line in read_lines(&a.input)? {
        let Ok(f) = serde_json::from_str::<FlawLine>(&line) else {
            skipped += 1;
            continue;
        };
        if !f.final_answer_correct {
            continue;
        }
        let first = match (&a.model, &f.steps) {
            (Some(_), Some(steps)) => first_wrong(&judge_steps(steps, a.threshold, &budget)),
            (Some(_), None) => {
                skipped += 1;
                continue;
            }
            (None, _) => match f.first_wrong_step.or(f.label) {
                Some(x) => x,
                None => {
                    skipped += 1;
                    continue;
                }
            },
        };
        correct += 1;
        flawed += (first >= 0) as u64;
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
    Ok(())
}
