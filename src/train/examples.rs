//! Training examples: from a round's samples (sampled, outcome-labelled, step-judged and
//! written to `samples.jsonl` here) or from an offline dataset. Either way an example is the
//! prompt's tokens, the completion's tokens (as sampled, or as the tokenizer splits the
//! text, with EOS appended as TRL does), the outcome bit and the steps' token spans and
//! labels.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::TrainError;
use super::control::Control;
use super::decoder::Decoder;
use super::label::{StepJudge, completion_steps, outcome_label, token_ends, token_spans};
use super::rounds::{Text, bar, mix};
use super::run::{DatasetRow, Problem, RunMethod, TrainConfig};
use super::sample::{SampleConfig, generate_keyed};
use super::step::Example;
use crate::steps::step_ranges;

/// A round's examples and what they hold.
pub struct Examples {
    pub examples: Vec<Example>,
    pub counts: Value,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::io(path, e)
}

/// Sample `cfg.sample.samples` completions of each chosen problem with `model`, label them,
/// and write `round_dir/samples.jsonl` (continuing a partial file a killed run left).
/// Returns the seconds spent sampling and judging.
#[allow(clippy::too_many_arguments)]
pub fn sample_lines(
    model: &Decoder,
    text: &Text,
    judge: &StepJudge,
    cfg: &TrainConfig,
    round: usize,
    problems: &[Problem],
    chosen: &[usize],
    round_dir: &Path,
    control: &Control,
) -> Result<Value, TrainError> {
    let k = cfg.sample.samples;
    let partial = round_dir.join("samples.partial.jsonl");
    // problems whose K lines all reached the partial file are kept; the rest are redone
    let mut done: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    if let Ok(old) = std::fs::read_to_string(&partial) {
        for l in old.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                let p = v["problem_index"].as_u64().unwrap_or(u64::MAX);
                done.entry(p).or_default().push(l.to_string());
            }
        }
        done.retain(|_, v| v.len() == k);
    }
    let mut f = std::fs::File::create(&partial).map_err(io(&partial))?;
    for lines in done.values() {
        for l in lines {
            writeln!(f, "{l}").map_err(io(&partial))?;
        }
    }
    let s = &cfg.sample;
    let scfg = SampleConfig {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        max_new_tokens: s.max_new_tokens,
        seed: mix(&[cfg.seed, round as u64]),
        stop: s.stop.clone(),
        max_batch: s.max_batch,
        max_memory_mb: s.max_memory_mb,
    };
    let context = model.config.max_position_embeddings;
    let mut todo: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut skipped = Vec::new();
    for &i in chosen.iter().filter(|&&i| !done.contains_key(&(i as u64))) {
        match text.problem_ids(&problems[i].problem) {
            Ok(ids) if ids.len() < context => todo.push((i, ids)),
            Ok(ids) => skipped.push(json!({"id": problems[i].id,
                "error": format!("the prompt has {} tokens, the model's context is {context}", ids.len())})),
            Err(e) => skipped.push(json!({"id": problems[i].id, "error": e.to_string()})),
        }
    }
    for e in &skipped {
        tracing::warn!("skipped problem {}: {}", e["id"], e["error"]);
    }
    let b = bar(chosen.len(), &format!("sample {round}"));
    b.set_position((chosen.len() - todo.len() - skipped.len()) as u64);
    let (mut sampling, mut judging) = (0f64, 0f64);
    let part = (s.max_batch / k).max(1);
    for chunk in todo.chunks(part) {
        // a cancel between chunks keeps the partial file: whole problems are not redone
        control.check()?;
        let t = Instant::now();
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|c| c.1.clone()).collect();
        let keys: Vec<u64> = chunk.iter().map(|c| c.0 as u64).collect();
        let out = generate_keyed(model, &prompts, &keys, k, &text.eos, Some(&text.tok), &scfg)?;
        sampling += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut items = Vec::with_capacity(out.len());
        let mut spans = Vec::with_capacity(out.len());
        for o in &out {
            let (steps, sp) = completion_steps(&text.tok, &o.tokens)?;
            items.push((problems[chunk[o.prompt].0].problem.as_str(), steps));
            spans.push(sp);
        }
        let labels = judge.label(&items)?;
        for (j, o) in out.iter().enumerate() {
            let p = &problems[chunk[o.prompt].0];
            let completion = o.text.clone().unwrap_or_default();
            let (correct, extracted) = outcome_label(&p.answer, &completion);
            let steps: Vec<Value> = items[j]
                .1
                .iter()
                .zip(&spans[j])
                .zip(&labels[j])
                .map(|((t, sp), l)| {
                    let mut v = json!({"text": t, "span": [sp.0, sp.1], "correct": l.correct,
                        "score": l.score, "symbolic": l.symbolic});
                    if let Some(d) = &l.detail {
                        v["detail"] = json!(d);
                    }
                    v
                })
                .collect();
            let line = json!({"problem_index": chunk[o.prompt].0, "id": p.id, "problem": p.problem,
                "answer": p.answer, "sample": o.sample, "completion": completion,
                "token_ids": o.tokens, "tokens": o.tokens.len(),
                "finish_reason": o.finish_reason, "correct": correct, "extracted": extracted,
                "steps": steps});
            writeln!(f, "{line}").map_err(io(&partial))?;
        }
        f.flush().map_err(io(&partial))?;
        judging += t.elapsed().as_secs_f64();
        b.inc(chunk.len() as u64);
    }
    b.finish_and_clear();
    drop(f);
    let file = round_dir.join("samples.jsonl");
    std::fs::rename(&partial, &file).map_err(io(&file))?;
    Ok(json!({"sampling": sampling, "judging": judging, "skipped_problems": skipped}))
}

/// Examples from the lines of a samples file.
pub fn samples_examples(
    text: &Text,
    lines: &str,
    method: RunMethod,
) -> Result<Examples, TrainError> {
    let mut examples = Vec::new();
    let mut prompts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let (mut correct, mut flawed, mut steps_n, mut wrong_steps) = (0, 0, 0, 0);
    let mut unlabelled = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(l).map_err(|e| TrainError::Input(format!("samples file: {e}")))?;
        let problem = v["problem"].as_str().unwrap_or_default().to_string();
        if !prompts.contains_key(&problem) {
            prompts.insert(problem.clone(), text.problem_ids(&problem)?);
        }
        let completion: Vec<u32> = v["token_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as u32))
                    .collect()
            })
            .unwrap_or_default();
        let ok = v["correct"].as_bool().unwrap_or(false);
        *reasons
            .entry(v["finish_reason"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let mut spans = Vec::new();
        let mut labels = Vec::new();
        for s in v["steps"].as_array().into_iter().flatten() {
            let (start, len) = (
                s["span"][0].as_u64().unwrap_or(0),
                s["span"][1].as_u64().unwrap_or(0),
            );
            // a step the judge has no evidence on (null) takes no part in the step term
            let c = s["correct"].as_bool();
            steps_n += 1;
            wrong_steps += (c == Some(false)) as usize;
            unlabelled += c.is_none() as usize;
            if let (true, Some(c)) = (len > 0, c) {
                spans.push((start as usize, len as usize));
                labels.push(c);
            }
        }
        correct += ok as usize;
        flawed += (ok && labels.iter().any(|c| !c)) as usize;
        if completion.is_empty() {
            continue;
        }
        let keep_steps = method == RunMethod::StepKto;
        examples.push(Example {
            prompt: prompts[&problem].clone(),
            completion,
            desirable: ok,
            steps: if keep_steps { spans } else { Vec::new() },
            step_correct: if keep_steps { labels } else { Vec::new() },
        });
    }
    let n = examples.len();
    Ok(Examples {
        examples,
        counts: json!({"samples": n, "correct": correct, "incorrect": n - correct,
            "correct_with_flawed_step": flawed, "steps": steps_n, "wrong_steps": wrong_steps, "unlabelled_steps": unlabelled,
            "finish_reasons": reasons}),
    })
}

/// One dataset row as an example, or why not.
fn row_example(text: &Text, r: &DatasetRow, method: RunMethod) -> Result<Example, String> {
    let e = |e: TrainError| e.to_string();
    let (prompt, mut completion) = match (&r.prompt, &r.completion, &r.problem, &r.solution) {
        (Some(p), Some(c), _, _) => {
            let prompt = text.encode(p).map_err(e)?;
            let all = text.encode(&format!("{p}{c}")).map_err(e)?;
            if prompt.is_empty() || all.len() <= prompt.len() || all[..prompt.len()] != prompt[..] {
                // the prompt's tokens must be a prefix: otherwise the split is ambiguous
                let tail = text.encode(c).map_err(e)?;
                (prompt, tail)
            } else {
                (prompt.clone(), all[prompt.len()..].to_vec())
            }
        }
        (_, _, Some(p), Some(s)) => (text.problem_ids(p).map_err(e)?, text.encode(s).map_err(e)?),
        _ => unreachable!("rows are checked when read"),
    };
    if prompt.is_empty() || completion.is_empty() {
        return Err("the prompt and the completion each need at least one token".into());
    }
    if let Some(&eos) = text.eos.first() {
        completion.push(eos);
    }
    let desirable = r.label.unwrap_or(true);
    let (mut steps, mut step_correct) = (Vec::new(), Vec::new());
    if method == RunMethod::StepKto {
        let (decoded, ends) = token_ends(&text.tok, &completion).map_err(e)?;
        let ranges = match &r.steps {
            Some(given) => {
                let mut at = 0;
                let mut out = Vec::new();
                for s in given {
                    let s = s.trim();
                    let Some(k) = decoded[at..].find(s) else {
                        return Err(format!(
                            "step {s:?} is not in the completion (after byte {at})"
                        ));
                    };
                    out.push(at + k..at + k + s.len());
                    at += k + s.len();
                }
                out
            }
            None => step_ranges(&decoded),
        };
        let labels = r
            .step_labels
            .clone()
            .unwrap_or_else(|| vec![desirable; ranges.len()]);
        for (sp, c) in token_spans(&ends, &ranges).into_iter().zip(labels) {
            if sp.1 > 0 {
                steps.push(sp);
                step_correct.push(c);
            }
        }
    }
    Ok(Example {
        prompt,
        completion,
        desirable,
        steps,
        step_correct,
    })
}

/// Examples from offline rows; a row that cannot be used is reported and skipped.
pub fn dataset_examples(
    text: &Text,
    rows: &[DatasetRow],
    method: RunMethod,
) -> Result<(Examples, Value), TrainError> {
    let (mut examples, mut skipped) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        match row_example(text, r, method) {
            Ok(x) => examples.push(x),
            Err(e) => {
                tracing::warn!("skipped dataset row {}: {e}", i + 1);
                skipped.push(json!({"row": i + 1, "id": r.id, "error": e}));
            }
        }
    }
    let desirable = examples.iter().filter(|x| x.desirable).count();
    let counts = json!({"samples": examples.len(), "correct": desirable,
        "incorrect": examples.len() - desirable,
        "steps": examples.iter().map(|x| x.steps.len()).sum::<usize>(),
        "wrong_steps": examples.iter().map(|x| x.step_correct.iter().filter(|c| !**c).count()).sum::<usize>()});
    let info = json!({"labels": counts, "skipped_rows": skipped, "seconds": {}});
    Ok((Examples { examples, counts }, info))
}
