//! Load on the reward paths (issue 14, item 3): the release binary on loopback with its
//! SQLite cache, driven by keep-alive connections from this process.
//! - `/v1/verify` single items and 64-item batches, cold (every pair new) and cached (the
//!   same pairs again), at 1, 16, 128 and 1,024 connections: throughput, p50 / p99 / p99.9;
//! - the OpenRLHF pattern: 10,000 one-sample `/get_reward` requests, 256 in flight;
//! - the anchor: math-verify 0.9.0 in a process pool of 2 workers (the way verl runs it)
//!   on the same pairs, when STEPKTO_BENCH_PYTHON names a Python with math-verify
//!   (scripts/bench_outcome.sh makes .venv-bench); the ratio is printed.
//!
//! Pairs: tests/data/pairs_mathverify.jsonl (284 public Math-Verify test pairs), made
//! unique per request for the cold runs. Every request count is bounded (STEPKTO_BENCH_SCALE
//! scales them). Run: `scripts/bench_load.sh` (it raises the open-file limit that 1,024
//! connections on both ends need, and makes the math-verify venv).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

fn pairs() -> Vec<(String, String)> {
    include_str!("../tests/data/pairs_mathverify.jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["gold"].as_str().unwrap().to_string(),
                v["prediction"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn send(s: &mut Sender, addr: SocketAddr, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    s.ready().await.unwrap();
    let req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

struct Run {
    secs: f64,
    lat_ms: Vec<f64>,
    errors: usize,
}

/// `total` requests over `conns` connections; `body(i)` makes request i.
async fn drive(
    addr: SocketAddr,
    path: &'static str,
    conns: usize,
    total: usize,
    body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..conns {
        senders.push(connect(addr).await);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut s in senders {
        let (next, errors, body) = (next.clone(), errors.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                let (status, _) = send(&mut s, addr, path, body(i)).await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                if status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut lat_ms = Vec::new();
    for t in tasks {
        lat_ms.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    lat_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Run {
        secs,
        lat_ms,
        errors: errors.load(Ordering::Relaxed),
    }
}

fn q(v: &[f64], p: f64) -> f64 {
    v[(((p / 100.0) * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn row(name: &str, conns: usize, items_per_req: usize, r: &Run) -> f64 {
    let n = r.lat_ms.len();
    let items_s = (n * items_per_req) as f64 / r.secs;
    println!(
        "{name:<28} {conns:>5} {n:>7} {:>10.0} {items_s:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>6}",
        n as f64 / r.secs,
        q(&r.lat_ms, 50.0),
        q(&r.lat_ms, 99.0),
        q(&r.lat_ms, 99.9),
        r.errors
    );
    items_s
}

/// (pairs/s, p50, p99, p99.9 ms): the percentiles are each pair's time inside its worker
/// (the pool has no queue of its own to wait in beyond the two workers).
fn mathverify_pool(
    python: &str,
    pairs: &[(String, String)],
    n: usize,
) -> Option<(f64, f64, f64, f64)> {
    let dir = common::tiny::temp_dir("mv-pool");
    let file = dir.join("pairs.json");
    let list: Vec<_> = (0..n).map(|i| &pairs[i % pairs.len()]).collect();
    std::fs::write(&file, serde_json::to_string(&list).unwrap()).unwrap();
    let script = r#"
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
from math_verify import parse, verify
def check(p):
    g, c = p
    t = time.perf_counter()
    try:
        ok = bool(verify(parse("$" + g + "$"), parse(c)))
    except Exception:
        ok = False
    return ok, time.perf_counter() - t
if __name__ == "__main__":
    pairs = json.load(open(sys.argv[1]))
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(check, pairs[:8]))  # workers up and imported
        t0 = time.perf_counter()
        out = list(pool.map(check, pairs, chunksize=1))
        rate = len(pairs) / (time.perf_counter() - t0)
    ms = sorted(1e3 * s for _, s in out)
    q = lambda f: ms[min(len(ms) - 1, round(f * (len(ms) - 1)))]
    print(rate, q(0.5), q(0.99), q(0.999))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "math-verify pool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 4).then(|| (v[0], v[1], v[2], v[3]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::var("STEPKTO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);
    let dir = common::tiny::temp_dir("reward-load");
    let args: Vec<String> = [
        "--database-url".to_string(),
        format!("sqlite://{}", dir.join("db.sqlite").display()),
        "--jobs-dir".into(),
        dir.join("jobs").display().to_string(),
        "--max-jobs".into(),
        "0".into(),
        "--max-inflight".into(),
        "2048".into(),
    ]
    .to_vec();
    // STEPKTO_BENCH_BIN: another build of the server (an earlier commit's, for an A/B of
    // two builds under the same driver on the same machine)
    let bin = std::env::var("STEPKTO_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stepkto").to_string());
    assert!(
        std::path::Path::new(&bin).is_file(),
        "STEPKTO_BENCH_BIN: {bin} is not a file"
    );
    let log = dir.join("server.log");
    let port = common::bin::free_port();
    let mut s = common::bin::start_bin(std::path::Path::new(&bin), &log, port, &args).await;
    let a = s.addr;
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("?")
        .to_string();
    println!(
        "reward load bench: {model}; {} cores; loopback, SQLite cache; server {bin}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<28} {:>5} {:>7} {:>10} {:>10} {:>8} {:>8} {:>8} {:>6}",
        "scenario", "conns", "reqs", "req/s", "items/s", "p50 ms", "p99 ms", "p99.9", "non200"
    );
    let ps = Arc::new(pairs());
    let mut cold_single_16 = 0.0;
    // STEPKTO_BENCH_ONLY=openrlhf runs the OpenRLHF pattern and the anchor alone
    let only_openrlhf = std::env::var("STEPKTO_BENCH_ONLY").is_ok_and(|v| v == "openrlhf");
    // STEPKTO_BENCH_CONNS=16,128 runs the /v1/verify scenarios at those counts only
    let conn_counts: Vec<usize> = match std::env::var("STEPKTO_BENCH_CONNS") {
        _ if only_openrlhf => vec![],
        Ok(v) => v
            .split(',')
            .map(|c| match c.trim().parse() {
                Ok(n) if n > 0 => n,
                _ => panic!("STEPKTO_BENCH_CONNS: {c:?} is not a positive connection count"),
            })
            .collect(),
        Err(_) => vec![1, 16, 128, 1024],
    };
    for (k, &conns) in conn_counts.iter().enumerate() {
        let total = n(2000).max(2 * conns);
        let ps1 = ps.clone();
        // cold: pair i with a tag no earlier request had
        let tag = format!("c{k}");
        let body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            let (g, p) = &ps1[i % ps1.len()];
            serde_json::to_vec(&json!({"reference": g, "candidate": format!("Attempt {tag}-{i}: the answer is $\\boxed{{{p}}}$.")})).unwrap()
        });
        let r = drive(a, "/v1/verify", conns, total, body).await;
        let ips = row("verify single, cold", conns, 1, &r);
        if conns == 16 {
            cold_single_16 = ips;
        }
        // cached: the same 284 pairs again and again (after one warm pass)
        let ps2 = ps.clone();
        let body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            let (g, p) = &ps2[i % ps2.len()];
            serde_json::to_vec(&json!({"reference": g, "candidate": p})).unwrap()
        });
        drive(a, "/v1/verify", 4, ps.len(), body.clone()).await;
        let r = drive(a, "/v1/verify", conns, total, body).await;
        row("verify single, cached", conns, 1, &r);
        // 64-item batches
        let bt = (total / 16).max(conns);
        for cached in [false, true] {
            let ps3 = ps.clone();
            let tag = format!("b{k}{cached}");
            let body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
                let items: Vec<Value> = (0..64)
                    .map(|j| {
                        let (g, p) = &ps3[(i * 64 + j) % ps3.len()];
                        if cached {
                            json!({"reference": g, "candidate": p})
                        } else {
                            json!({"reference": g, "candidate": format!("Attempt {tag}-{i}-{j}: the answer is $\\boxed{{{p}}}$.")})
                        }
                    })
                    .collect();
                serde_json::to_vec(&json!({"items": items})).unwrap()
            });
            let r = drive(a, "/v1/verify", conns, bt, body).await;
            row(
                if cached {
                    "verify 64-batch, cached"
                } else {
                    "verify 64-batch, cold"
                },
                conns,
                64,
                &r,
            );
        }
    }
    // STEPKTO_BENCH_PREFILL=N: N cold verdicts stored first (64-batches), for the OpenRLHF
    // pattern on a cache that already holds them
    let prefill: usize = std::env::var("STEPKTO_BENCH_PREFILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if prefill > 0 {
        let ps5 = ps.clone();
        let body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
            let items: Vec<Value> = (0..64)
                .map(|j| {
                    let (g, p) = &ps5[(i * 64 + j) % ps5.len()];
                    json!({"reference": g, "candidate": format!("Prefill {i}-{j}: $\\boxed{{{p}}}$")})
                })
                .collect();
            serde_json::to_vec(&json!({"items": items})).unwrap()
        });
        let r = drive(a, "/v1/verify", 16, prefill.div_ceil(64), body).await;
        row("prefill 64-batch, cold", 16, 64, &r);
    }
    // OpenRLHF: one sample per request, many at once
    let ps4 = ps.clone();
    let body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> = Arc::new(move |i| {
        let (g, p) = &ps4[i % ps4.len()];
        let prompt = "<|im_start|>user\nSolve it.<|im_end|>\n<|im_start|>assistant\n";
        serde_json::to_vec(&json!({"query": [format!("{prompt}The answer is \\boxed{{{p}}} ({i})<|im_end|>")], "prompts": [prompt], "labels": [g]})).unwrap()
    });
    let total = n(10_000);
    let r = drive(a, "/get_reward", 256, total, body).await;
    let openrlhf = row("OpenRLHF /get_reward x1", 256, 1, &r);
    common::bin::kill(&mut s);

    match std::env::var("STEPKTO_BENCH_PYTHON") {
        Ok(py) => match mathverify_pool(&py, &ps, n(2000)) {
            Some((mv, p50, p99, p999)) => {
                println!(
                    "math-verify 0.9.0, ProcessPoolExecutor(2): {mv:.0} pairs/s on the same pairs; per pair in a worker p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms"
                );
                println!(
                    "ratios: verify single cold at 16 connections x{:.1}; OpenRLHF pattern x{:.1}",
                    cold_single_16 / mv,
                    openrlhf / mv
                );
            }
            None => println!("math-verify pool did not run"),
        },
        Err(_) => println!(
            "STEPKTO_BENCH_PYTHON unset: the math-verify anchor is not run (scripts/bench_outcome.sh makes .venv-bench)"
        ),
    }
}
