//! `/v1/judge` with a PRM loaded (a tiny qwen-prm checkpoint written by the test helper):
//! scores over HTTP equal the transformers reference, verdicts are cached per checkpoint,
//! concurrent requests share forward passes (seen in /metrics), a full queue is 429, an
//! expired deadline 504, an over-long item 413 with the limit; and the CLI with `--model DIR`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use common::{Db, db_url, get, post, run_ok, spawn_app_with, tiny};
use serde_json::{Value, json};
use stepkto::config::Limits;
use stepkto::devices::DevicePool;
use stepkto::judge::Judges;
use stepkto::judge::batcher::{BatchConfig, Batcher};
use stepkto::judge::prm::{ModelSpec, Prm};

fn judges(
    dir: &std::path::Path,
    cfg: BatchConfig,
    max_context: Option<usize>,
) -> (Judges, Arc<DevicePool>) {
    let spec = ModelSpec {
        name: Some("tiny".into()),
        dir: dir.to_path_buf(),
        recipe: None,
        max_context,
        cpu_matmul: Default::default(),
    };
    let pool = DevicePool::new("cpu").unwrap();
    (Judges::load(&[spec], &pool, cfg).unwrap(), pool)
}

/// The tiny checkpoint in `dir` as model `tiny`, loaded on the CPU.
fn tiny_prm(dir: &std::path::Path) -> Arc<Prm> {
    let spec = ModelSpec {
        name: Some("tiny".into()),
        dir: dir.to_path_buf(),
        recipe: None,
        max_context: None,
        cpu_matmul: Default::default(),
    };
    Arc::new(Prm::load(&spec, &Device::Cpu).unwrap())
}

const CFG: BatchConfig = BatchConfig {
    max_batch_tokens: 16384,
    max_queue: 64,
};

async fn prm_over_http(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let dir = tiny::checkpoint("qwen-prm");
    let app = spawn_app_with(Some(url), Limits::default(), judges(&dir, CFG, None)).await;
    let models = get(app.addr, "/v1/models").await.json();
    assert_eq!(models[1]["id"], "tiny");
    assert_eq!(models[1]["kind"], "qwen-prm");
    assert_eq!(models[1]["device"], "cpu");
    assert_eq!(models[1]["weights_sha256"].as_str().unwrap().len(), 64);

    let e = tiny::expected();
    let items: Vec<Value> = e["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| json!({"id": it["id"], "problem": it["problem"], "steps": it["steps"]}))
        .collect();
    let body = json!({"model": "tiny", "items": items});
    let r = post(app.addr, "/v1/judge", body.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["model"], "tiny");
    let mut worst = 0f64;
    for (got, want) in v["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(e["recipes"]["qwen-prm"].as_array().unwrap())
    {
        let want = want.as_array().unwrap();
        let steps = got["steps"].as_array().unwrap();
        assert_eq!(steps.len(), want.len());
        for (s, w) in steps.iter().zip(want) {
            worst = worst.max((s["score"].as_f64().unwrap() - w.as_f64().unwrap()).abs());
            assert_eq!(s["label"], s["score"].as_f64().unwrap() >= 0.5);
            assert!(s["symbolic"]["status"].is_string());
        }
        let first = steps
            .iter()
            .position(|s| s["label"] == false)
            .map_or(-1, |i| i as i64);
        assert_eq!(got["first_wrong_step"], first);
        assert_eq!(got["cached"], false);
    }
    assert!(
        worst <= 1e-4,
        "HTTP scores differ from transformers by {worst}"
    );
    // The tiny item "2+3 = 5." is verified symbolically whatever the PRM says.
    assert_eq!(v["items"][6]["steps"][0]["symbolic"]["status"], "verified");
    let again = post(app.addr, "/v1/judge", body).await.json();
    assert_eq!(again["items"][0]["cached"], true);
    assert_eq!(again["items"][0]["steps"], v["items"][0]["steps"]);
    // The symbolic judge answers the same steps differently, and is cached apart.
    let sym = post(app.addr, "/v1/judge", json!({"items": [items[6]]}))
        .await
        .json();
    assert_eq!(sym["items"][0]["cached"], false);
    assert_eq!(sym["items"][0]["steps"][0]["score"], 1.0);
    let metrics = String::from_utf8(get(app.addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("stepkto_prm_batch_items_total{model=\"tiny\"} 7"),
        "{metrics}"
    );
    let info = get(app.addr, "/info").await.json();
    assert_eq!(info["models"], json!(["symbolic", "tiny"]));
    assert_eq!(info["devices"][0]["holders"].as_array().unwrap().len(), 1);
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prm_over_http_sqlite() {
    prm_over_http(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prm_over_http_postgres() {
    prm_over_http(Db::Postgres).await;
}

fn long_item(words: usize) -> Value {
    json!({"problem": "Compute the sum of the numbers below. ".repeat(words / 7),
           "steps": ["First add them.", "The sum is 10."]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_forward_passes() {
    let dir = tiny::checkpoint("qwen-prm");
    let app = spawn_app_with(None, Limits::default(), judges(&dir, CFG, None)).await;
    let addr = app.addr;
    // A long item keeps the inference thread busy while eight small requests queue up
    // behind it; the thread then takes them in one pass.
    let mut batched = false;
    for _ in 0..5 {
        let busy = tokio::spawn(post(
            addr,
            "/v1/judge",
            json!({"model": "tiny", "items": [long_item(1500)]}),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let small: Vec<_> = (0..8)
            .map(|i| {
                tokio::spawn(post(addr, "/v1/judge", json!({"model": "tiny", "items": [
                    {"problem": format!("What is {i}+1?"), "steps": [format!("{i}+1 = {}.", i + 1)]}
                ]})))
            })
            .collect();
        for h in small {
            assert_eq!(h.await.unwrap().status, 200);
        }
        assert_eq!(busy.await.unwrap().status, 200);
        let b = app.state.judges.get("tiny").unwrap();
        if b.stats
            .largest_batch
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
        {
            batched = true;
            break;
        }
    }
    assert!(
        batched,
        "small concurrent requests never shared a forward pass"
    );
    let m = String::from_utf8(get(addr, "/metrics").await.body.to_vec()).unwrap();
    let read = |name: &str| -> u64 {
        let key = format!("{name}{{model=\"tiny\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        read("stepkto_prm_batches_total") < read("stepkto_prm_batch_items_total"),
        "{m}"
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_deadline_and_context_limits() {
    let dir = tiny::checkpoint("qwen-prm");
    let cfg = BatchConfig {
        max_batch_tokens: 4096,
        max_queue: 2,
    };
    let app = spawn_app_with(None, Limits::default(), judges(&dir, cfg, Some(512))).await;
    let item = |i: usize| json!({"problem": format!("What is {i}+1?"), "steps": ["It is 2."]});
    // Three items cannot enter a queue of two: the whole request is refused, nothing queued.
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [item(1), item(2), item(3)]}),
    )
    .await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_type"], "overloaded");
    assert!(r.json()["error"].as_str().unwrap().contains("max_queue 2"));
    // Over the context: one item is a 413 naming the limit; in a batch, an item error.
    let long = long_item(2000);
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [long.clone()]}),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("limit of 512 tokens"),
        "{:?}",
        r.json()
    );
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [long, item(4)]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["items"][0]["error"]["error_type"], "too_large");
    assert_eq!(v["items"][1]["steps"].as_array().unwrap().len(), 1);
    // An item the recipe cannot take is a 422.
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [{"problem": "a <extra_0> b", "steps": ["x"]}]}),
    )
    .await;
    assert_eq!(r.status, 422);
    // A deadline shorter than a forward pass: 504.
    let near_limit = json!({"problem": "Add these numbers. ".repeat(60), "steps": ["ok"]});
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "timeout_ms": 1, "items": [near_limit]}),
    )
    .await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_type"], "timeout");
    // Unknown model names what is loaded.
    let r = post(app.addr, "/v1/judge", json!({"model": "nope", "items": []})).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("\"tiny\""));
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn items_whose_client_left_are_dropped_unscored() {
    let dir = tiny::checkpoint("qwen-prm");
    let prm = tiny_prm(&dir);
    let pool = DevicePool::new("cpu").unwrap();
    let b = Batcher::spawn(prm.clone(), pool.lease("test"), CFG).unwrap();
    let long = prm
        .tokenize(&"Sum the numbers. ".repeat(400), &["Done.".into()])
        .unwrap();
    let short = prm.tokenize("What is 1+1?", &["2".into()]).unwrap();
    let far = Instant::now() + Duration::from_secs(60);
    let busy = b.submit(vec![long], far, 60_000).unwrap();
    // Submitted while the thread is busy, then abandoned: never scored.
    drop(b.submit(vec![short.clone(); 3], far, 60_000).unwrap());
    let kept = b.submit(vec![short], far, 60_000).unwrap();
    for rx in busy.into_iter().chain(kept) {
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), 1);
    }
    let s = &b.stats;
    let gone = s
        .dropped_client_gone
        .load(std::sync::atomic::Ordering::Relaxed);
    let items = s.items.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(gone + items, 5, "every item is scored or dropped");
    assert!(gone >= 1, "abandoned items were scored anyway");
    assert_eq!(b.queue_depth(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_judges_and_evaluates_with_a_checkpoint() {
    let dir = tiny::checkpoint("math-shepherd");
    let input = tiny::temp_dir("cli").join("in.jsonl");
    let e = tiny::expected();
    let lines: Vec<String> = e["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            json!({"id": it["id"], "problem": it["problem"], "steps": it["steps"], "label": -1})
                .to_string()
        })
        .chain(["not json".to_string()])
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let (dir_s, input_s) = (dir.to_str().unwrap(), input.to_str().unwrap());
    let recipe = [
        "--model",
        dir_s,
        "--recipe",
        "math-shepherd",
        "--input",
        input_s,
    ];
    let got: Vec<Value> = run_ok(&[&["judge"], &recipe[..]].concat())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 8, "one output line per input line");
    assert!(got[7]["error"].as_str().unwrap().contains("line 8"));
    for (g, w) in got
        .iter()
        .zip(e["recipes"]["math-shepherd"].as_array().unwrap())
    {
        for (s, w) in g["steps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w.as_array().unwrap())
        {
            assert!((s["score"].as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-4);
        }
    }
    let text = run_ok(&[&["eval", "processbench"], &recipe[..]].concat());
    // The tiny model's scores are all below 0.5 (see expected.json): every correct sample
    // is flagged at step 0.
    assert!(
        text.contains("samples: 7 (0 erroneous, 7 correct), 1 unreadable lines skipped"),
        "{text}"
    );
    assert!(
        text.contains("accuracy on correct samples:   0.0% (0/7)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A panic payload whose destructor panics again: the second panic escapes any
/// `catch_unwind` that drops the payload, as a real fault past the guard would.
struct EscapingPanic;

impl Drop for EscapingPanic {
    fn drop(&mut self) {
        panic!("a fault that escapes the batch guard");
    }
}

/// Issue 9, class 8: a panic in a forward pass fails only that batch's items (500) and the
/// model keeps serving; if the inference thread ends anyway, `/health` says which model
/// cannot serve (503), requests to it fail at once instead of hanging, and no queue slot
/// leaks.
#[tokio::test]
async fn class_8_a_panicking_forward_pass_fails_its_batch_not_the_model() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tiny::checkpoint("qwen-prm");
    let prm = tiny_prm(&dir);
    let pool = DevicePool::new("cpu").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let scorer: stepkto::judge::batcher::Scorer =
        Box::new(move |p, items| match c.fetch_add(1, Ordering::SeqCst) {
            0 => panic!("an injected kernel fault"),
            2 => std::panic::panic_any(EscapingPanic),
            _ => p.score(items),
        });
    let b = Arc::new(Batcher::spawn_with(prm, pool.lease("test"), CFG, scorer).unwrap());
    let mut judges = Judges::default();
    judges.prms.push(b.clone());
    let app = spawn_app_with(None, Limits::default(), (judges, pool)).await;
    let body =
        json!({"model": "tiny", "items": [{"problem": "What is 1+1?", "steps": ["1+1 = 2."]}]});
    // 1. The panicking batch: its item fails, with a 500 and a JSON body.
    let r = post(app.addr, "/v1/judge", body.clone()).await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error_type"], "internal");
    assert_eq!(b.stats.panics.load(Ordering::Relaxed), 1);
    // 2. The model still serves, and says it is healthy.
    let r = post(app.addr, "/v1/judge", body.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["items"][0]["steps"].as_array().unwrap().len(), 1);
    assert_eq!(get(app.addr, "/health").await.status, 200);
    // 3. A fault that ends the thread: that request fails, /health names the model.
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [{"problem": "What is 2+2?", "steps": ["2+2 = 4."]}]}),
    )
    .await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let t = Instant::now();
    while b.alive() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!b.alive());
    let h = get(app.addr, "/health").await;
    assert_eq!(h.status, 503);
    assert!(
        h.json()["error"].as_str().unwrap().contains("tiny"),
        "{:?}",
        h.json()
    );
    // 4. Requests to the dead model fail at once, and take no queue slot.
    let r = post(
        app.addr,
        "/v1/judge",
        json!({"model": "tiny", "items": [{"problem": "What is 3+3?", "steps": ["3+3 = 6."]}]}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"].as_str().unwrap().contains("stopped"),
        "{:?}",
        r.json()
    );
    assert_eq!(b.queue_depth(), 0, "queue slots leaked");
    app.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
