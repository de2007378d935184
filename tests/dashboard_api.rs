//! The JSON the dashboard reads (issue 13), against SQLite and PostgreSQL: the overview's
//! flawed-step rates and Wilson intervals (against values computed independently, by
//! tests/data/wilson_reference.py), grouping, filters, the comparison of two rows, a job's
//! curves cut down on the server, the live job stream; and the page itself with its
//! Content-Security-Policy.

mod common;

use std::time::Duration;

use common::{Db, db_url, get, post, spawn_jobs_app};
use serde_json::{Value, json};
use stepkto::api::Service;
use stepkto::store::Store;
use stepkto::store::jobs::MetricRow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (flawed, n, low, high) from tests/data/wilson_reference.py.
const WILSON: [(u64, u64, f64, f64); 7] = [
    (0, 10, 0.0000000000, 0.2775327999),
    (5, 10, 0.2365930905, 0.7634069095),
    (10, 10, 0.7224672001, 1.0000000000),
    (1, 40, 0.0044268315, 0.1288136896),
    (13, 40, 0.2008450223, 0.4798225381),
    (81, 263, 0.2552885199, 0.3662095770),
    (199, 1000, 0.1754272058, 0.2248765028),
];

/// A record of `flawed` flawed and `n - flawed` correct solutions, plus 3 wrong ones.
fn record(model: &str, round: i64, flawed: u64, n: u64) -> Value {
    let mut samples = Vec::new();
    for i in 0..n {
        let bad = i < flawed;
        samples.push(json!({"id": format!("s{i}"), "final_answer_correct": true,
            "steps": [{"text": "a", "correct": true}, {"text": "b", "correct": !bad}]}));
    }
    for i in 0..3 {
        samples.push(json!({"id": format!("w{i}"), "final_answer_correct": false, "steps": []}));
    }
    json!({"model": model, "dataset": "math500", "kind": "generate", "round": round,
        "metrics": {"pass_at_1": n as f64 / (n + 3) as f64, "maj_at_k": 0.5},
        "counts": {"problems": n + 3, "k": 8}, "samples": samples})
}

async fn overview_and_curves(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_jobs_app(url.clone(), Service::default(), None).await;
    let a = app.addr;
    let empty = get(a, "/v1/overview").await.json();
    assert_eq!(empty["rows"], json!([]));

    let mut ids = Vec::new();
    for (i, (x, n, _, _)) in WILSON.iter().enumerate() {
        let r = post(a, "/v1/evals", record(&format!("m{i}"), 1, *x, *n)).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let o = get(a, "/v1/overview").await.json();
    let rows = o["rows"].as_array().unwrap();
    assert_eq!(rows.len(), WILSON.len());
    assert_eq!(o["z"], 1.959963984540054);
    for (i, (x, n, lo, hi)) in WILSON.iter().enumerate() {
        let r = rows.iter().find(|r| r["model"] == format!("m{i}")).unwrap();
        assert_eq!(r["n"], *n, "{r}");
        assert_eq!(r["flawed"], *x);
        assert_eq!(r["wrong"], 3);
        let rate = r["flawed_rate"].as_f64().unwrap();
        assert!((rate - *x as f64 / *n as f64).abs() < 1e-12);
        let (l, h) = (
            r["ci_low"].as_f64().unwrap(),
            r["ci_high"].as_f64().unwrap(),
        );
        assert!(
            (l - lo).abs() < 1e-9 && (h - hi).abs() < 1e-9,
            "{x}/{n}: [{l}, {h}] vs [{lo}, {hi}]"
        );
        assert_eq!(r["small_n"], *n < 30);
        assert_eq!(r["k"], 8);
        assert_eq!(r["maj_at_k"], 0.5);
        assert_eq!(r["record_id"], ids[i].as_str());
    }

    // a newer record of the same model, round, dataset and kind replaces the row
    let again = post(a, "/v1/evals", record("m0", 1, 2, 10)).await;
    let newest = again.json()["id"].as_str().unwrap().to_string();
    let o = get(a, "/v1/overview?model=m0").await.json();
    assert_eq!(o["rows"].as_array().unwrap().len(), 1);
    assert_eq!(o["rows"][0]["records"], 2);
    assert_eq!(o["rows"][0]["flawed"], 2);
    assert_eq!(o["rows"][0]["record_id"], newest.as_str());
    let o = get(a, "/v1/overview?model=m0&round_bogus=1").await;
    assert!(o.status == 400 || o.status == 422);

    // compare: 13/40 against 1/40 do not overlap; 5/10 against 0/10 do
    let c = get(
        a,
        &format!("/v1/overview/compare?a={}&b={}", ids[3], ids[4]),
    )
    .await
    .json();
    assert!((c["flawed_rate_difference"].as_f64().unwrap() - (13.0 - 1.0) / 40.0).abs() < 1e-12);
    assert_eq!(c["intervals_overlap"], false);
    let c = get(
        a,
        &format!("/v1/overview/compare?a={}&b={}", ids[1], ids[0]),
    )
    .await
    .json();
    assert_eq!(c["intervals_overlap"], true);
    assert_eq!(
        get(a, &format!("/v1/overview/compare?a={}&b=ev-nope", ids[0]))
            .await
            .status,
        404
    );
    assert!(get(a, "/v1/overview/compare?a=x").await.status >= 400);

    // curves: 95 metric rows cut to 10 points of 10 steps (the last holds 5)
    let store = Store::open(&url).unwrap();
    store.migrate().await.unwrap();
    store.insert_job("job_curves", "kto", "{}").await.unwrap();
    let rows: Vec<MetricRow> = (1..=95)
        .map(|s| MetricRow {
            step: s,
            round: 1 + (s > 50) as i64,
            metrics: json!({"loss": s as f64, "kl": 0.5, "learning_rate": 1e-5}),
        })
        .collect();
    store.insert_metrics("job_curves", &rows).await.unwrap();
    let c = get(a, "/v1/train/job_curves/curves?points=10&keys=loss,nope")
        .await
        .json();
    assert_eq!(c["total_steps"], 95);
    assert_eq!(c["bucket"], 10);
    assert_eq!(c["keys"], json!(["kl", "learning_rate", "loss"]));
    assert_eq!(c["steps"].as_array().unwrap().len(), 10);
    assert_eq!(c["steps"][0], 10);
    assert_eq!(c["steps"][9], 95);
    assert_eq!(c["rounds"][5], 2);
    assert_eq!(c["series"]["loss"]["mean"][0], 5.5);
    assert_eq!(c["series"]["loss"]["min"][9], 91.0);
    assert_eq!(c["series"]["loss"]["mean"][9], 93.0);
    assert!(c["series"].get("kl").is_none());
    let all = get(a, "/v1/train/job_curves/curves").await.json();
    assert_eq!(all["bucket"], 1);
    assert_eq!(all["series"]["kl"]["mean"].as_array().unwrap().len(), 95);
    for q in ["points=0", "points=100000", "bogus=1"] {
        let s = get(a, &format!("/v1/train/job_curves/curves?{q}"))
            .await
            .status;
        assert!(s == 400 || s == 422, "{q}: {s}");
    }
    assert_eq!(get(a, "/v1/train/job_nope/curves").await.status, 404);

    // the live stream of every job's state: its first event lists them at once
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(format!("GET /v1/train/events HTTP/1.1\r\nhost: {a}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("job_curves") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("event: jobs"), "{text}");
    assert!(text.contains("\"state\":\"queued\""), "{text}");
    drop(s);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_curves_sqlite() {
    overview_and_curves(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_and_curves_postgres() {
    overview_and_curves(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_policy() {
    let app = spawn_jobs_app(db_url(Db::Sqlite).await.unwrap(), Service::default(), None).await;
    let a = app.addr;
    let page = get(a, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains("/ui/app.js") && html.contains("/ui/vendor/uPlot.iife.min.js"));
    // nothing from another origin, nothing inline
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("style=") && !html.contains("<style"));
    for (path, ct) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/ui/vendor/uPlot.min.css", "text/css"),
    ] {
        let r = get(a, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.content_type.starts_with(ct), "{path}: {}", r.content_type);
    }
    for path in [
        "/ui/nope.js",
        "/ui/../Cargo.toml",
        "/ui/vendor/../../Cargo.toml",
    ] {
        assert_eq!(get(a, path).await.status, 404, "{path}");
    }
    app.stop().await;
}
