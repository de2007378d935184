//! One KTO optimiser step: stepkto's trainer (src/train/step.rs: candle autograd, AdamW)
//! against TRL's `KTOTrainer` (PyTorch, CPU, the same thread count) on the same Qwen2-shaped
//! causal LM (23M parameters: hidden 512, 8 layers, 8 query / 2 key-value heads, a 600-token
//! vocabulary, random init, written here) and the same micro-batch: 8 examples of 256 tokens
//! (64 prompt + 192 completion), 5 desirable and 3 undesirable, reference log-probabilities
//! precomputed on both sides (TRL: `precompute_ref_log_probs=True`), so a step is the policy's
//! forward and backward over the completions and over their mismatched KL pairs (TRL takes
//! those without a graph, as we do), the loss and AdamW. Prints seconds per step for both
//! (best and mean of the timed steps; the ratio is of the best), each side's peak resident
//! memory, and both first-step losses (they must agree: same model, same tokens, same loss).
//! TRL runs twice: in f32, like for like (stepkto trains in f32), and with `KTOConfig`'s own
//! default `bf16=True` (bfloat16 autocast, which runs on AMX where the CPU has it).
//!
//! Run: `cargo bench --bench kto_step` (the Python side needs torch, transformers and trl:
//! STEPKTO_BENCH_PYTHON, default .venv-prm/bin/python; STEPKTO_BENCH_SKIP_PY skips it).
//! A model directory of your own: STEPKTO_BENCH_MODEL=DIR; steps timed: STEPKTO_BENCH_STEPS.

#[path = "../tests/common/tiny.rs"]
mod tiny;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use serde_json::{Value, json};
use stepkto::train::decoder::Decoder;
use stepkto::train::loss::KtoConfig;
use stepkto::train::optim::{AdamW, OptimConfig};
use stepkto::train::step::{Example, Method, optimizer_step, reference_logps};

const BATCH: usize = 8;
const PROMPT: usize = 64;
const COMPLETION: usize = 192;

fn main() {
    stepkto::model::cpu::alloc::pin_thread_count();
    stepkto::model::cpu::alloc::retain_freed_blocks();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let steps: usize = std::env::var("STEPKTO_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = match std::env::var("STEPKTO_BENCH_MODEL") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-kto");
            let patch = json!({"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                               "num_attention_heads": 8, "num_key_value_heads": 2});
            tiny::write_checkpoint_with("value-head", &dir, false, &patch);
            dir
        }
    };
    let model = Decoder::load(&dir, &Device::Cpu).unwrap();
    let vocab = model.config.vocab_size as u32;
    // token ids away from 0 (padding on the Python side)
    let tok = |i: usize, j: usize| 1 + ((i * 131 + j * 17 + 7) as u32) % (vocab - 1);
    let examples: Vec<Example> = (0..BATCH)
        .map(|i| Example {
            prompt: (0..PROMPT).map(|j| tok(i, j)).collect(),
            completion: (PROMPT..PROMPT + COMPLETION).map(|j| tok(i, j)).collect(),
            desirable: i % 8 < 5,
            steps: Vec::new(),
            step_correct: Vec::new(),
        })
        .collect();
    println!(
        "model: {} ({:.1}M parameters), micro-batch {BATCH} x {} tokens ({PROMPT} prompt + {COMPLETION} completion), {threads} threads, {steps} steps timed after one warm-up",
        dir.display(),
        model.num_params() as f64 / 1e6,
        PROMPT + COMPLETION
    );
    let refs = reference_logps(&model, &examples, BATCH).unwrap();
    let kto = KtoConfig::default();
    let method = Method::Kto(kto);
    let mut opt = AdamW::new(OptimConfig {
        learning_rate: 1e-6,
        ..OptimConfig::default()
    });
    let batch = vec![(examples.iter().collect(), refs.iter().collect())];
    let first = optimizer_step(&model, &mut opt, &method, &batch, 1e-6).unwrap();
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        optimizer_step(&model, &mut opt, &method, &batch, 1e-6).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / steps as f64;
    // the ratio is of best steps: on a shared machine a neighbour's load lands on a few
    // steps of one side, and the best step is what the code itself costs
    let ours = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "stepkto:  {ours:7.3} s/step best, {mean:7.3} mean  peak RSS {:.0} MB  first loss {:.8}",
        stepkto::model::cpu::alloc::peak_rss_mb(),
        first["loss"]
    );
    if std::env::var_os("STEPKTO_BENCH_SKIP_PY").is_some() {
        return;
    }
    let py = std::env::var("STEPKTO_BENCH_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv-prm/bin/python", env!("CARGO_MANIFEST_DIR")));
    let rows: Vec<Value> = examples
        .iter()
        .map(|e| json!({"prompt": e.prompt, "completion": e.completion, "label": e.desirable}))
        .collect();
    let file = dir.join("kto_rows.json");
    std::fs::write(&file, serde_json::to_string(&rows).unwrap()).unwrap();
    // like for like (f32), then KTOConfig's own default (bf16 autocast)
    for precision in ["f32", "bf16"] {
        let o = std::process::Command::new(&py)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_kto.py"))
            .args([
                dir.to_str().unwrap(),
                file.to_str().unwrap(),
                &threads.to_string(),
                &steps.to_string(),
                precision,
            ])
            .output();
        let o = match o {
            Ok(o) if o.status.success() => o,
            Ok(o) => return println!("TRL: failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => return println!("TRL: cannot run {py}: {e} (set STEPKTO_BENCH_PYTHON)"),
        };
        let text = String::from_utf8_lossy(&o.stdout);
        let r: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        let theirs = r["best_step"].as_f64().unwrap();
        let mean = r["seconds_per_step"].as_f64().unwrap();
        println!(
            "TRL {precision:4}: {theirs:7.3} s/step best, {mean:7.3} mean  peak RSS {:.0} MB  first loss {:.8} (trl {}, torch {})",
            r["peak_rss_mb"].as_f64().unwrap(),
            r["first_loss"].as_f64().unwrap(),
            r["trl"].as_str().unwrap(),
            r["torch"].as_str().unwrap()
        );
        println!(
            "ratio vs TRL {precision}: TRL / stepkto = {:.2}x faster per KTO optimiser step (best steps)",
            theirs / ours
        );
    }
}
