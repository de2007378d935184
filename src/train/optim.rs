//! Optimisation: AdamW with f32 state (PyTorch's `torch.optim.AdamW` update, step for step),
//! global-norm gradient clipping (`clip_grad_norm_`), learning-rate schedules (linear warmup,
//! then constant or cosine as transformers' `get_cosine_schedule_with_warmup`), and gradient
//! accumulation over micro-batches.
//!
//! AdamW, per parameter p with gradient g at step t (from 1), learning rate η:
//!   p ← p (1 - η λ);  m ← β₁ m + (1 - β₁) g;  v ← β₂ v + (1 - β₂) g²
//!   p ← p - (η / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)
//! Parameters are visited in the decoder's sorted name order. On the CPU each parameter's
//! update is one pass (`update_cpu`), elsewhere candle tensor ops on its device; both are
//! deterministic for a seed on the CPU.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var, backprop::GradStore};

use super::TrainError;

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global L2 norm the gradients are clipped to; 0 turns clipping off.
    pub max_grad_norm: f64,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// Micro-batches summed into one optimiser step.
    pub grad_accumulation: usize,
}

impl Default for OptimConfig {
    /// transformers' `TrainingArguments` defaults (TRL's KTO uses them; its learning rate is
    /// 1e-6, set per run).
    fn default() -> Self {
        OptimConfig {
            learning_rate: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            grad_accumulation: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Cosine,
}

/// The learning rate at optimiser step `step` (0-based) of `total`.
pub fn learning_rate(cfg: &OptimConfig, step: usize, total: usize) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.learning_rate * step as f64 / cfg.warmup_steps.max(1) as f64;
    }
    match cfg.schedule {
        Schedule::Constant => cfg.learning_rate,
        Schedule::Cosine => {
            let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let progress = (step - cfg.warmup_steps) as f64 / span;
            cfg.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0)
        }
    }
}

/// AdamW state: first and second moments per parameter, and the step count.
pub struct AdamW {
    cfg: OptimConfig,
    moments: BTreeMap<String, (Tensor, Tensor)>,
    step: usize,
}

/// Gradients summed over micro-batches, by parameter name.
#[derive(Default)]
pub struct Accumulated {
    grads: BTreeMap<String, Tensor>,
    micro_batches: usize,
}

impl Accumulated {
    /// Add one micro-batch's gradients (a parameter the loss did not reach adds nothing).
    pub fn add(&mut self, params: &BTreeMap<String, Var>, g: &GradStore) -> Result<(), TrainError> {
        for (name, var) in params {
            if let Some(t) = g.get(var.as_tensor()) {
                let t = t.detach();
                let sum = match self.grads.remove(name) {
                    Some(prev) => (prev + t)?,
                    None => t,
                };
                self.grads.insert(name.clone(), sum);
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }
}

impl AdamW {
    pub fn new(cfg: OptimConfig) -> AdamW {
        AdamW {
            cfg,
            moments: BTreeMap::new(),
            step: 0,
        }
    }

    pub fn steps(&self) -> usize {
        self.step
    }

    /// One update from the accumulated gradients (their mean over the micro-batches) at
    /// learning rate `lr`: clipped to `max_grad_norm` first. Returns the global gradient
    /// norm before clipping (TRL's `grad_norm`). A non-finite norm changes nothing and is an
    /// error: the caller keeps its last good checkpoint.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Var>,
        acc: Accumulated,
        lr: f64,
    ) -> Result<f64, TrainError> {
        let scale = 1.0 / acc.micro_batches.max(1) as f64;
        let grads: BTreeMap<String, Tensor> = acc
            .grads
            .into_iter()
            .map(|(n, g)| Ok((n, (g * scale)?)))
            .collect::<Result<_, candle_core::Error>>()?;
        let mut sq = 0f64;
        for g in grads.values() {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(TrainError::NonFinite(format!(
                "the gradient norm is {norm} at step {}: the update is skipped",
                self.step + 1
            )));
        }
        let clip = if self.cfg.max_grad_norm > 0.0 {
            (self.cfg.max_grad_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.step += 1;
        let c = self.cfg.clone();
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let g = if clip < 1.0 { (g * clip)? } else { g.clone() };
            let p = var.as_tensor().detach();
            let (m, v) = match self.moments.remove(name) {
                Some(mv) => mv,
                None => (p.zeros_like()?, p.zeros_like()?),
            };
            let (p, m, v) = if p.device().is_cpu() && p.dtype() == candle_core::DType::F32 {
                update_cpu(&c, lr, (bc1, bc2), &p, &g, &m, &v)?
            } else {
                let p = (p * (1.0 - lr * c.weight_decay))?;
                let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                let p = (p - (m.div(&denom)? * (lr / bc1))?)?;
                (p, m, v)
            };
            var.set(&p)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(norm)
    }

    /// The moments and step count, to save with a checkpoint (names `m.NAME`, `v.NAME`).
    pub fn state(&self) -> (BTreeMap<String, Tensor>, usize) {
        let mut out = BTreeMap::new();
        for (n, (m, v)) in &self.moments {
            out.insert(format!("m.{n}"), m.clone());
            out.insert(format!("v.{n}"), v.clone());
        }
        (out, self.step)
    }

    /// Back from [`AdamW::state`].
    pub fn restore(cfg: OptimConfig, state: BTreeMap<String, Tensor>, step: usize) -> AdamW {
        let mut moments: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (k, t) in state {
            if let Some(n) = k.strip_prefix("m.") {
                moments.entry(n.to_string()).or_default().0 = Some(t);
            } else if let Some(n) = k.strip_prefix("v.") {
                moments.entry(n.to_string()).or_default().1 = Some(t);
            }
        }
        let moments = moments
            .into_iter()
            .filter_map(|(n, (m, v))| Some((n, (m?, v?))))
            .collect();
        AdamW { cfg, moments, step }
    }
}

/// The AdamW update of one CPU f32 parameter in one pass over `p`, `g`, `m` and `v` (op by
/// op it was fifteen passes and as many allocations, a twentieth of a KTO step). Each value
/// is rounded as the op-by-op form rounds it: candle's scalar ops multiply by the f32 of the
/// scalar, so `x / s` is `x * f32(1 / s)`.
fn update_cpu(
    c: &OptimConfig,
    lr: f64,
    (bc1, bc2): (f64, f64),
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    use rayon::prelude::*;
    let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
    let (mut pv, gv, mut mv, mut vv) = (flat(p)?, flat(g)?, flat(m)?, flat(v)?);
    let decay = (1.0 - lr * c.weight_decay) as f32;
    let (b1, nb1) = (c.beta1 as f32, (1.0 - c.beta1) as f32);
    let (b2, nb2) = (c.beta2 as f32, (1.0 - c.beta2) as f32);
    let (inv_bc2, eps, step) = ((1.0 / bc2.sqrt()) as f32, c.eps as f32, (lr / bc1) as f32);
    const CHUNK: usize = 1 << 14;
    pv.par_chunks_mut(CHUNK)
        .zip(mv.par_chunks_mut(CHUNK))
        .zip(vv.par_chunks_mut(CHUNK))
        .zip(gv.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                *m = *m * b1 + g * nb1;
                *v = *v * b2 + (g * g) * nb2;
                let denom = v.sqrt() * inv_bc2 + eps;
                *p = *p * decay - (*m / denom) * step;
            }
        });
    let (shape, dev) = (p.shape().clone(), p.device().clone());
    Ok((
        Tensor::from_vec(pv, &shape, &dev)?,
        Tensor::from_vec(mv, &shape, &dev)?,
        Tensor::from_vec(vv, &shape, &dev)?,
    ))
}
