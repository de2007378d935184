//! The training losses: SFT cross-entropy, KTO as TRL defines it, and Step-KTO.
//!
//! Notation, per completion i of a micro-batch of n: `lp_i` = Σ log π(y_t | x, y_<t) over the
//! completion's tokens (the policy, with gradient), `lp⁰_i` the same under the reference π_ref
//! (computed once per round, no graph), `d_i` its label (desirable or not), β > 0.
//!
//! **SFT**: `-(Σ_i Σ_t log π(y_t)) / (number of completion tokens)`.
//!
//! **KTO** (TRL's `KTOTrainer`, `loss_type="kto"`; KTO paper eq. 7). The reference point is
//! `z = max(0, mean_i(lp^KL_i - lp^KL⁰_i))`, detached, where `lp^KL_i` is the log-probability
//! of a *mismatched* completion: prompt i with completion i-1 (completions rotated by one
//! within the micro-batch, item 0 taking the last one). With `r_i = lp_i - lp⁰_i`:
//!   desirable:   `L_i = w_d (1 - σ(β (r_i - z)))`
//!   undesirable: `L_i = w_u (1 - σ(β (z - r_i)))`
//! and the loss is the mean of the `L_i` over the items present (a micro-batch with no
//! desirable, or no undesirable, item is the mean of the other kind: never NaN).
//! `loss_type="apo_zero_unpaired"` has no reference point: desirable `w_d (1 - σ(β r_i))`,
//! undesirable `w_u σ(β r_i)`. Metrics, named as TRL names them: `kl` (= z), `rewards/chosen`
//! (mean of β r_i over desirable items), `rewards/rejected`, `rewards/margins` (their
//! difference, when both kinds are present), `logps/chosen`, `logps/rejected`.
//!
//! **Step-KTO** (our design; the paper does not publish its equations): the KTO loss plus
//! `λ_step · S`. Each step h of a completion (its token span, from the judge's step
//! splitting) has the implicit reward `r_h = Σ_{t ∈ h} (log π(y_t) - log π_ref(y_t))`, and a
//! label from the step judge. Its value is `v_h = σ(β (r_h - z_h))` for a step labelled
//! correct and `σ(β (z_h - r_h))` for one labelled wrong; the step term of a completion is
//! the weighted mean `Σ_h w_h (1 - v_h) / Σ_h w_h` (`w_h` = the correct or the wrong step
//! weight), and `S` is the mean of that over the completions that have steps. The reference
//! point `z_h` is the outcome's `z` ([`StepPoint::Shared`]), or that share of it the step's
//! tokens are of the completion's ([`StepPoint::PerStep`]: `z · |h| / |y|`, so the steps'
//! points add up to the completion's). With `after_first_wrong`, every step after the first
//! step labelled wrong counts as wrong too (a step built on a wrong one is not trusted).
//! With `λ_step = 0` the loss is KTO's exactly.

use candle_core::{D, Tensor};

use super::TrainError;

/// TRL's `loss_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KtoLossType {
    Kto,
    ApoZeroUnpaired,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KtoConfig {
    pub beta: f64,
    pub loss_type: KtoLossType,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    /// TRL's defaults.
    fn default() -> Self {
        KtoConfig {
            beta: 0.1,
            loss_type: KtoLossType::Kto,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }
    }
}

/// One micro-batch's completion-level log-probabilities.
pub struct KtoInputs<'a> {
    /// `(n,)`, the policy's summed completion log-probabilities, with gradient.
    pub policy: &'a Tensor,
    /// The reference's, one per item.
    pub reference: &'a [f32],
    /// The policy's and the reference's on the mismatched (rotated) completions; unused
    /// (may be empty) for `apo_zero_unpaired`.
    pub policy_kl: &'a [f32],
    pub reference_kl: &'a [f32],
    pub desirable: &'a [bool],
}

/// What TRL logs for a step, by TRL's names (absent entries are left out, as TRL does).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KtoMetrics {
    pub kl: f64,
    pub rewards_chosen: Option<f64>,
    pub rewards_rejected: Option<f64>,
    pub rewards_margins: Option<f64>,
    pub logps_chosen: Option<f64>,
    pub logps_rejected: Option<f64>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// The KTO reference point `z = max(0, mean(policy_kl - reference_kl))` (0 for
/// `apo_zero_unpaired`).
pub fn kl_point(cfg: &KtoConfig, policy_kl: &[f32], reference_kl: &[f32]) -> f64 {
    if cfg.loss_type == KtoLossType::ApoZeroUnpaired {
        return 0.0;
    }
    let d = policy_kl
        .iter()
        .zip(reference_kl)
        .map(|(p, r)| *p as f64 - *r as f64);
    mean(d).unwrap_or(0.0).max(0.0)
}

/// The KTO loss (a scalar with gradient) and its metrics; see the module header.
pub fn kto_loss(cfg: &KtoConfig, x: &KtoInputs) -> Result<(Tensor, KtoMetrics), TrainError> {
    let n = x.desirable.len();
    if n == 0 || x.policy.dims1()? != n || x.reference.len() != n {
        return Err(TrainError::Input(format!(
            "a KTO micro-batch needs one policy and one reference log-probability per item (got {n} labels)"
        )));
    }
    if cfg.loss_type == KtoLossType::Kto && (x.policy_kl.len() != n || x.reference_kl.len() != n) {
        return Err(TrainError::Input(
            "loss_type kto needs the mismatched-pair log-probabilities of every item".into(),
        ));
    }
    let z = kl_point(cfg, x.policy_kl, x.reference_kl);
    let dev = x.policy.device();
    let reference = Tensor::from_slice(x.reference, n, dev)?;
    let ratio = (x.policy - &reference)?;
    // per item: sign s (+1 desirable, -1 undesirable), offset, weight:
    //   kto:  L = w (1 - σ(β s (r - z)))
    //   apo:  desirable w (1 - σ(β r)), undesirable w σ(β r) = w (1 - σ(-β r))
    let sign: Vec<f32> = x
        .desirable
        .iter()
        .map(|&d| if d { 1.0 } else { -1.0 })
        .collect();
    let weight: Vec<f32> = x
        .desirable
        .iter()
        .map(|&d| {
            (if d {
                cfg.desirable_weight
            } else {
                cfg.undesirable_weight
            }) as f32
        })
        .collect();
    let sign = Tensor::from_vec(sign, n, dev)?;
    let weight = Tensor::from_vec(weight, n, dev)?;
    let arg = ((&ratio - z)? * cfg.beta)?.mul(&sign)?;
    let losses = (sigmoid(&arg)?.affine(-1.0, 1.0)? * weight)?;
    let loss = losses.mean_all()?;
    Ok((loss, metrics(cfg, x, z)?))
}

fn metrics(cfg: &KtoConfig, x: &KtoInputs, z: f64) -> Result<KtoMetrics, TrainError> {
    let lp: Vec<f32> = x.policy.to_vec1()?;
    let pick = |want: bool, f: &dyn Fn(usize) -> f64| {
        mean((0..lp.len()).filter(|&i| x.desirable[i] == want).map(f))
    };
    let reward = |i: usize| cfg.beta * (lp[i] as f64 - x.reference[i] as f64);
    let (rc, rr) = (pick(true, &reward), pick(false, &reward));
    Ok(KtoMetrics {
        kl: z,
        rewards_chosen: rc,
        rewards_rejected: rr,
        rewards_margins: rc.zip(rr).map(|(c, r)| c - r),
        logps_chosen: pick(true, &|i| lp[i] as f64),
        logps_rejected: pick(false, &|i| lp[i] as f64),
    })
}

/// `σ(x)` from differentiable ops (`1 / (1 + e^-x)`).
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Where a step's implicit reward is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPoint {
    /// The outcome term's `z`.
    Shared,
    /// `z` times the step's share of the completion's tokens.
    PerStep,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepConfig {
    pub lambda_step: f64,
    pub point: StepPoint,
    pub after_first_wrong: bool,
    pub correct_weight: f64,
    pub wrong_weight: f64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            lambda_step: 1.0,
            point: StepPoint::Shared,
            after_first_wrong: true,
            correct_weight: 1.0,
            wrong_weight: 1.0,
        }
    }
}

/// The steps of one completion: each step's token count and label (true = correct).
#[derive(Debug, Clone)]
pub struct CompletionSteps {
    pub tokens: Vec<usize>,
    pub correct: Vec<bool>,
}

/// Step labels as the loss uses them: with `after_first_wrong`, wrong from the first wrong
/// step on.
pub fn effective_labels(cfg: &StepConfig, correct: &[bool]) -> Vec<bool> {
    let mut seen_wrong = false;
    correct
        .iter()
        .map(|&c| {
            seen_wrong |= !c;
            if cfg.after_first_wrong {
                !seen_wrong
            } else {
                c
            }
        })
        .collect()
}

/// The Step-KTO step term `S` (a scalar with gradient; see the module header).
/// `policy_steps` is `(m,)`: each step's summed policy log-probability, the steps of all
/// completions in order; `reference_steps` the same under the reference; `steps[i]` gives
/// completion i's steps (their count and token counts must add up to `m`).
pub fn step_term(
    cfg: &StepConfig,
    beta: f64,
    z: f64,
    policy_steps: &Tensor,
    reference_steps: &[f32],
    steps: &[CompletionSteps],
) -> Result<Tensor, TrainError> {
    let m: usize = steps.iter().map(|s| s.tokens.len()).sum();
    if policy_steps.dims1()? != m || reference_steps.len() != m {
        return Err(TrainError::Input(format!(
            "{m} steps, but {} policy and {} reference step log-probabilities",
            policy_steps.dims1()?,
            reference_steps.len()
        )));
    }
    if steps.iter().any(|s| s.tokens.len() != s.correct.len()) {
        return Err(TrainError::Input("a label for every step".into()));
    }
    let dev = policy_steps.device();
    let with_steps = steps.iter().filter(|s| !s.tokens.is_empty()).count();
    if with_steps == 0 {
        return Ok(Tensor::zeros((), policy_steps.dtype(), dev)?);
    }
    // per step: sign, point, and its weight within its completion's weighted mean, divided
    // by the number of completions with steps (so the sum over all steps is S)
    let (mut sign, mut point, mut share) = (Vec::new(), Vec::new(), Vec::new());
    for s in steps {
        let labels = effective_labels(cfg, &s.correct);
        let total: usize = s.tokens.iter().sum();
        let w: Vec<f64> = labels
            .iter()
            .map(|&c| {
                if c {
                    cfg.correct_weight
                } else {
                    cfg.wrong_weight
                }
            })
            .collect();
        let wsum: f64 = w.iter().sum();
        for (h, &c) in labels.iter().enumerate() {
            sign.push(if c { 1f32 } else { -1.0 });
            point.push(match cfg.point {
                StepPoint::Shared => z,
                StepPoint::PerStep if total > 0 => z * s.tokens[h] as f64 / total as f64,
                StepPoint::PerStep => 0.0,
            } as f32);
            let wh = if wsum > 0.0 { w[h] / wsum } else { 0.0 };
            share.push((wh / with_steps as f64) as f32);
        }
    }
    let reference = Tensor::from_slice(reference_steps, m, dev)?;
    let point = Tensor::from_vec(point, m, dev)?;
    let sign = Tensor::from_vec(sign, m, dev)?;
    let share = Tensor::from_vec(share, m, dev)?;
    let r = (policy_steps - reference)?;
    let arg = ((r - point)? * beta)?.mul(&sign)?;
    let per = sigmoid(&arg)?.affine(-1.0, 1.0)?;
    Ok((per * share)?.sum_all()?)
}

/// Sum of `token_logprobs` `(b, t-1)` over spans: `spans[k] = (row, start, len)` in the
/// coordinates of `token_logprobs` (position j holds the log-probability of token j + 1).
/// One matrix product with a 0/1 selection matrix, so the gradient reaches every token.
pub fn span_sums(
    token_logprobs: &Tensor,
    spans: &[(usize, usize, usize)],
) -> Result<Tensor, TrainError> {
    let (b, t) = token_logprobs.dims2()?;
    let mut sel = vec![0f32; spans.len() * b * t];
    for (k, &(row, start, len)) in spans.iter().enumerate() {
        if row >= b || start + len > t {
            return Err(TrainError::Input(format!(
                "span ({row}, {start}, {len}) outside a ({b}, {t}) batch"
            )));
        }
        let base = k * b * t + row * t;
        sel[base + start..base + start + len].fill(1.0);
    }
    let sel = Tensor::from_vec(sel, (spans.len(), b * t), token_logprobs.device())?;
    let flat = token_logprobs.reshape((b * t, 1))?;
    Ok(sel.matmul(&flat)?.squeeze(D::Minus1)?)
}

/// SFT cross-entropy: the mean negative log-probability over the spans' tokens.
pub fn sft_loss(
    token_logprobs: &Tensor,
    spans: &[(usize, usize, usize)],
) -> Result<Tensor, TrainError> {
    let tokens: usize = spans.iter().map(|s| s.2).sum();
    if tokens == 0 {
        return Err(TrainError::Input("no completion tokens to train on".into()));
    }
    Ok((span_sums(token_logprobs, spans)?.sum_all()? * (-1.0 / tokens as f64))?)
}

/// Step-KTO: `kto_loss + λ_step · step_term`, with the step term's value for the metrics.
pub fn step_kto_loss(
    kto: &KtoConfig,
    step: &StepConfig,
    x: &KtoInputs,
    policy_steps: &Tensor,
    reference_steps: &[f32],
    steps: &[CompletionSteps],
) -> Result<(Tensor, KtoMetrics, f64), TrainError> {
    if steps.len() != x.desirable.len() {
        return Err(TrainError::Input(format!(
            "{} completions, but steps for {}",
            x.desirable.len(),
            steps.len()
        )));
    }
    let (outcome, metrics) = kto_loss(kto, x)?;
    let s = step_term(
        step,
        kto.beta,
        metrics.kl,
        policy_steps,
        reference_steps,
        steps,
    )?;
    let value = s.to_scalar::<f32>()? as f64;
    if step.lambda_step == 0.0 {
        // exactly the KTO loss (and its graph), not KTO + 0 * S
        return Ok((outcome, metrics, value));
    }
    Ok(((outcome + (s * step.lambda_step)?)?, metrics, value))
}
