//! `stepkto generate`, `stepkto logprobs`, `stepkto train` and `stepkto eval generate`: the
//! trainer's sampler, log-probabilities, runs and evaluation over JSONL files, one output
//! line per input line (or per sample), in order; a bad line gets an error object (or a
//! warning naming its line) and the run goes on.

use candle_core::{Device, Tensor};
use serde::Deserialize;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::{CliError, output, read_lines, write_line};
use crate::config::{EvalGenerateArgs, GenerateArgs, LogprobsArgs, TrainCommand};
use crate::model::chat::ChatTemplate;
use crate::model::{eos_ids, load_tokenizer};
use crate::train::decoder::Decoder;
use crate::train::sample::{SampleConfig, generate_keyed as sample};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    problem: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    /// MATH-500's other fields are allowed and ignored.
    #[serde(default, rename = "answer")]
    _answer: Option<Value>,
    #[serde(default, rename = "solution")]
    _solution: Option<Value>,
    #[serde(default, rename = "subject")]
    _subject: Option<Value>,
    #[serde(default, rename = "level")]
    _level: Option<Value>,
    #[serde(default, rename = "unique_id")]
    _unique_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogprobsLine {
    #[serde(default)]
    id: Option<Value>,
    prompt: String,
    completion: String,
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, String> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| format!("tokenize: {e}"))
}

/// The token ids of one generate line: a problem rendered with the chat template, or a raw
/// prompt.
fn prompt_ids(
    line: &GenerateLine,
    tok: &Tokenizer,
    chat: Option<&ChatTemplate>,
    system: &str,
) -> Result<Vec<u32>, String> {
    let text = match (&line.problem, &line.prompt) {
        (Some(p), None) => {
            let chat = chat.ok_or(
                "the model has no chat template: give a raw \"prompt\" instead of a \"problem\"",
            )?;
            chat.render_with(&[("system", system), ("user", p)], true)
                .map_err(|e| e.to_string())?
        }
        (None, Some(p)) => p.clone(),
        _ => return Err("a line needs exactly one of \"problem\" and \"prompt\"".into()),
    };
    let ids = encode(tok, &text)?;
    if ids.is_empty() {
        return Err("the prompt has no tokens".into());
    }
    Ok(ids)
}

/// A generate line's id and its prompt's token ids, or why it has none.
type ParsedLine = (Option<Value>, Result<Vec<u32>, String>);

/// `stepkto generate`.
pub fn generate(args: &GenerateArgs) -> Result<(), CliError> {
    let model = Decoder::load(&args.model, &Device::Cpu)?;
    let tok = load_tokenizer(&args.model).map_err(crate::train::TrainError::from)?;
    let chat = ChatTemplate::load(&args.model, None).map_err(crate::train::TrainError::from)?;
    let eos = eos_ids(&args.model, &tok);
    let cfg = SampleConfig {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        stop: args.stop.clone(),
        max_batch: args.max_batch,
        max_memory_mb: args.max_memory_mb,
    };
    let context = model.config.max_position_embeddings;
    let lines: Vec<ParsedLine> = read_lines(&args.input)?
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<GenerateLine>(l) {
            Ok(g) => {
                let ids = prompt_ids(&g, &tok, chat.as_ref(), &args.system).and_then(|ids| {
                    if ids.len() < context {
                        Ok(ids)
                    } else {
                        Err(format!(
                            "the prompt has {} tokens, the model's context is {context}",
                            ids.len()
                        ))
                    }
                });
                (g.id.clone(), ids)
            }
            Err(e) => (None, Err(format!("bad line: {e}"))),
        })
        .collect();
    let mut out = output(args.output.as_deref())?;
    // sampled and written a part at a time, each prompt seeded by its line
    let part = (args.max_batch / args.samples.max(1)).max(1);
    for (p, chunk) in lines.chunks(part).enumerate() {
        let (mut prompts, mut keys) = (Vec::new(), Vec::new());
        for (i, (_, r)) in chunk.iter().enumerate() {
            if let Ok(ids) = r {
                prompts.push(ids.clone());
                keys.push((p * part + i) as u64);
            }
        }
        let mut samples = sample(
            &model,
            &prompts,
            &keys,
            args.samples,
            &eos,
            Some(&tok),
            &cfg,
        )?
        .into_iter();
        for (id, r) in chunk {
            if let Err(e) = r {
                write_line(&mut *out, &json!({"id": id, "error": e}))?;
                continue;
            }
            for _ in 0..args.samples {
                let s = samples.next().expect("a sample per prompt and index");
                write_line(
                    &mut *out,
                    &json!({"id": id, "sample": s.sample, "completion": s.text,
                        "tokens": s.tokens.len(), "finish_reason": s.finish_reason}),
                )?;
            }
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

/// The summed log-probability of `completion`'s tokens: the tokens of prompt + completion
/// after the first `len(tokenize(prompt))`.
fn completion_logprob(
    model: &Decoder,
    tok: &Tokenizer,
    line: &LogprobsLine,
) -> Result<(f64, usize), String> {
    let prompt = encode(tok, &line.prompt)?;
    let all = encode(tok, &format!("{}{}", line.prompt, line.completion))?;
    let n = all.len().saturating_sub(prompt.len());
    if n == 0 || prompt.is_empty() {
        return Err("the prompt and the completion each need at least one token".into());
    }
    let len = all.len();
    let ids = Tensor::from_vec(all, (1, len), model.device()).map_err(|e| e.to_string())?;
    let lp = model
        .token_logprobs_detached(&ids)
        .map_err(|e| e.to_string())?
        .narrow(1, len - 1 - n, n)
        .and_then(|t| t.sum_all()?.to_scalar::<f32>())
        .map_err(|e| e.to_string())?;
    Ok((lp as f64, n))
}

/// `stepkto logprobs`.
pub fn logprobs(args: &LogprobsArgs) -> Result<(), CliError> {
    let model = Decoder::load(&args.model, &Device::Cpu)?;
    let tok = load_tokenizer(&args.model).map_err(crate::train::TrainError::from)?;
    let mut out = output(args.output.as_deref())?;
    for l in read_lines(&args.input)?
        .iter()
        .filter(|l| !l.trim().is_empty())
    {
        let v = match serde_json::from_str::<LogprobsLine>(l) {
            Err(e) => json!({"id": null, "error": format!("bad line: {e}")}),
            Ok(line) => match completion_logprob(&model, &tok, &line) {
                Ok((lp, n)) => json!({"id": line.id, "logprob": lp, "tokens": n}),
                Err(e) => json!({"id": line.id, "error": e}),
            },
        };
        write_line(&mut *out, &v)?;
    }
    out.flush()?;
    Ok(())
}

/// `stepkto train sft|kto|step-kto --config F [--resume]`: prints the summary.
pub fn train(cmd: &TrainCommand) -> Result<(), CliError> {
    use crate::train::run::{RunMethod, TrainConfig};
    let (method, args) = match cmd {
        TrainCommand::Sft(a) => (RunMethod::Sft, a),
        TrainCommand::Kto(a) => (RunMethod::Kto, a),
        TrainCommand::StepKto(a) => (RunMethod::StepKto, a),
    };
    let cfg = TrainConfig::read(&args.config)?;
    let summary = crate::train::rounds::train(&cfg, method, args.resume)?;
    let mut out = output(None)?;
    write_line(&mut *out, &summary)?;
    out.flush()?;
    Ok(())
}

/// `stepkto eval generate`: prints the report; per-problem records go to `--output`.
pub fn eval_generate(a: &EvalGenerateArgs) -> Result<(), CliError> {
    use crate::train::eval::{EvalInputs, evaluate};
    use crate::train::label::{JudgeConfig, JudgeKind, StepJudge};
    use crate::train::rounds::{Text, bar};
    use crate::train::run::{EvalSection, read_problems};
    let model = Decoder::load(&a.model, &Device::Cpu)?;
    let text = Text::load(&a.model, &a.system)?;
    let judge = match a.judge.as_deref() {
        None => None,
        Some(j) => {
            let (kind, prm) = match j {
                "symbolic" => (JudgeKind::Symbolic, None),
                _ => match j.strip_prefix("prm+symbolic:") {
                    Some(d) => (JudgeKind::PrmSymbolic, Some(d.into())),
                    None => (JudgeKind::Prm, Some(j.into())),
                },
            };
            let cfg = JudgeConfig {
                kind,
                prm,
                threshold: a.threshold,
                ..JudgeConfig::default()
            };
            Some(StepJudge::load(&cfg, &Device::Cpu)?)
        }
    };
    let (problems, bad) = read_problems(&a.input)?;
    for e in &bad {
        eprintln!("{}:{}: skipped: {}", e.file, e.line, e.error);
    }
    let (mut kept, mut prompts) = (Vec::new(), Vec::new());
    for p in problems {
        match text.problem_ids(&p.problem) {
            Ok(ids) if ids.len() < model.config.max_position_embeddings => {
                prompts.push(ids);
                kept.push(p);
            }
            Ok(ids) => eprintln!("problem {}: skipped: {} prompt tokens", p.id, ids.len()),
            Err(e) => eprintln!("problem {}: skipped: {e}", p.id),
        }
    }
    let x = EvalInputs {
        tok: &text.tok,
        eos: &text.eos,
        prompts: &prompts,
        problems: &kept,
        judge: judge.as_ref(),
        seed: a.seed,
        max_batch: a.max_batch,
        max_memory_mb: a.max_memory_mb,
    };
    let cfg = EvalSection {
        samples: a.samples,
        temperature: a.temperature,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
    };
    let b = bar(kept.len(), "eval");
    let (report, records) = evaluate(&model, &x, &cfg, |n| b.inc(n as u64))?;
    b.finish_and_clear();
    if let Some(path) = &a.output {
        let mut f = output(Some(path))?;
        for r in &records {
            write_line(&mut *f, r)?;
        }
        f.flush()?;
    }
    let mut v = serde_json::to_value(&report).expect("JSON");
    v["skipped_lines"] = json!(bad.len());
    let mut out = output(None)?;
    write_line(&mut *out, &v)?;
    out.flush()?;
    let (metrics, counts) = crate::jobs::records::split_report(&v);
    let model = a
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    super::record::record(
        &a.record,
        &a.input,
        super::record::Measured {
            kind: "generate",
            default_model: model,
            metrics,
            counts,
            samples: records,
        },
    )
}
