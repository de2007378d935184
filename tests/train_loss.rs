//! The losses of issue 10 (src/train/loss.rs). KTO against TRL's own loss code (TRL 1.16's
//! `KTOTrainer._compute_loss`, called by tests/train/make_kto_refs.py on the same summed
//! log-probabilities; tests/data/train/kto.json): the loss, its gradient with respect to
//! each completion's log-probability, and TRL's logged metrics, to 1e-6, including an odd
//! micro-batch, one with no undesirable and one with no desirable item, and
//! `apo_zero_unpaired`. Step-KTO against the formulas of the module header computed here in
//! float64, and its properties (λ_step = 0 is KTO, the direction of each step's gradient).

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use stepkto::train::loss::{
    CompletionSteps, KtoConfig, KtoInputs, KtoLossType, StepConfig, StepPoint, effective_labels,
    kto_loss, sft_loss, span_sums, step_kto_loss, step_term,
};

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn kto_losses_equal_trl() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/train/kto.json");
    let e: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for case in e["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = KtoConfig {
            beta: case["beta"].as_f64().unwrap(),
            loss_type: match case["loss_type"].as_str().unwrap() {
                "kto" => KtoLossType::Kto,
                _ => KtoLossType::ApoZeroUnpaired,
            },
            desirable_weight: case["desirable_weight"].as_f64().unwrap(),
            undesirable_weight: case["undesirable_weight"].as_f64().unwrap(),
        };
        let desirable: Vec<bool> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() == 1)
            .collect();
        let policy = Var::from_vec(f32s(&case["policy"]), desirable.len(), &Device::Cpu).unwrap();
        let (reference, pkl, rkl) = (
            f32s(&case["reference"]),
            f32s(&case["policy_kl"]),
            f32s(&case["reference_kl"]),
        );
        let x = KtoInputs {
            policy: policy.as_tensor(),
            reference: &reference,
            policy_kl: &pkl,
            reference_kl: &rkl,
            desirable: &desirable,
        };
        let (loss, m) = kto_loss(&cfg, &x).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        let want = case["loss"].as_f64().unwrap();
        assert!(
            got.is_finite() && (got - want).abs() < 1e-6,
            "{name}: loss {got} vs TRL {want}"
        );
        let grad: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(policy.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, w) in grad.iter().zip(case["grad"].as_array().unwrap()) {
            let w = w.as_f64().unwrap();
            assert!(
                (*g as f64 - w).abs() < 1e-6,
                "{name}: gradient {g} vs TRL {w}"
            );
        }
        let tm = &case["metrics"];
        for (key, ours) in [
            ("kl", Some(m.kl)),
            ("rewards/chosen", m.rewards_chosen),
            ("rewards/rejected", m.rewards_rejected),
            ("rewards/margins", m.rewards_margins),
            ("logps/chosen", m.logps_chosen),
            ("logps/rejected", m.logps_rejected),
        ] {
            match (tm.get(key).and_then(Value::as_f64), ours) {
                (Some(w), Some(o)) => {
                    // logps are about -10 in f32: 1e-6 of them is their rounding
                    let tol = if key.starts_with("logps") { 1e-5 } else { 1e-6 };
                    assert!((o - w).abs() < tol, "{name}: {key} {o} vs TRL {w}")
                }
                (None, None) => {}
                (w, o) => panic!("{name}: {key}: TRL {w:?}, stepkto {o:?}"),
            }
        }
        eprintln!("{name}: loss {got:.9} (TRL {want:.9})");
    }
}

/// Three completions with 3, 1 and 0 steps (the last has no steps: it does not count).
fn steps() -> Vec<CompletionSteps> {
    vec![
        CompletionSteps {
            tokens: vec![4, 6, 2],
            correct: vec![true, false, true],
        },
        CompletionSteps {
            tokens: vec![5],
            correct: vec![true],
        },
        CompletionSteps {
            tokens: vec![],
            correct: vec![],
        },
    ]
}

/// The step term from the module header's formula, in float64.
fn step_term_f64(cfg: &StepConfig, beta: f64, z: f64, r: &[f64], steps: &[CompletionSteps]) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (mut at, mut total, mut n) = (0, 0.0, 0);
    for s in steps {
        if s.tokens.is_empty() {
            continue;
        }
        let labels = effective_labels(cfg, &s.correct);
        let len: usize = s.tokens.iter().sum();
        let (mut num, mut den) = (0.0, 0.0);
        for (h, &c) in labels.iter().enumerate() {
            let zh = match cfg.point {
                StepPoint::Shared => z,
                StepPoint::PerStep => z * s.tokens[h] as f64 / len as f64,
            };
            let v = if c {
                sig(beta * (r[at] - zh))
            } else {
                sig(beta * (zh - r[at]))
            };
            let w = if c {
                cfg.correct_weight
            } else {
                cfg.wrong_weight
            };
            num += w * (1.0 - v);
            den += w;
            at += 1;
        }
        total += num / den;
        n += 1;
    }
    total / n as f64
}

#[test]
fn step_term_follows_its_formula() {
    let policy = [-3.0f32, -9.5, -1.25, -4.0];
    let reference = [-3.5f32, -8.0, -1.0, -4.5];
    let r: Vec<f64> = policy
        .iter()
        .zip(&reference)
        .map(|(p, q)| *p as f64 - *q as f64)
        .collect();
    for (point, after, cw, ww) in [
        (StepPoint::Shared, true, 1.0, 1.0),
        (StepPoint::Shared, false, 1.0, 1.0),
        (StepPoint::PerStep, true, 0.5, 2.0),
        (StepPoint::PerStep, false, 1.0, 3.0),
    ] {
        let cfg = StepConfig {
            lambda_step: 1.0,
            point,
            after_first_wrong: after,
            correct_weight: cw,
            wrong_weight: ww,
        };
        let p = Tensor::from_slice(&policy, 4, &Device::Cpu).unwrap();
        let got = step_term(&cfg, 0.3, 0.8, &p, &reference, &steps()).unwrap();
        let got = got.to_scalar::<f32>().unwrap() as f64;
        let want = step_term_f64(&cfg, 0.3, 0.8, &r, &steps());
        assert!((got - want).abs() < 1e-6, "{cfg:?}: {got} vs {want}");
    }
    // after the first wrong step every step is wrong
    let cfg = StepConfig::default();
    assert_eq!(
        effective_labels(&cfg, &[true, false, true, true]),
        [true, false, false, false]
    );
    let cfg = StepConfig {
        after_first_wrong: false,
        ..cfg
    };
    assert_eq!(
        effective_labels(&cfg, &[true, false, true]),
        [true, false, true]
    );
}

/// Raising a correct step's log-probability lowers the step term, raising a wrong one's
/// raises it; with λ_step = 0 Step-KTO is KTO exactly (loss and gradient).
#[test]
fn step_kto_pushes_each_step_the_right_way_and_lambda_zero_is_kto() {
    let reference = [-3.5f32, -8.0, -1.0, -4.5];
    let policy = Var::from_slice(&[-3.0f32, -9.5, -1.25, -4.0], 4, &Device::Cpu).unwrap();
    let cfg = StepConfig {
        after_first_wrong: false,
        ..StepConfig::default()
    };
    let s = step_term(&cfg, 0.1, 0.2, policy.as_tensor(), &reference, &steps()).unwrap();
    let g: Vec<f32> = s
        .backward()
        .unwrap()
        .get(policy.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        g[0] < 0.0 && g[2] < 0.0 && g[3] < 0.0,
        "correct steps: {g:?}"
    );
    assert!(g[1] > 0.0, "the wrong step: {g:?}");

    let completion = Var::from_slice(&[-12.0f32, -5.0, -7.0], 3, &Device::Cpu).unwrap();
    let x = KtoInputs {
        policy: completion.as_tensor(),
        reference: &[-11.0, -5.5, -7.0],
        policy_kl: &[-13.0, -6.0, -8.0],
        reference_kl: &[-13.5, -6.2, -8.1],
        desirable: &[true, true, false],
    };
    let kto = KtoConfig::default();
    let (plain, _) = kto_loss(&kto, &x).unwrap();
    let zero = StepConfig {
        lambda_step: 0.0,
        ..StepConfig::default()
    };
    let (stepped, _, s) =
        step_kto_loss(&kto, &zero, &x, policy.as_tensor(), &reference, &steps()).unwrap();
    assert!(s > 0.0);
    assert_eq!(
        plain.to_scalar::<f32>().unwrap(),
        stepped.to_scalar::<f32>().unwrap()
    );
    let gp: Vec<f32> = plain
        .backward()
        .unwrap()
        .get(completion.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    let gs: Vec<f32> = stepped
        .backward()
        .unwrap()
        .get(completion.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(gp, gs);
    let one = StepConfig::default();
    let (both, _, s) =
        step_kto_loss(&kto, &one, &x, policy.as_tensor(), &reference, &steps()).unwrap();
    let d = both.to_scalar::<f32>().unwrap() - plain.to_scalar::<f32>().unwrap();
    assert!((d as f64 - s).abs() < 1e-6);
}

#[test]
fn span_sums_and_sft() {
    let lp = Tensor::from_vec(
        vec![-1.0f32, -2.0, -3.0, -4.0, -0.5, -0.25],
        (2, 3),
        &Device::Cpu,
    )
    .unwrap();
    let s: Vec<f32> = span_sums(&lp, &[(0, 1, 2), (1, 0, 3), (0, 0, 0)])
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(s, [-5.0, -4.75, 0.0]);
    let l = sft_loss(&lp, &[(0, 1, 2), (1, 0, 3)])
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((l - 9.75 / 5.0).abs() < 1e-6);
    assert!(span_sums(&lp, &[(2, 0, 1)]).is_err());
    assert!(span_sums(&lp, &[(0, 2, 2)]).is_err());
    assert!(sft_loss(&lp, &[]).is_err());
}

#[test]
fn bad_micro_batches_are_errors_not_nan() {
    let p = Tensor::from_slice(&[-1.0f32, -2.0], 2, &Device::Cpu).unwrap();
    let cfg = KtoConfig::default();
    // KL pairs missing for loss_type kto
    let x = KtoInputs {
        policy: &p,
        reference: &[-1.0, -2.0],
        policy_kl: &[],
        reference_kl: &[],
        desirable: &[true, false],
    };
    assert!(kto_loss(&cfg, &x).is_err());
    // but apo_zero_unpaired needs none
    let apo = KtoConfig {
        loss_type: KtoLossType::ApoZeroUnpaired,
        ..cfg.clone()
    };
    let (l, _) = kto_loss(&apo, &x).unwrap();
    assert!(l.to_scalar::<f32>().unwrap().is_finite());
    // label count mismatch
    let x = KtoInputs {
        policy: &p,
        reference: &[-1.0],
        policy_kl: &[],
        reference_kl: &[],
        desirable: &[true],
    };
    assert!(kto_loss(&apo, &x).is_err());
}

/// AdamW (weight decay, betas, bias correction), global-norm clipping and the cosine
/// schedule with warmup against PyTorch's `torch.optim.AdamW`, `clip_grad_norm_` and
/// transformers' `get_cosine_schedule_with_warmup` over five steps (tests/data/train/optim.json,
/// from tests/train/make_optim_refs.py), gradients from 0.05 to 36 in norm (clipped and not).
#[test]
fn adamw_clipping_and_schedule_equal_pytorch() {
    use std::collections::BTreeMap;
    use stepkto::train::optim::{Accumulated, AdamW, OptimConfig, Schedule, learning_rate};
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/train/optim.json");
    let e: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let flat = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| match r.as_array() {
                Some(row) => row
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect::<Vec<_>>(),
                None => vec![r.as_f64().unwrap() as f32],
            })
            .collect()
    };
    let dev = Device::Cpu;
    let mut params = BTreeMap::new();
    params.insert(
        "a".to_string(),
        Var::from_vec(flat(&e["a"]), (3, 4), &dev).unwrap(),
    );
    params.insert(
        "b".to_string(),
        Var::from_vec(flat(&e["b"]), 5, &dev).unwrap(),
    );
    let cfg = OptimConfig {
        learning_rate: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        max_grad_norm: 1.0,
        warmup_steps: 2,
        schedule: Schedule::Cosine,
        grad_accumulation: 1,
    };
    let mut opt = AdamW::new(cfg.clone());
    for (step, g) in e["grads"].as_array().unwrap().iter().enumerate() {
        let lr = learning_rate(&cfg, step, 5);
        let want_lr = e["lrs"][step].as_f64().unwrap();
        assert!(
            (lr - want_lr).abs() < 1e-12,
            "step {step}: lr {lr} vs {want_lr}"
        );
        // the gradients as a loss would give them: d(sum(p * g))/dp = g
        let ga = Tensor::from_vec(flat(&g[0]), (3, 4), &dev).unwrap();
        let gb = Tensor::from_vec(flat(&g[1]), 5, &dev).unwrap();
        let loss = ((params["a"].as_tensor() * &ga).unwrap().sum_all().unwrap()
            + (params["b"].as_tensor() * &gb).unwrap().sum_all().unwrap())
        .unwrap();
        // split over two micro-batches: the mean of (2 g, 0) is g
        let mut acc = Accumulated::default();
        acc.add(&params, &(loss.clone() * 2.0).unwrap().backward().unwrap())
            .unwrap();
        acc.add(&params, &(loss * 0.0).unwrap().backward().unwrap())
            .unwrap();
        let norm = opt.step(&params, acc, lr).unwrap();
        let want = e["norms"][step].as_f64().unwrap();
        assert!(
            (norm - want).abs() < 1e-5 * want.max(1.0),
            "step {step}: norm {norm} vs {want}"
        );
    }
    for (name, key) in [("a", "final_a"), ("b", "final_b")] {
        let got: Vec<f32> = params[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, w) in got.iter().zip(flat(&e[key])) {
            assert!((g - w).abs() < 2e-6, "{name}: {g} vs PyTorch {w}");
        }
    }
    // the state round-trips
    let (state, steps) = opt.state();
    assert_eq!(steps, 5);
    assert_eq!(state.len(), 4);
    let mut again = AdamW::restore(cfg, state, steps);
    assert_eq!(again.steps(), 5);
    // a NaN gradient is an error and leaves the parameters as they were
    let before: Vec<f32> = params["b"].as_tensor().to_vec1().unwrap();
    let nan = Tensor::from_vec(vec![f32::NAN; 5], 5, &dev).unwrap();
    let loss = (params["b"].as_tensor() * &nan).unwrap().sum_all().unwrap();
    let mut acc = Accumulated::default();
    acc.add(&params, &loss.backward().unwrap()).unwrap();
    assert!(again.step(&params, acc, 1e-2).is_err());
    assert_eq!(params["b"].as_tensor().to_vec1::<f32>().unwrap(), before);
    assert_eq!(again.steps(), 5);
}
