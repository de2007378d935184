//! Sampling throughput: stepkto's sampler (src/train/sample.rs: candle ops, KV cache) against
//! Hugging Face `generate` (PyTorch, CPU, same thread count) on the same Qwen2-shaped causal
//! LM (23M parameters: hidden 512, 8 layers, 8 query / 2 key-value heads, a 600-token
//! vocabulary, random init, written here) and the same batch: 48 prompts of 24 to 71 tokens,
//! 128 new tokens each, greedy, no EOS. Prints tokens per second for both, the ratio, and
//! each side's peak resident memory. Each side's time is the best of three runs.
//!
//! Run: `cargo bench --bench sample_throughput` (the Python side needs torch and transformers:
//! STEPKTO_BENCH_PYTHON, default .venv-prm/bin/python; STEPKTO_BENCH_SKIP_PY skips it).
//! A model directory of your own: STEPKTO_BENCH_MODEL=DIR.

#[path = "../tests/common/tiny.rs"]
mod tiny;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use serde_json::{Value, json};
use stepkto::train::decoder::Decoder;
use stepkto::train::sample::{SampleConfig, generate};

const SEQS: usize = 48;
const NEW: usize = 128;

/// New tokens per sequence: NEW, or STEPKTO_BENCH_NEW (1 times the prefill alone).
fn new_tokens() -> usize {
    std::env::var("STEPKTO_BENCH_NEW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(NEW)
}

fn main() {
    stepkto::model::cpu::alloc::pin_thread_count();
    stepkto::model::cpu::alloc::retain_freed_blocks();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = match std::env::var("STEPKTO_BENCH_MODEL") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-sample");
            let patch = json!({"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                               "num_attention_heads": 8, "num_key_value_heads": 2});
            tiny::write_checkpoint_with("value-head", &dir, false, &patch);
            dir
        }
    };
    let model = Decoder::load(&dir, &Device::Cpu).unwrap();
    let vocab = model.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..SEQS)
        .map(|i| {
            (0..24 + i)
                .map(|j| ((i * 31 + j * 7 + 3) as u32) % vocab)
                .collect()
        })
        .collect();
    println!(
        "model: {} ({:.1}M parameters), {SEQS} prompts of 24-{} tokens, {NEW} new tokens each, greedy, {threads} threads",
        dir.display(),
        model.num_params() as f64 / 1e6,
        24 + SEQS - 1
    );
    let cfg = SampleConfig {
        temperature: 0.0,
        max_new_tokens: new_tokens(),
        max_batch: SEQS,
        ..SampleConfig::default()
    };
    // the best of three runs, as on the Python side: shared machines are noisy
    let mut ours = f64::INFINITY;
    let mut out = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        out = generate(&model, &prompts, 1, &[], None, &cfg).unwrap();
        ours = ours.min(t.elapsed().as_secs_f64());
    }
    let n: usize = out.iter().map(|s| s.tokens.len()).sum();
    let ours_tps = n as f64 / ours;
    println!(
        "stepkto:      {ours:7.2} s  {ours_tps:7.1} tokens/s  peak RSS {:.0} MB (this process, with the checkpoint written)",
        stepkto::model::cpu::alloc::peak_rss_mb()
    );
    if std::env::var_os("STEPKTO_BENCH_SKIP_PY").is_some() {
        return;
    }
    let py = std::env::var("STEPKTO_BENCH_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv-prm/bin/python", env!("CARGO_MANIFEST_DIR")));
    let pfile = dir.join("prompts.json");
    std::fs::write(&pfile, serde_json::to_string(&prompts).unwrap()).unwrap();
    let o = std::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/bench_sample.py"
        ))
        .args([
            dir.to_str().unwrap(),
            pfile.to_str().unwrap(),
            &threads.to_string(),
            &new_tokens().to_string(),
        ])
        .output();
    let o = match o {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return println!(
                "transformers: failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => return println!("transformers: cannot run {py}: {e} (set STEPKTO_BENCH_PYTHON)"),
    };
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let theirs = r["seconds"].as_f64().unwrap();
    let tps = r["tokens"].as_f64().unwrap() / theirs;
    let same = out
        .iter()
        .zip(r["generated"].as_array().unwrap())
        .filter(|(s, g)| {
            let g: Vec<u32> = g
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            s.tokens == g
        })
        .count();
    println!(
        "transformers: {theirs:7.2} s  {tps:7.1} tokens/s  peak RSS {:.0} MB (torch {}, left-padded batch of {SEQS})",
        r["peak_rss_mb"].as_f64().unwrap(),
        r["torch"].as_str().unwrap()
    );
    println!(
        "ratio: stepkto / transformers = {:.2}x tokens/s; identical greedy continuations: {same}/{SEQS}",
        ours_tps / tps
    );
}
