//! Step-KTO rounds, and the one-pass SFT / offline KTO runs, with their files and resume.
//!
//! A round: sample K completions per training problem from the current policy ->
//! outcome label (`outcome::check` against the reference) -> step labels (the step judge) ->
//! examples -> reference log-probabilities, once, with no graph (the policy at the round's
//! start is its reference) -> optimiser steps -> `round-N/model` -> evaluation on held-out
//! problems. The saved model is the next round's policy and reference.
//!
//! Files under `output`: `run.json` (the method and config; a resume must match it),
//! `round-0/eval.json` (the starting model), per round `samples.jsonl`, `model/`,
//! `eval.json`, `eval-records.jsonl`, `round.json` (label counts, timings); `metrics.jsonl`
//! (one line per optimiser step, TRL's names); `summary.json`.
//!
//! Resume: everything a round needs is either saved or recomputed deterministically. The
//! samples are written problem-chunk by chunk (each prompt seeded by its problem's index, so
//! a chunk is the same whatever came before it); the training state (weights, AdamW moments,
//! step) is saved every `save_every` steps into `state-R-S/` and named by `state.json`,
//! renamed into place, so a SIGKILL at any moment leaves the last whole state; the data
//! order is a function of (seed, round, epoch). Resuming redoes only the steps after the
//! last state, truncating `metrics.jsonl` to it, and ends with the same weights.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::TrainError;
use super::control::{Control, Event};
use super::decoder::Decoder;
use super::eval::{EvalInputs, EvalReport, evaluate};
use super::examples::{Examples, dataset_examples, sample_lines, samples_examples};
use super::label::StepJudge;
use super::optim::{AdamW, learning_rate};
use super::run::{LineError, Problem, RunMethod, TrainConfig, read_dataset, read_problems};
use super::step::{Example, Method, RefLogps, optimizer_step, reference_logps};
use crate::model::chat::ChatTemplate;
use crate::model::{eos_ids, load_tokenizer};

/// What a finished run reports (also written to `summary.json`).
pub type Summary = Value;

/// splitmix64 of a few words: the run's seeds for sampling and data order.
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// A seeded Fisher-Yates permutation of `0..n`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = mix(&[s, i as u64]);
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

fn write_json(path: &Path, v: &Value) -> Result<(), TrainError> {
    write_atomic(
        path,
        serde_json::to_string_pretty(v).expect("JSON").as_bytes(),
    )
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// The tokenizer side of a run: the starting model's tokenizer, chat template and EOS ids.
pub struct Text {
    pub tok: Tokenizer,
    pub chat: Option<ChatTemplate>,
    pub eos: Vec<u32>,
    pub system: String,
}

impl Text {
    pub fn load(dir: &Path, system: &str) -> Result<Text, TrainError> {
        let tok = load_tokenizer(dir)?;
        Ok(Text {
            chat: ChatTemplate::load(dir, None)?,
            eos: eos_ids(dir, &tok),
            tok,
            system: system.to_string(),
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        self.tok
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TrainError::Input(format!("tokenize: {e}")))
    }

    /// A problem rendered with the chat template (system message, user turn, generation
    /// prompt), as token ids.
    pub fn problem_ids(&self, problem: &str) -> Result<Vec<u32>, TrainError> {
        let chat = self.chat.as_ref().ok_or_else(|| {
            TrainError::Input("the model has no chat template to render problems with".into())
        })?;
        let text = chat.render_with(&[("system", &self.system), ("user", problem)], true)?;
        let ids = self.encode(&text)?;
        if ids.is_empty() {
            return Err(TrainError::Input("a problem renders to no tokens".into()));
        }
        Ok(ids)
    }
}

/// A run in progress.
struct Run<'a> {
    cfg: &'a TrainConfig,
    method: RunMethod,
    out: PathBuf,
    device: Device,
    text: Text,
    judge: Option<StepJudge>,
    eval: Option<(Vec<Problem>, Vec<Vec<u32>>)>,
    input_errors: Vec<LineError>,
    control: &'a Control,
}

/// Run `stepkto train METHOD --config ...` (a fresh run, or `resume` one).
pub fn train(cfg: &TrainConfig, method: RunMethod, resume: bool) -> Result<Summary, TrainError> {
    train_with(cfg, method, resume, &Control::none(), None)
}

/// [`train`] watched and stoppable through `control`; `judge`, when given, labels steps
/// instead of one loaded from `cfg.judge` (the server passes its loaded PRM).
pub fn train_with(
    cfg: &TrainConfig,
    method: RunMethod,
    resume: bool,
    control: &Control,
    judge: Option<StepJudge>,
) -> Result<Summary, TrainError> {
    cfg.check_method(method)?;
    let out = cfg.output.clone();
    let stamp = json!({"method": method, "config": cfg});
    let run_file = out.join("run.json");
    match (resume, read_json(&run_file)) {
        (false, Some(_)) => {
            return Err(TrainError::Config(format!(
                "{} already holds a run: pass --resume to continue it, or choose another output",
                out.display()
            )));
        }
        (true, None) => {
            return Err(TrainError::Config(format!(
                "nothing to resume: {} has no run.json",
                out.display()
            )));
        }
        (true, Some(old)) if old != stamp => {
            return Err(TrainError::Config(
                "the config differs from the one the run started with; a resumed run must use the same config".into(),
            ));
        }
        _ => {}
    }
    std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
    write_json(&run_file, &stamp)?;
    let device =
        crate::devices::open(&cfg.device).map_err(|e| TrainError::Config(e.to_string()))?;
    let text = Text::load(&cfg.model, &cfg.system)?;
    let judge = if method == RunMethod::Sft && cfg.eval_problems.is_none() {
        None
    } else if let Some(j) = judge {
        Some(j)
    } else {
        Some(StepJudge::load(&cfg.judge, &device)?)
    };
    let mut run = Run {
        cfg,
        method,
        out,
        device,
        text,
        judge,
        eval: None,
        input_errors: Vec::new(),
        control,
    };
    if let Some(p) = &cfg.eval_problems {
        let (problems, bad) = read_problems(p)?;
        run.input_errors.extend(bad);
        let ids = problems
            .iter()
            .map(|p| run.text.problem_ids(&p.problem))
            .collect::<Result<_, _>>()?;
        run.eval = Some((problems, ids));
    }
    run.main()
}

impl Run<'_> {
    fn round_dir(&self, r: usize) -> PathBuf {
        self.out.join(format!("round-{r}"))
    }

    fn main(&mut self) -> Result<Summary, TrainError> {
        let offline = self.cfg.dataset.is_some();
        let rounds = if offline { 1 } else { self.cfg.rounds };
        let problems = match &self.cfg.problems {
            Some(p) => {
                let (ok, bad) = read_problems(p)?;
                self.input_errors.extend(bad);
                if ok.is_empty() {
                    return Err(TrainError::Input(format!(
                        "{}: no usable problem",
                        p.display()
                    )));
                }
                ok
            }
            None => Vec::new(),
        };
        for e in &self.input_errors {
            tracing::warn!(file = %e.file, line = e.line, "skipped: {}", e.error);
        }
        self.control.check()?;
        self.eval_round(0, &self.cfg.model.clone())?;
        let (eval, records) = self.eval_files(0);
        self.control.emit(&Event::Start {
            eval: eval.as_ref(),
            records: records.as_deref(),
        });
        for r in 1..=rounds {
            let dir = self.round_dir(r);
            if let Some(info) = read_json(&dir.join("round.json")) {
                // finished before the interruption; told again, since the watcher may not
                // have heard it before the process died
                self.emit_round(r, &info);
                continue;
            }
            self.control.check()?;
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            let policy = match r {
                1 => self.cfg.model.clone(),
                _ => self.round_dir(r - 1).join("model"),
            };
            let t0 = Instant::now();
            let (ex, mut info) = if offline {
                let (rows, bad) = read_dataset(self.cfg.dataset.as_ref().unwrap(), self.method)?;
                for e in &bad {
                    tracing::warn!(file = %e.file, line = e.line, "skipped: {}", e.error);
                }
                self.input_errors.extend(bad);
                dataset_examples(&self.text, &rows, self.method)?
            } else {
                self.sampled(r, &policy, &problems)?
            };
            if ex.examples.is_empty() {
                return Err(TrainError::Input(format!("round {r}: no training example")));
            }
            let prep = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let steps = self.train_round(r, &policy, &ex.examples)?;
            info["seconds"]["training"] = json!(t1.elapsed().as_secs_f64());
            info["seconds"]["preparing"] = json!(prep);
            info["optimizer_steps"] = json!(steps);
            let t2 = Instant::now();
            self.control.emit(&Event::Phase {
                round: r,
                phase: "eval",
            });
            self.eval_round(r, &dir.join("model"))?;
            info["seconds"]["eval"] = json!(t2.elapsed().as_secs_f64());
            info["round"] = json!(r);
            write_json(&dir.join("round.json"), &info)?;
            self.summary(rounds)?;
            self.emit_round(r, &info);
        }
        self.summary(rounds)
    }

    fn eval_files(&self, r: usize) -> (Option<Value>, Option<String>) {
        let rd = self.round_dir(r);
        (
            read_json(&rd.join("eval.json")),
            std::fs::read_to_string(rd.join("eval-records.jsonl")).ok(),
        )
    }

    fn emit_round(&self, r: usize, info: &Value) {
        let (eval, records) = self.eval_files(r);
        self.control.emit(&Event::Round {
            round: r,
            info,
            eval: eval.as_ref(),
            records: records.as_deref(),
        });
    }

    /// round-N/samples.jsonl (made, or continued from its partial file) -> examples.
    fn sampled(
        &self,
        r: usize,
        policy: &Path,
        problems: &[Problem],
    ) -> Result<(Examples, Value), TrainError> {
        let chosen: Vec<usize> = match self.cfg.problems_per_round {
            Some(n) if n < problems.len() => {
                let mut p = permutation(problems.len(), mix(&[self.cfg.seed, r as u64, 1]));
                p.truncate(n);
                p.sort_unstable();
                p
            }
            _ => (0..problems.len()).collect(),
        };
        let file = self.round_dir(r).join("samples.jsonl");
        let (lines, seconds) = if file.exists() {
            let lines = std::fs::read_to_string(&file).map_err(|e| TrainError::io(&file, e))?;
            let info = read_json(&self.round_dir(r).join("sampling.json")).unwrap_or_default();
            (lines, info)
        } else {
            self.control.emit(&Event::Phase {
                round: r,
                phase: "sampling",
            });
            let model = Decoder::load(policy, &self.device)?;
            let judge = self.judge.as_ref().expect("rounds have a step judge");
            let t = sample_lines(
                &model,
                &self.text,
                judge,
                self.cfg,
                r,
                problems,
                &chosen,
                &self.round_dir(r),
                self.control,
            )?;
            write_json(&self.round_dir(r).join("sampling.json"), &t)?;
            let lines = std::fs::read_to_string(&file).map_err(|e| TrainError::io(&file, e))?;
            (lines, t)
        };
        let ex = samples_examples(&self.text, &lines, self.method)?;
        let mut info = json!({"labels": ex.counts, "seconds": seconds});
        info["problems"] = json!(chosen.len());
        Ok((ex, info))
    }

    /// Evaluate the model in `dir` as round `r` (skipped when already done or when there
    /// are no held-out problems).
    fn eval_round(&self, r: usize, dir: &Path) -> Result<(), TrainError> {
        let Some((problems, prompts)) = &self.eval else {
            return Ok(());
        };
        let rd = self.round_dir(r);
        if read_json(&rd.join("eval.json")).is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&rd).map_err(|e| TrainError::io(&rd, e))?;
        let model = Decoder::load(dir, &self.device)?;
        let b = bar(problems.len(), &format!("eval M{r}"));
        let x = EvalInputs {
            tok: &self.text.tok,
            eos: &self.text.eos,
            prompts,
            problems,
            judge: self.judge.as_ref(),
            seed: mix(&[self.cfg.seed, 0xE7A1]),
            max_batch: self.cfg.sample.max_batch,
            max_memory_mb: self.cfg.sample.max_memory_mb,
        };
        let (report, records) = evaluate(&model, &x, &self.cfg.eval, |n| b.inc(n as u64))?;
        b.finish_and_clear();
        let mut text = String::new();
        for rec in records {
            text.push_str(&serde_json::to_string(&rec).expect("JSON"));
            text.push('\n');
        }
        write_atomic(&rd.join("eval-records.jsonl"), text.as_bytes())?;
        tracing::info!(round = r, pass_at_1 = report.pass_at_1, maj_at_k = report.maj_at_k,
            flawed_step_rate = ?report.flawed_step_rate, "evaluated");
        write_json(
            &rd.join("eval.json"),
            &serde_json::to_value(&report).expect("JSON"),
        )
    }

    fn summary(&self, rounds: usize) -> Result<Summary, TrainError> {
        let mut per = Vec::new();
        for r in 0..=rounds {
            let rd = self.round_dir(r);
            let eval: Option<EvalReport> =
                read_json(&rd.join("eval.json")).and_then(|v| serde_json::from_value(v).ok());
            let info = read_json(&rd.join("round.json"));
            if eval.is_none() && info.is_none() {
                continue;
            }
            per.push(json!({"round": r, "model": if r == 0 { self.cfg.model.clone() } else { rd.join("model") },
                "eval": eval, "round_info": info}));
        }
        let finished = per.iter().filter(|p| p["round_info"].is_object()).count();
        let last = if finished == 0 {
            self.cfg.model.clone()
        } else {
            self.round_dir(finished).join("model")
        };
        let s = json!({"method": self.method, "rounds": per, "final_model": last,
            "input_errors": self.input_errors});
        write_json(&self.out.join("summary.json"), &s)?;
        Ok(s)
    }

    fn loss(&self) -> Method {
        match self.method {
            RunMethod::Sft => Method::Sft,
            RunMethod::Kto => Method::Kto(self.cfg.kto.clone()),
            RunMethod::StepKto => Method::StepKto(self.cfg.kto.clone(), self.cfg.step.clone()),
        }
    }

    /// Train one round from `policy` on `examples`; writes round-N/model. Returns the
    /// number of optimiser steps.
    fn train_round(
        &self,
        r: usize,
        policy: &Path,
        examples: &[Example],
    ) -> Result<usize, TrainError> {
        let cfg = self.cfg;
        let method = self.loss();
        // micro-batches are fixed for the round (TRL's KL pairs live inside them, and the
        // reference log-probabilities are taken once over them); epochs reorder them
        let order = permutation(examples.len(), mix(&[cfg.seed, r as u64, 2]));
        let ordered: Vec<Example> = order.iter().map(|&i| examples[i].clone()).collect();
        let mbs: Vec<&[Example]> = ordered.chunks(cfg.micro_batch).collect();
        let per_epoch = mbs.len().div_ceil(cfg.optim.grad_accumulation);
        let total = per_epoch * cfg.epochs;
        let refs: Vec<RefLogps> = if matches!(method, Method::Sft) {
            vec![RefLogps::default(); ordered.len()]
        } else {
            self.control.emit(&Event::Phase {
                round: r,
                phase: "reference",
            });
            let reference = Decoder::load(policy, &self.device)?;
            let b = bar(mbs.len(), &format!("reference {r}"));
            let mut out = Vec::with_capacity(ordered.len());
            for mb in &mbs {
                self.control.check()?;
                out.extend(reference_logps(&reference, mb, cfg.micro_batch)?);
                b.inc(1);
            }
            b.finish_and_clear();
            out
        };
        let ref_mbs: Vec<&[RefLogps]> = refs.chunks(cfg.micro_batch).collect();
        let states = State { out: &self.out };
        let (model, mut opt, start) = match states.latest(r) {
            Some((dir, step)) => {
                // a state that cannot be read is named, so a job fails with its reason
                let unreadable = |e: TrainError| {
                    TrainError::Input(format!(
                        "the saved training state {} cannot be read: {e}",
                        dir.display()
                    ))
                };
                let model = Decoder::load(&dir.join("model"), &self.device).map_err(unreadable)?;
                let opt = states
                    .optimizer(&dir, &self.device, cfg, step)
                    .map_err(unreadable)?;
                tracing::info!(round = r, step, "resuming from {}", dir.display());
                (model, opt, step)
            }
            None => (
                Decoder::load(policy, &self.device)?,
                AdamW::new(cfg.optim.clone()),
                0,
            ),
        };
        let metrics_path = self.out.join("metrics.jsonl");
        truncate_metrics(&metrics_path, r, start)?;
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::io(&metrics_path, e))?;
        let b = bar(total, &format!("train {r}"));
        b.set_position(start as u64);
        self.control.emit(&Event::Phase {
            round: r,
            phase: "training",
        });
        for step in start..total {
            // between steps: the last saved state stays the resume point
            self.control.check()?;
            let epoch = step / per_epoch;
            let within = permutation(mbs.len(), mix(&[cfg.seed, r as u64, 3, epoch as u64]));
            let j = step % per_epoch;
            let ga = cfg.optim.grad_accumulation;
            let picked = &within[j * ga..((j + 1) * ga).min(mbs.len())];
            let batches: Vec<(Vec<&Example>, Vec<&RefLogps>)> = picked
                .iter()
                .map(|&m| (mbs[m].iter().collect(), ref_mbs[m].iter().collect()))
                .collect();
            let lr = learning_rate(&cfg.optim, step, total);
            let m = optimizer_step(&model, &mut opt, &method, &batches, lr).map_err(|e| match e {
                TrainError::NonFinite(why) => {
                    let state = match states.latest(r) {
                        Some((d, s)) => format!(
                            "; the last finite training state is {} (step {s})",
                            d.join("model").display()
                        ),
                        None => String::new(),
                    };
                    TrainError::Stopped(format!(
                        "round {r}, optimiser step {}: {why}. The round stops and saves no model; the last good checkpoint is {}{state}",
                        step + 1,
                        policy.display()
                    ))
                }
                other => other,
            })?;
            let mut line = json!({"round": r, "step": step + 1, "epoch": epoch});
            for (k, v) in &m {
                line[k] = json!(v);
            }
            writeln!(metrics, "{line}").map_err(|e| TrainError::io(&metrics_path, e))?;
            metrics
                .flush()
                .map_err(|e| TrainError::io(&metrics_path, e))?;
            let tokens = batches
                .iter()
                .flat_map(|(exs, _)| exs.iter())
                .map(|e| e.prompt.len() + e.completion.len())
                .sum();
            self.control.emit(&Event::Step {
                round: r,
                step: step + 1,
                total,
                tokens,
                metrics: &m,
            });
            b.set_message(format!(
                "loss {:.4}",
                m.get("loss").copied().unwrap_or(f64::NAN)
            ));
            b.inc(1);
            if (step + 1) % cfg.save_every == 0 && step + 1 < total {
                states.save(r, step + 1, &model, &opt)?;
            }
        }
        b.finish_and_clear();
        model.save(&self.round_dir(r).join("model"))?;
        states.clear();
        Ok(total)
    }
}

/// Keep the metric lines of earlier rounds and of this round's first `steps` steps.
fn truncate_metrics(path: &Path, round: usize, steps: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    // lines are kept as written: a parse and print would not give every float back
    let keep: String = text
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                return false; // the half-written last line of a killed run
            };
            let (r, s) = (
                v["round"].as_u64().unwrap_or(0),
                v["step"].as_u64().unwrap_or(0),
            );
            (r as usize) < round || (r as usize == round && s as usize <= steps)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, keep.as_bytes())
}

/// The in-round training states: `state-R-S/` (a model directory and the optimiser
/// moments), the latest named by `state.json`.
struct State<'a> {
    out: &'a Path,
}

impl State<'_> {
    fn latest(&self, round: usize) -> Option<(PathBuf, usize)> {
        let v = read_json(&self.out.join("state.json"))?;
        let (r, s) = (v["round"].as_u64()? as usize, v["step"].as_u64()? as usize);
        let dir = self.out.join(format!("state-{r}-{s}"));
        (r == round && dir.join("optimizer.safetensors").is_file()).then_some((dir, s))
    }

    fn save(
        &self,
        round: usize,
        step: usize,
        model: &Decoder,
        opt: &AdamW,
    ) -> Result<(), TrainError> {
        let dir = self.out.join(format!("state-{round}-{step}"));
        model.save(&dir.join("model"))?;
        let (tensors, n) = opt.state();
        assert_eq!(n, step, "one optimiser step per training step");
        let tensors: std::collections::HashMap<String, candle_core::Tensor> =
            tensors.into_iter().collect();
        let tmp = dir.join("optimizer.partial");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, dir.join("optimizer.safetensors"))
            .map_err(|e| TrainError::io(&dir, e))?;
        write_json(
            &self.out.join("state.json"),
            &json!({"round": round, "step": step}),
        )?;
        self.remove_except(Some(&dir));
        Ok(())
    }

    fn optimizer(
        &self,
        dir: &Path,
        device: &Device,
        cfg: &TrainConfig,
        step: usize,
    ) -> Result<AdamW, TrainError> {
        let t: BTreeMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(dir.join("optimizer.safetensors"), device)?
                .into_iter()
                .collect();
        Ok(AdamW::restore(cfg.optim.clone(), t, step))
    }

    fn remove_except(&self, keep: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(self.out) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("state-") && Some(p.as_path()) != keep {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(self.out.join("state.json"));
        self.remove_except(None);
    }
}
