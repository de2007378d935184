//! One optimiser step of SFT, KTO or Step-KTO over tokenised examples: pad a micro-batch,
//! take the policy's per-token log-probabilities (with gradient) once, sum them over each
//! completion and each step span, build the mismatched KL pairs (completions rotated by one
//! inside the micro-batch, as TRL does), and hand them to `loss`. Reference log-probabilities
//! come from [`reference_logps`], computed once per round with no graph.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::TrainError;
use super::decoder::Decoder;
use super::loss::{
    CompletionSteps, KtoConfig, KtoInputs, StepConfig, kto_loss, sft_loss, span_sums, step_kto_loss,
};
use super::optim::{Accumulated, AdamW};

/// One training example: token ids, its outcome label and, for Step-KTO, its steps as
/// token ranges of the completion (`(start, len)`, in completion tokens) with their labels.
#[derive(Debug, Clone)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
    pub desirable: bool,
    pub steps: Vec<(usize, usize)>,
    pub step_correct: Vec<bool>,
}

/// What the reference model gives an example: its completion's log-probability, each
/// step's, and the log-probability of the mismatched completion paired with it.
#[derive(Debug, Clone, Default)]
pub struct RefLogps {
    pub completion: f32,
    pub steps: Vec<f32>,
    pub kl: f32,
}

/// Which loss a step minimises.
#[derive(Debug, Clone)]
pub enum Method {
    Sft,
    Kto(KtoConfig),
    StepKto(KtoConfig, StepConfig),
}

/// Per-step metrics under TRL's names (and the step term's).
pub type Metrics = BTreeMap<String, f64>;

/// Right-padded `(prompt + completion)` rows and, per row, the completion span and the step
/// spans in `token_logprobs` coordinates (position j scores token j + 1).
struct Packed {
    ids: Tensor,
    completion: Vec<(usize, usize, usize)>,
    steps: Vec<(usize, usize, usize)>,
}

/// (prompt, completion, step spans) of one row.
type Row<'a> = (&'a [u32], &'a [u32], &'a [(usize, usize)]);

fn pack(model: &Decoder, rows: &[Row]) -> Result<Packed, TrainError> {
    let width = rows
        .iter()
        .map(|(p, c, _)| p.len() + c.len())
        .max()
        .unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * width);
    let (mut completion, mut steps) = (Vec::new(), Vec::new());
    for (i, (p, c, s)) in rows.iter().enumerate() {
        if p.is_empty() || c.is_empty() {
            return Err(TrainError::Input(format!(
                "example {i}: an empty prompt or completion"
            )));
        }
        flat.extend_from_slice(p);
        flat.extend_from_slice(c);
        flat.extend(std::iter::repeat_n(0, width - p.len() - c.len()));
        // completion token k sits at p.len() + k and is scored at position p.len() + k - 1
        completion.push((i, p.len() - 1, c.len()));
        for &(start, len) in s.iter() {
            if start + len > c.len() {
                return Err(TrainError::Input(format!(
                    "example {i}: a step past its completion"
                )));
            }
            steps.push((i, p.len() - 1 + start, len));
        }
    }
    let ids = Tensor::from_vec(flat, (rows.len(), width), model.device())?;
    Ok(Packed {
        ids,
        completion,
        steps,
    })
}

/// The examples' own rows.
fn rows<'a>(batch: &[&'a Example]) -> Vec<Row<'a>> {
    batch
        .iter()
        .map(|e| {
            (
                e.prompt.as_slice(),
                e.completion.as_slice(),
                e.steps.as_slice(),
            )
        })
        .collect()
}

/// The mismatched pairs of a micro-batch: example i's prompt with example i-1's completion
/// (example 0 with the last's), TRL's rotation.
fn kl_rows<'a>(batch: &[&'a Example]) -> Vec<Row<'a>> {
    let n = batch.len();
    (0..n)
        .map(|i| {
            let other = batch[(i + n - 1) % n];
            (
                batch[i].prompt.as_slice(),
                other.completion.as_slice(),
                &[][..],
            )
        })
        .collect()
}

fn summed(model: &Decoder, rows: &[Row], grad: bool) -> Result<(Tensor, Tensor), TrainError> {
    let p = pack(model, rows)?;
    let lp = if grad {
        model.token_logprobs(&p.ids)?
    } else {
        model.token_logprobs_detached(&p.ids)?
    };
    let completion = span_sums(&lp, &p.completion)?;
    let steps = if p.steps.is_empty() {
        Tensor::zeros(0, candle_core::DType::F32, model.device())?
    } else {
        span_sums(&lp, &p.steps)?
    };
    Ok((completion, steps))
}

/// The reference model's log-probabilities of every example, micro-batch by micro-batch
/// (the KL pairs depend on the micro-batch, so the same `micro_batch` must be used in
/// training; examples are taken in the order given).
pub fn reference_logps(
    reference: &Decoder,
    examples: &[Example],
    micro_batch: usize,
) -> Result<Vec<RefLogps>, TrainError> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(micro_batch.max(1)) {
        let batch: Vec<&Example> = chunk.iter().collect();
        let rows = rows(&batch);
        let (c, s) = summed(reference, &rows, false)?;
        let (kl, _) = summed(reference, &kl_rows(&batch), false)?;
        let (c, s, kl): (Vec<f32>, Vec<f32>, Vec<f32>) =
            (c.to_vec1()?, s.to_vec1()?, kl.to_vec1()?);
        let mut at = 0;
        for (i, e) in batch.iter().enumerate() {
            out.push(RefLogps {
                completion: c[i],
                steps: s[at..at + e.steps.len()].to_vec(),
                kl: kl[i],
            });
            at += e.steps.len();
        }
    }
    Ok(out)
}

/// Loss and gradients of one micro-batch, added to `acc`; returns its metrics.
pub fn micro_batch(
    model: &Decoder,
    method: &Method,
    batch: &[&Example],
    refs: &[&RefLogps],
    acc: &mut Accumulated,
) -> Result<Metrics, TrainError> {
    let rows = rows(batch);
    let mut m = Metrics::new();
    let loss = match method {
        Method::Sft => {
            let p = pack(model, &rows)?;
            sft_loss(&model.token_logprobs(&p.ids)?, &p.completion)?
        }
        Method::Kto(kto) | Method::StepKto(kto, _) => {
            let (policy, policy_steps) = summed(model, &rows, true)?;
            // the policy's KL log-probabilities carry no gradient (TRL: torch.no_grad)
            let policy_kl: Vec<f32> = summed(model, &kl_rows(batch), false)?.0.to_vec1()?;
            let reference: Vec<f32> = refs.iter().map(|r| r.completion).collect();
            let reference_kl: Vec<f32> = refs.iter().map(|r| r.kl).collect();
            let desirable: Vec<bool> = batch.iter().map(|e| e.desirable).collect();
            let x = KtoInputs {
                policy: &policy,
                reference: &reference,
                policy_kl: &policy_kl,
                reference_kl: &reference_kl,
                desirable: &desirable,
            };
            let (loss, km) = match method {
                Method::StepKto(_, step) => {
                    let ref_steps: Vec<f32> =
                        refs.iter().flat_map(|r| r.steps.iter().copied()).collect();
                    let steps: Vec<CompletionSteps> = batch
                        .iter()
                        .map(|e| CompletionSteps {
                            tokens: e.steps.iter().map(|s| s.1).collect(),
                            correct: e.step_correct.clone(),
                        })
                        .collect();
                    let (l, km, s) =
                        step_kto_loss(kto, step, &x, &policy_steps, &ref_steps, &steps)?;
                    m.insert("step_term".into(), s);
                    (l, km)
                }
                _ => kto_loss(kto, &x)?,
            };
            m.insert("kl".into(), km.kl);
            for (k, v) in [
                ("rewards/chosen", km.rewards_chosen),
                ("rewards/rejected", km.rewards_rejected),
                ("rewards/margins", km.rewards_margins),
                ("logps/chosen", km.logps_chosen),
                ("logps/rejected", km.logps_rejected),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            loss
        }
    };
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        return Err(TrainError::NonFinite(format!("the loss is {value}")));
    }
    m.insert("loss".into(), value);
    acc.add(model.params(), &loss.backward()?)?;
    Ok(m)
}

/// One optimiser step over `micro_batches` (each a slice of examples with their reference
/// log-probabilities): the gradients are averaged, clipped and applied. Metrics are the
/// micro-batches' means, plus `grad_norm` and `learning_rate`.
pub fn optimizer_step(
    model: &Decoder,
    opt: &mut AdamW,
    method: &Method,
    micro_batches: &[(Vec<&Example>, Vec<&RefLogps>)],
    lr: f64,
) -> Result<Metrics, TrainError> {
    let mut acc = Accumulated::default();
    let mut sums = Metrics::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (batch, refs) in micro_batches {
        for (k, v) in micro_batch(model, method, batch, refs, &mut acc)? {
            *sums.entry(k.clone()).or_default() += v;
            *counts.entry(k).or_default() += 1;
        }
    }
    let mut m: Metrics = sums
        .into_iter()
        .map(|(k, v)| {
            let n = counts[&k] as f64;
            (k, v / n)
        })
        .collect();
    m.insert("grad_norm".into(), opt.step(model.params(), acc, lr)?);
    m.insert("learning_rate".into(), lr);
    Ok(m)
}
