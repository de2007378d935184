//! Evaluating a policy on held-out problems: Pass@1 of the greedy solution, Maj@K (the most
//! frequent final answer among K samples, answers grouped by mathematical equivalence), the
//! unbiased pass@k of Chen et al. 2021 (`1 - C(n-c, k) / C(n, k)`), and the flawed-step rate
//! (among greedy solutions with the right answer, the share with a step the judge labels
//! wrong), which is the Step-KTO paper's "right answer, flawed step" figure.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::TrainError;
use super::decoder::Decoder;
use super::label::{StepJudge, completion_steps, outcome_label};
use super::run::{EvalSection, Problem};
use super::sample::{SampleConfig, generate_keyed};
use crate::outcome::{self, Budget, Mode, Options};

/// What a model scores on a set of problems.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalReport {
    pub problems: usize,
    /// Greedy solutions with the right final answer.
    pub pass_at_1: f64,
    /// The number of samples per problem behind `maj_at_k` and `pass_at_k`.
    pub k: usize,
    pub maj_at_k: f64,
    /// Unbiased pass@k from the K samples, for k = 1, 2, 4, ... up to K.
    pub pass_at_k: BTreeMap<String, f64>,
    /// Greedy solutions with the right answer and a step labelled wrong, over those with
    /// the right answer (null without a step judge or without a right answer).
    pub flawed_step_rate: Option<f64>,
    pub greedy_correct: usize,
    pub greedy_flawed: usize,
}

/// `1 - C(n-c, k) / C(n, k)`, computed as a product so that it never overflows.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    let mut miss = 1.0;
    for i in (n - c + 1)..=n {
        miss *= 1.0 - k as f64 / i as f64;
    }
    1.0 - miss
}

/// Index of the majority answer's group among `answers` (None when no sample has an
/// answer): answers are grouped by equivalence with each group's first member; the largest
/// group wins, the earliest on a tie.
pub fn majority(answers: &[Option<String>], budget: &Budget) -> Option<usize> {
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (representative, count)
    for (i, a) in answers.iter().enumerate() {
        let Some(a) = a else { continue };
        let found = groups.iter_mut().find(|(r, _)| {
            let rep = answers[*r]
                .as_deref()
                .expect("representatives have answers");
            rep == a || outcome::check(rep, a, Mode::Answer, &Options::default(), budget).equivalent
        });
        match found {
            Some(g) => g.1 += 1,
            None => groups.push((i, 1)),
        }
    }
    let best = groups.iter().map(|g| g.1).max()?;
    groups.iter().find(|g| g.1 == best).map(|g| g.0)
}

/// Everything evaluation needs besides the model.
pub struct EvalInputs<'a> {
    pub tok: &'a Tokenizer,
    pub eos: &'a [u32],
    /// The problems' prompt ids, in order.
    pub prompts: &'a [Vec<u32>],
    pub problems: &'a [Problem],
    pub judge: Option<&'a StepJudge>,
    pub seed: u64,
    pub max_batch: usize,
    pub max_memory_mb: usize,
}

/// Evaluate `model`; returns the report and one record per problem (greedy solution, its
/// verdicts, the samples' answers).
pub fn evaluate(
    model: &Decoder,
    x: &EvalInputs,
    cfg: &EvalSection,
    mut progress: impl FnMut(usize),
) -> Result<(EvalReport, Vec<Value>), TrainError> {
    let budget = Budget::default();
    let keys: Vec<u64> = (0..x.prompts.len() as u64).collect();
    let base = SampleConfig {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: cfg.max_new_tokens,
        seed: x.seed,
        stop: Vec::new(),
        max_batch: x.max_batch,
        max_memory_mb: x.max_memory_mb,
    };
    let sampled = SampleConfig {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        ..base.clone()
    };
    let (mut correct, mut flawed, mut maj) = (0usize, 0usize, 0usize);
    let mut pass: BTreeMap<usize, f64> = BTreeMap::new();
    let ks: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2))
        .take_while(|&k| k <= cfg.samples)
        .collect();
    let mut records = Vec::with_capacity(x.problems.len());
    let part = (x.max_batch / cfg.samples.max(1)).max(1);
    for (c, chunk) in x.prompts.chunks(part).enumerate() {
        let ks_chunk = &keys[c * part..c * part + chunk.len()];
        let greedy = generate_keyed(model, chunk, ks_chunk, 1, x.eos, Some(x.tok), &base)?;
        let draws = if cfg.samples > 0 {
            generate_keyed(
                model,
                chunk,
                ks_chunk,
                cfg.samples,
                x.eos,
                Some(x.tok),
                &sampled,
            )?
        } else {
            Vec::new()
        };
        let items: Vec<(usize, Vec<String>)> = greedy
            .iter()
            .map(|g| Ok((c * part + g.prompt, completion_steps(x.tok, &g.tokens)?.0)))
            .collect::<Result<_, TrainError>>()?;
        let labels = match x.judge {
            Some(j) => Some(
                j.label(
                    &items
                        .iter()
                        .map(|(i, s)| (x.problems[*i].problem.as_str(), s.clone()))
                        .collect::<Vec<_>>(),
                )?,
            ),
            None => None,
        };
        for (j, g) in greedy.iter().enumerate() {
            let p = &x.problems[c * part + g.prompt];
            let text = g.text.clone().unwrap_or_default();
            let (ok, extracted) = outcome_label(&p.answer, &text);
            let steps = labels.as_ref().map(|l| &l[j]);
            let bad = steps.is_some_and(|s| s.iter().any(|s| s.correct == Some(false)));
            correct += ok as usize;
            flawed += (ok && bad) as usize;
            let mine: Vec<_> = draws.iter().filter(|d| d.prompt == g.prompt).collect();
            let answers: Vec<(bool, Option<String>)> = mine
                .iter()
                .map(|d| outcome_label(&p.answer, d.text.as_deref().unwrap_or("")))
                .collect();
            let right = answers.iter().filter(|a| a.0).count();
            let extracted_all: Vec<Option<String>> = answers.iter().map(|a| a.1.clone()).collect();
            let maj_ok = majority(&extracted_all, &budget).is_some_and(|m| answers[m].0);
            maj += maj_ok as usize;
            for &k in &ks {
                *pass.entry(k).or_default() += pass_at_k(mine.len(), right, k);
            }
            // The record is an eval sample as `POST /v1/evals` takes it (see `jobs::records`):
            // each step's text beside its verdict, so one solution can be shown step by step.
            let step_rows: Vec<Value> = items[j]
                .1
                .iter()
                .enumerate()
                .map(|(h, t)| {
                    let mut v = steps
                        .and_then(|s| s.get(h))
                        .map(|l| serde_json::to_value(l).expect("JSON"))
                        .unwrap_or_else(|| json!({}));
                    v["text"] = json!(t);
                    v
                })
                .collect();
            records.push(json!({
                "id": p.id, "problem": p.problem, "answer": p.answer, "greedy": text,
                "final_answer_correct": ok, "extracted": extracted, "steps": step_rows,
                "flawed": ok && bad,
                "samples_correct": right, "majority_correct": maj_ok,
                "sample_answers": extracted_all,
            }));
        }
        progress(chunk.len());
    }
    let n = x.problems.len().max(1) as f64;
    let report = EvalReport {
        problems: x.problems.len(),
        pass_at_1: correct as f64 / n,
        k: cfg.samples,
        maj_at_k: if cfg.samples > 0 { maj as f64 / n } else { 0.0 },
        pass_at_k: pass
            .into_iter()
            .map(|(k, v)| (k.to_string(), v / n))
            .collect(),
        flawed_step_rate: (x.judge.is_some() && correct > 0)
            .then(|| flawed as f64 / correct as f64),
        greedy_correct: correct,
        greedy_flawed: flawed,
    };
    Ok((report, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(8, 0, 1), 0.0);
        assert_eq!(pass_at_k(8, 8, 4), 1.0);
        assert!((pass_at_k(8, 2, 1) - 0.25).abs() < 1e-12);
        // 1 - C(6,4)/C(8,4) = 1 - 15/70
        assert!((pass_at_k(8, 2, 4) - (1.0 - 15.0 / 70.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(8, 5, 4), 1.0);
    }

    #[test]
    fn majority_groups_equivalent_answers() {
        let b = Budget::default();
        let a = |v: &[Option<&str>]| v.iter().map(|s| s.map(String::from)).collect::<Vec<_>>();
        // 1/2 and 0.5 and \frac{1}{2} are one answer; 3 appears twice
        let got = majority(
            &a(&[
                Some("3"),
                Some("1/2"),
                None,
                Some("0.5"),
                Some("3"),
                Some("\\frac{1}{2}"),
            ]),
            &b,
        );
        assert_eq!(got, Some(1));
        assert_eq!(
            majority(&a(&[Some("3"), Some("4")]), &b),
            Some(0),
            "tie: earliest"
        );
        assert_eq!(majority(&a(&[None, None]), &b), None);
    }
}
