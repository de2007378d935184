//! Dashboard load with 100,000 judged samples and 50,000 metric steps in the database
//! (issue 13's bar: the overview and a job's curves load in under 1 s). Fills a SQLite
//! database (and PostgreSQL when STEPKTO_TEST_PG is set): 20 eval records of 5,000 samples
//! (three steps each, a quarter flawed) and one job with 50,000 metric rows of 11 metrics.
//! Times the JSON endpoints the page calls (median and max of 7), against the anchor of a
//! client without server-side bucketing (every row through `/metrics`, 1,000 per page,
//! as fast as the server pages them), and, when Chromium and
//! chromedriver are installed, the page itself: from navigation to the overview table, and
//! to the run's charts.
//!
//! Run: `cargo bench --bench dashboard_load`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{get, spawn_jobs_app};
use fantoccini::Locator;
use serde_json::{Value, json};
use stepkto::api::Service;
use stepkto::jobs::records::{NewEval, RecordLimits, build};
use stepkto::store::Store;
use stepkto::store::jobs::MetricRow;

const RECORDS: usize = 20;
const PER_RECORD: usize = 5_000;
const STEPS: i64 = 50_000;

fn sample(r: usize, i: usize) -> Value {
    let flawed = i.is_multiple_of(4);
    let right = !i.is_multiple_of(5);
    json!({"id": format!("r{r}-{i}"), "problem": format!("Problem {i}: what is {i} * 3?"),
        "final_answer_correct": right, "extracted": (3 * i).to_string(), "answer": (3 * i).to_string(),
        "steps": [
            {"text": format!("First, {i} * 3 = {}.", 3 * i), "correct": true, "score": 0.91, "symbolic": "verified"},
            {"text": "Then we check the units.", "correct": !flawed, "score": if flawed { 0.21 } else { 0.77 }, "symbolic": "unknown"},
            {"text": format!("So the answer is {}.", 3 * i), "correct": null, "symbolic": "unknown"}]})
}

async fn fill(url: &str) -> (String, String) {
    let store = Store::open(url).unwrap();
    store.migrate().await.unwrap();
    let t0 = Instant::now();
    let mut first = String::new();
    for r in 0..RECORDS {
        let e = NewEval {
            model: format!("model-{}", r / 4),
            dataset: "math500".into(),
            kind: "generate".into(),
            round: Some((r % 4) as i64),
            metrics: json!({"pass_at_1": 0.8, "maj_at_k": 0.85})
                .as_object()
                .unwrap()
                .clone(),
            counts: json!({"problems": PER_RECORD, "k": 8})
                .as_object()
                .unwrap()
                .clone(),
            samples: (0..PER_RECORD).map(|i| sample(r, i)).collect(),
        };
        let (rec, rows) =
            build(format!("ev-bench-{r}"), None, e, &RecordLimits::default()).unwrap();
        store.insert_eval(&rec, &rows).await.unwrap();
        if r == 0 {
            first = rec.id.clone();
        }
    }
    store
        .insert_job("job_bench", "step-kto", "{}")
        .await
        .unwrap();
    let rows: Vec<MetricRow> = (1..=STEPS)
        .map(|s| {
            let x = s as f64;
            MetricRow {
                step: s,
                round: 1 + s / 12_500,
                metrics: json!({"loss": 0.7 / (1.0 + x / 5000.0) + 0.01 * (x * 0.37).sin(), "kl": 0.001 * x.sqrt(),
                    "grad_norm": 1.0 + (x * 0.11).cos(), "learning_rate": 1e-5, "logps/chosen": -40.0 + x / 5000.0,
                    "logps/rejected": -45.0 - x / 5000.0, "rewards/chosen": x / 1e5, "rewards/rejected": -x / 1e5,
                    "rewards/margins": 2.0 * x / 1e5, "step_term": 0.5 - x / 2e5, "tokens": 4096}),
            }
        })
        .collect();
    for chunk in rows.chunks(5_000) {
        store.insert_metrics("job_bench", chunk).await.unwrap();
    }
    println!(
        "filled {} samples in {RECORDS} records and {STEPS} metric rows in {:.1} s",
        RECORDS * PER_RECORD,
        t0.elapsed().as_secs_f64()
    );
    store.close().await;
    (first, "job_bench".into())
}

async fn timed(addr: std::net::SocketAddr, path: &str) -> (f64, f64, usize) {
    let mut t = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let t0 = Instant::now();
        let r = get(addr, path).await;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.status, 200, "{path}");
        bytes = r.body.len();
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[3], t[6], bytes)
}

async fn one(db: &str, url: String) {
    let (rec, job) = fill(&url).await;
    let app = spawn_jobs_app(url, Service::default(), None).await;
    let a = app.addr;
    println!("\n{db}: endpoint                                      median ms   max ms     bytes");
    let paths = [
        "/v1/overview".to_string(),
        format!("/v1/train/{job}/curves?points=1000"),
        format!("/v1/train/{job}"),
        format!("/v1/overview?job={job}"),
        format!("/v1/evals/{rec}"),
        format!("/v1/evals/{rec}/samples?filter=flawed&limit=50&offset=900"),
        format!("/v1/evals/{rec}/samples?limit=50&offset=4950"),
    ];
    let mut curves = (0.0, 0);
    for p in &paths {
        let (med, max, bytes) = timed(a, p).await;
        println!("{db}: {p:<46} {med:>9.1} {max:>8.1} {bytes:>9}");
        if p.ends_with("points=1000") {
            curves = (med, bytes);
        }
    }
    // the anchor: every row, page by page
    let mut t = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let t0 = Instant::now();
        let (mut since, mut n) = (0i64, 0usize);
        bytes = 0;
        loop {
            let r = get(
                a,
                &format!("/v1/train/{job}/metrics?since={since}&limit=1000"),
            )
            .await;
            bytes += r.body.len();
            let rows = r.json();
            let rows = rows.as_array().unwrap();
            if rows.is_empty() {
                break;
            }
            n += rows.len();
            since = rows.last().unwrap()["step"].as_i64().unwrap();
        }
        assert_eq!(n as i64, STEPS);
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{db}: every metric row through /metrics (50 pages)        {:>9.1} {:>8.1} {bytes:>9}",
        t[1], t[2]
    );
    println!(
        "{db}: curves bucketed on the server vs every row paged: x{:.1} faster, x{:.0} fewer bytes",
        t[1] / curves.0,
        bytes as f64 / curves.1 as f64
    );

    if let Some(b) = common::browser::browser().await {
        let c = &b.client;
        let base = format!("http://{a}/");
        for (name, url, css) in [
            ("overview", base.clone(), "#overview tbody tr"),
            ("run curves", format!("{base}#/run/{job}"), "#charts canvas"),
            (
                "solution",
                format!("{base}#/record/{rec}?filter=flawed&i=900"),
                "#sample .step",
            ),
        ] {
            let mut t = Vec::new();
            for _ in 0..3 {
                c.goto("about:blank").await.unwrap();
                let t0 = Instant::now();
                c.goto(&url).await.unwrap();
                c.wait()
                    .at_most(Duration::from_secs(30))
                    .for_element(Locator::Css(css))
                    .await
                    .unwrap();
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{db}: page {name:<12} navigation to `{css}` shown: median {:.0} ms, max {:.0} ms (3 loads)",
                t[1], t[2]
            );
        }
    } else {
        println!("{db}: no chromium/chromedriver: page loads not measured");
    }
    app.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or("model name: ?");
    println!("dashboard load bench: {model}");
    one("sqlite", common::sqlite_url()).await;
    if let Some(admin) = common::pg_admin_url() {
        one("postgres", common::pg_fresh_db(&admin).await).await;
    }
}
