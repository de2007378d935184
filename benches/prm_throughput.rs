//! PRM throughput: stepkto (candle, CPU f32, its batcher) against Hugging Face
//! `transformers` (PyTorch, CPU, same thread count) on the same Qwen2-shaped checkpoint
//! (about 23M parameters, random init, written here) and the same ProcessBench items, in one
//! run. Prints steps per second for each and the ratio, where stepkto's time goes, and the
//! largest score difference between the two.
//!
//! Run: scripts/bench_prm.sh  (or `cargo bench --bench prm_throughput`). Items come from
//! ../shared/data/processbench/math.jsonl (the first 200); when that is absent, from
//! tests/data/processbench_sample.jsonl, and the report says so. The Python side needs
//! torch and transformers: STEPKTO_BENCH_PYTHON (default .venv-prm/bin/python).
//! STEPKTO_BENCH_ITEMS (200), STEPKTO_BENCH_MAX_BATCH_TOKENS (2048, the serve default) and
//! STEPKTO_BENCH_SKIP_PY (set: stepkto only) and STEPKTO_BENCH_SKIP_F32 (set: no f32 run
//! when the default is bf16x3) are for exploring.

#[path = "../tests/common/tiny.rs"]
mod tiny;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use candle_core::Device;
use serde_json::{Value, json};
use stepkto::devices::DevicePool;
use stepkto::judge::batcher::{BatchConfig, Batcher};
use stepkto::judge::prm::{ModelSpec, Prm};
use stepkto::model::cpu::CpuMatmul;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn items() -> (Vec<Value>, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data/processbench/math.jsonl");
    let (path, note) = if shared.is_file() {
        (
            shared,
            "ProcessBench math, first 200 items (../shared)".to_string(),
        )
    } else {
        (
            root.join("tests/data/processbench_sample.jsonl"),
            "../shared is absent: tests/data/processbench_sample.jsonl instead".to_string(),
        )
    };
    let v: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .take(env_or("STEPKTO_BENCH_ITEMS", 200))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (v, note)
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (items, note) = items();
    let steps: usize = items
        .iter()
        .map(|i| i["steps"].as_array().unwrap().len())
        .sum();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-prm");
    let patch = json!({"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                       "num_attention_heads": 8, "num_key_value_heads": 2});
    tiny::write_checkpoint_with("qwen-prm", &dir, false, &patch);
    let items_file = dir.join("items.jsonl");
    let lines: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    std::fs::write(&items_file, lines.join("\n")).unwrap();
    let parsed: Vec<(String, Vec<String>)> = items
        .iter()
        .map(|v| {
            let s = v["steps"].as_array().unwrap();
            (
                v["problem"].as_str().unwrap().to_string(),
                s.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();

    // stepkto with the serve default (`auto`: bf16x3 on AMX), and f32 where that differs
    let mut engines = vec![CpuMatmul::Auto.resolve().unwrap()];
    if engines[0] != CpuMatmul::F32 && std::env::var_os("STEPKTO_BENCH_SKIP_F32").is_none() {
        engines.push(CpuMatmul::F32);
    }
    let mut ours = Vec::new();
    for (i, &m) in engines.iter().enumerate() {
        let run = run_stepkto(&dir, &parsed, m);
        if i == 0 {
            println!(
                "items: {} ({note}), {steps} steps, {} tokens",
                items.len(),
                run.tokens
            );
            println!(
                "checkpoint: Qwen2-shaped, {:.1}M parameters, f32 weights, {threads} threads",
                run.params as f64 / 1e6
            );
        }
        println!(
            "stepkto {:<8} {:7.2} s  {:7.1} steps/s   (tokenize {:.2} s, forward {:.2} s in {} batches, {} token rows computed)",
            format!("{}:", m.name()),
            run.secs,
            steps as f64 / run.secs,
            run.tokenize_s,
            run.busy_s,
            run.batches,
            run.computed,
        );
        ours.push((m, run));
    }
    if ours.len() == 2 {
        let d = max_diff(&ours[0].1.scores, &ours[1].1.scores);
        println!("max |bf16x3 - f32| over all {steps} step scores: {d:.2e}");
    }

    if std::env::var_os("STEPKTO_BENCH_SKIP_PY").is_some() {
        return;
    }
    let py = std::env::var("STEPKTO_BENCH_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv-prm/bin/python", env!("CARGO_MANIFEST_DIR")));
    let out = std::process::Command::new(&py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_prm.py"))
        .arg(&dir)
        .arg(&items_file)
        .arg(threads.to_string())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            println!(
                "transformers: failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        Err(e) => {
            println!("transformers: cannot run {py}: {e} (set STEPKTO_BENCH_PYTHON)");
            return;
        }
    };
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let single = r["single_s"].as_f64().unwrap();
    let batched = r["batched_s"].as_f64().unwrap();
    let theirs: Vec<Vec<f32>> = r["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    println!(
        "transformers: {:7.2} s  {:7.1} steps/s   one item per pass (model card usage; torch {}, {} threads, attention {}, tokenize {:.2} s)",
        single,
        steps as f64 / single,
        r["torch"].as_str().unwrap_or("?"),
        r["threads"],
        r["attn"].as_str().unwrap_or("?"),
        r["tokenize_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "transformers: {:7.2} s  {:7.1} steps/s   padded batches of 8, sorted by length",
        batched,
        steps as f64 / batched
    );
    let best = single.min(batched);
    for (m, run) in &ours {
        println!(
            "ratio {:<8} stepkto / transformers = {:.2}x (vs one-by-one {:.2}x, vs sorted batches {:.2}x); max |stepkto - transformers| over all {steps} step scores: {:.2e}",
            format!("{}:", m.name()),
            best / run.secs,
            single / run.secs,
            batched / run.secs,
            max_diff(&run.scores, &theirs),
        );
    }
}

/// Largest absolute difference between two score lists of the same shape.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let mut d = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            d = d.max((*p as f64 - *q as f64).abs());
        }
    }
    d
}

fn spec(dir: &Path, m: CpuMatmul) -> ModelSpec {
    ModelSpec {
        name: Some("bench".into()),
        dir: dir.to_path_buf(),
        recipe: None,
        max_context: None,
        cpu_matmul: m,
    }
}

struct Run {
    secs: f64,
    /// Tokens of all items (the real tokens the batcher saw).
    tokens: u64,
    tokenize_s: f64,
    busy_s: f64,
    batches: u64,
    computed: u64,
    params: usize,
    scores: Vec<Vec<f32>>,
}

/// stepkto as served: tokenize every item, queue them all on the batcher, wait for the
/// scores (after a warm-up of eight items).
fn run_stepkto(dir: &Path, items: &[(String, Vec<String>)], m: CpuMatmul) -> Run {
    let prm = Arc::new(Prm::load(&spec(dir, m), &Device::Cpu).unwrap());
    let pool = DevicePool::new("cpu").unwrap();
    let cfg = BatchConfig {
        max_batch_tokens: env_or("STEPKTO_BENCH_MAX_BATCH_TOKENS", 2048),
        max_queue: 4096,
    };
    let b = Batcher::spawn(prm.clone(), pool.lease("bench"), cfg).unwrap();
    let run = |its: &[(String, Vec<String>)]| -> (Vec<Vec<f32>>, Duration) {
        let t0 = Instant::now();
        let toks: Vec<_> = its
            .iter()
            .map(|(p, s)| prm.tokenize(p, s).unwrap())
            .collect();
        let tok_time = t0.elapsed();
        let far = Instant::now() + Duration::from_secs(3600);
        let rx = b.submit(toks, far, 3_600_000).unwrap();
        (
            rx.into_iter()
                .map(|r| r.blocking_recv().unwrap().unwrap())
                .collect(),
            tok_time,
        )
    };
    run(&items[..8.min(items.len())]);
    let stat = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (busy0, comp0, real0, batches0) = (
        stat(&b.stats.busy_us),
        stat(&b.stats.computed_tokens),
        stat(&b.stats.real_tokens),
        stat(&b.stats.batches),
    );
    let t0 = Instant::now();
    let (scores, tok_time) = run(items);
    Run {
        secs: t0.elapsed().as_secs_f64(),
        tokens: stat(&b.stats.real_tokens) - real0,
        tokenize_s: tok_time.as_secs_f64(),
        busy_s: (stat(&b.stats.busy_us) - busy0) as f64 / 1e6,
        batches: stat(&b.stats.batches) - batches0,
        computed: stat(&b.stats.computed_tokens) - comp0,
        params: prm.params,
        scores,
    }
}
