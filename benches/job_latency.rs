//! `/v1/verify` and `/v1/judge` latency with and without a training job on the same CPU
//! (issue 12): the release binary serves a ~23M-parameter PRM (the PRM bench's Qwen2 shape,
//! random init, written here); one client sends cold requests one at a time (each differs,
//! so none is a cache hit), first with no job, then while a Step-KTO job trains a ~10M
//! Llama and labels its steps with that same served PRM, until the job ends. Run once per
//! `--train-threads` value. Each latency is filed under the job's phase (sampling,
//! judging, reference, training, eval; polled every 50 ms, written by the worker every
//! second) when the request started and ended; the table gives p50 / p99 / max per endpoint and phase and the ratios to no job.
//!
//! Run: `cargo bench --bench job_latency` (STEPKTO_BENCH_THREADS="1 2" picks the
//! --train-threads values; STEPKTO_BENCH_REQUESTS=300 the verify requests without a job;
//! a judge request follows every fifth verify request).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use common::bin::{self, free_port, kill};
use common::{get, post, request_with, tiny};
use serde_json::{Value, json};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default, Debug)]
struct Lat {
    verify: Vec<f64>,
    judge: Vec<f64>,
}

/// Judge items: ProcessBench problems with their steps, from the test fixture.
fn judge_items() -> Vec<(String, Vec<String>)> {
    let text = include_str!("../tests/data/processbench_sample.jsonl");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let steps: Vec<String> = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .take(6)
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            (v["problem"].as_str().unwrap().to_string(), steps)
        })
        .collect()
}

/// `n` verify requests, and a judge request after every fifth, one at a time (stopping
/// early when `phase()` says the job has ended); each latency is filed under the phase the
/// job was in at its start and its end (`idle` without a job; a request that spans two
/// phases is left out).
async fn measure(
    addr: SocketAddr,
    n: usize,
    tag: &str,
    phase: &dyn Fn() -> Option<String>,
    items: &[(String, Vec<String>)],
    out: &mut BTreeMap<String, Lat>,
) {
    for i in 0..n {
        // distinct pairs: a fraction against an equal one written another way
        let body = json!({"reference": format!("\\frac{{{}}}{{7}}", i + 1),
            "candidate": format!("so the answer is \\boxed{{\\frac{{{}}}{{14}}}} ({tag})", 2 * (i + 1))});
        let Some(p0) = phase() else { return };
        let t0 = Instant::now();
        let r = post(addr, "/v1/verify", body).await;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert_eq!(r.json()["equivalent"], true);
        assert_eq!(r.json()["cached"], false);
        if phase().as_ref() == Some(&p0) {
            out.entry(p0).or_default().verify.push(dt);
        }
        if i % 5 == 0 {
            let (p, s) = &items[i / 5 % items.len()];
            let body = json!({"model": "prm", "items": [{"problem": format!("{p} ({tag} {i})"), "steps": s}]});
            let Some(p0) = phase() else { return };
            let t0 = Instant::now();
            let r = post(addr, "/v1/judge", body).await;
            let dt = t0.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.status, 200, "{:?}", r.json());
            assert_eq!(r.json()["items"][0]["cached"], false);
            if phase().as_ref() == Some(&p0) {
                out.entry(p0).or_default().judge.push(dt);
            }
        }
    }
}

fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        pct(v, 50.0),
        pct(v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

async fn one_run(dir: &Path, threads: usize, n: usize, prm: &Path, policy: &Path) {
    let run = dir.join(format!("threads-{threads}"));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    let args: Vec<String> = [
        "--database-url",
        &format!("sqlite://{}", run.join("db.sqlite").display()),
        "--jobs-dir",
        &run.join("jobs").display().to_string(),
        "--model",
        &format!("prm={}", prm.display()),
        "--train-threads",
        &threads.to_string(),
        "--job-poll-ms",
        "100",
        // progress (and so the phase) is written at every lease renewal, a third of this
        "--job-lease-secs",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = bin::start(&run.join("server.log"), free_port(), &args).await;
    let a = s.addr;
    let items = judge_items();
    // warm-up: first requests pay for lazy initialisation
    let mut lat: BTreeMap<String, Lat> = BTreeMap::new();
    measure(a, 20, "warm", &|| Some("warm".into()), &items, &mut lat).await;
    lat.clear();
    measure(a, n, "idle", &|| Some("no job".into()), &items, &mut lat).await;

    let problems = include_str!("../tests/data/math500_head60.jsonl");
    let up = request_with(a, "POST", "/v1/datasets", problems, &[]).await;
    assert_eq!(up.status, 201, "{:?}", up.json());
    let pid = up.json()["id"].as_str().unwrap().to_string();
    let job = json!({"method": "step-kto", "model": policy, "problems": pid, "system": "",
        "rounds": 1, "epochs": 4, "seed": 1, "micro_batch": 8,
        "sample": {"samples": 2, "max_batch": 16, "max_new_tokens": 64, "temperature": 1.0},
        "optim": {"learning_rate": 1e-4}, "step": {"lambda_step": 1.0},
        "judge": {"model": "prm"}});
    let r = post(a, "/v1/train", job).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // the job's phase, polled every 50 ms (None once it has ended)
    let phase: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (phase, done, id) = (phase.clone(), done.clone(), id.clone());
        tokio::spawn(async move {
            let mut started = false;
            while !done.load(Ordering::SeqCst) {
                let j = get(a, &format!("/v1/train/{id}")).await.json();
                let now = (j["state"] == "running").then(|| {
                    format!(
                        "job: {}",
                        j["progress"]["phase"].as_str().unwrap_or("starting")
                    )
                });
                started |= now.is_some();
                if started && now.is_none() {
                    done.store(true, Ordering::SeqCst);
                }
                *phase.lock().unwrap() = now;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let t0 = Instant::now();
    while phase.lock().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the job did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t_job = Instant::now();
    let p2 = phase.clone();
    measure(
        a,
        1_000_000,
        "job",
        &move || p2.lock().unwrap().clone(),
        &items,
        &mut lat,
    )
    .await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    let j = get(a, &format!("/v1/train/{id}")).await.json();
    kill(&mut s);

    let secs = j["finished_at"].as_i64().unwrap_or(0) - j["started_at"].as_i64().unwrap_or(0);
    println!(
        "\n--train-threads {threads}: the job {} in {secs} s (start to finish, whole seconds); {:.0} s of requests",
        j["state"],
        t_job.elapsed().as_secs_f64()
    );
    println!(
        "endpoint    phase               n    p50 ms   p99 ms   max ms   p50 / no job   p99 / no job"
    );
    let base: BTreeMap<&str, (f64, f64)> = {
        let idle = lat.get_mut("no job").unwrap();
        let v = summary(&mut idle.verify);
        let jg = summary(&mut idle.judge);
        [("/v1/verify", (v.0, v.1)), ("/v1/judge", (jg.0, jg.1))]
            .into_iter()
            .collect()
    };
    for name in ["/v1/verify", "/v1/judge"] {
        for (ph, l) in lat.iter_mut() {
            let v = if name == "/v1/verify" {
                &mut l.verify
            } else {
                &mut l.judge
            };
            if v.is_empty() {
                continue;
            }
            let n = v.len();
            let (p50, p99, max) = summary(v);
            let (b50, b99) = base[name];
            println!(
                "{name:<11} {ph:<16} {n:>6} {p50:>9.2} {p99:>8.2} {max:>8.2} {:>14.2} {:>14.2}",
                p50 / b50,
                p99 / b99
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-job-latency");
    std::fs::create_dir_all(&dir).unwrap();
    let prm = dir.join("prm");
    let patch = json!({"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
                       "num_attention_heads": 8, "num_key_value_heads": 2});
    tiny::write_checkpoint_with("qwen-prm", &prm, false, &patch);
    let policy = dir.join("policy");
    let patch = json!({"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 6});
    tiny::write_checkpoint_with("rlhflow", &policy, false, &patch);
    let n = env_or("STEPKTO_BENCH_REQUESTS", 300);
    let threads: Vec<usize> = std::env::var("STEPKTO_BENCH_THREADS")
        .unwrap_or_else(|_| "1 2".into())
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("model name: ?");
    let amx = cpu.contains(" amx_tile");
    println!(
        "job latency bench: {} cores, {model}, AMX {}; {n} verify and {} judge requests per phase, one client",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if amx { "yes" } else { "no" },
        n.div_ceil(5)
    );
    for t in threads {
        one_run(&dir, t, n, &prm, &policy).await;
    }
}
