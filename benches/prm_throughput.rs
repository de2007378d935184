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
//! STEPKTO_BENCH_SKIP_PY (set: stepkto only) are for exploring.

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

    // stepkto: tokenize every item, queue them all, wait for the scores.
    let spec = ModelSpec {
        name: Some("bench".into()),
        dir: dir.clone(),
        recipe: None,
        max_context: None,
    };
    let prm = Arc::new(Prm::load(&spec, &Device::Cpu).unwrap());
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
    run(&parsed[..8]); // warm-up
    let busy0 = b.stats.busy_us.load(Ordering::Relaxed);
    let (comp0, real0, batches0) = (
        b.stats.computed_tokens.load(Ordering::Relaxed),
        b.stats.real_tokens.load(Ordering::Relaxed),
        b.stats.batches.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let (ours, tok_time) = run(&parsed);
    let ours_s = t0.elapsed().as_secs_f64();
    let busy = (b.stats.busy_us.load(Ordering::Relaxed) - busy0) as f64 / 1e6;
    let computed = b.stats.computed_tokens.load(Ordering::Relaxed) - comp0;
    let real = b.stats.real_tokens.load(Ordering::Relaxed) - real0;
    let batches = b.stats.batches.load(Ordering::Relaxed) - batches0;

    println!(
        "items: {} ({note}), {steps} steps, {real} tokens",
        items.len()
    );
    println!(
        "checkpoint: Qwen2-shaped, {:.1}M parameters, f32, {threads} threads",
        prm.params as f64 / 1e6
    );
    println!(
        "stepkto:      {:7.2} s  {:7.1} steps/s   (tokenize {:.2} s, forward {:.2} s in {batches} batches, {computed} token rows computed)",
        ours_s,
        steps as f64 / ours_s,
        tok_time.as_secs_f64(),
        busy,
    );

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
    let theirs = r["scores"].as_array().unwrap();
    let mut diff = 0f64;
    for (a, b) in ours.iter().zip(theirs) {
        for (x, y) in a.iter().zip(b.as_array().unwrap()) {
            diff = diff.max((*x as f64 - y.as_f64().unwrap()).abs());
        }
    }
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
    println!(
        "ratio: stepkto / transformers = {:.2}x (vs one-by-one {:.2}x, vs sorted batches {:.2}x)",
        best / ours_s,
        single / ours_s,
        batched / ours_s
    );
    println!("max |stepkto - transformers| over all {steps} step scores: {diff:.2e}");
}
