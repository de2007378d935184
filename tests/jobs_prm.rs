//! A job whose step judge is a PRM the server serves (issue 12, item 3): the trainer labels
//! steps through the served model's batcher (its counters move; no second copy is loaded),
//! with the scores `/v1/judge` gives for the same steps, while `/v1/judge` keeps answering.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Db, db_url, get, post, request_with, spawn_jobs_app_with, tiny};
use serde_json::{Value, json};
use stepkto::api::Service;
use stepkto::devices::DevicePool;
use stepkto::jobs::JobsConfig;
use stepkto::judge::Judges;
use stepkto::judge::batcher::BatchConfig;
use stepkto::judge::prm::ModelSpec;

const PROBLEMS: &str = r#"{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}
{"id": "d", "problem": "What is 4 * 2?", "answer": 8}
"#;

fn prm_items(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("stepkto_prm_batch_items_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
}

async fn served_prm_judges_the_job(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let dir = tiny::temp_dir("job-prm");
    let policy = dir.join("m0");
    tiny::write_checkpoint_with("rlhflow", &policy, false, &json!({}));
    let spec = ModelSpec {
        name: Some("tiny-prm".into()),
        dir: tiny::checkpoint("qwen-prm"),
        recipe: None,
        max_context: None,
        cpu_matmul: Default::default(),
    };
    let pool: Arc<DevicePool> = DevicePool::new("cpu").unwrap();
    let cfg = BatchConfig {
        max_batch_tokens: 4096,
        max_queue: 64,
    };
    let judges = Judges::load(&[spec], &pool, cfg).unwrap();
    let jobs = JobsConfig {
        dir: dir.join("jobs"),
        max_concurrent: 1,
        train_threads: 1,
        lease_secs: 2,
        poll_ms: 50,
        ..Default::default()
    };
    let app = spawn_jobs_app_with(url, Service::default(), Some(jobs), (judges, pool)).await;
    let a = app.addr;
    let up = request_with(a, "POST", "/v1/datasets", PROBLEMS, &[]).await;
    let pid = up.json()["id"].as_str().unwrap().to_string();
    let before = prm_items(std::str::from_utf8(&get(a, "/metrics").await.body).unwrap());
    assert_eq!(before, 0);

    let job = json!({"method": "step-kto", "model": policy, "problems": pid, "system": "",
        "rounds": 1, "seed": 3, "micro_batch": 3,
        "sample": {"samples": 2, "max_batch": 2, "max_new_tokens": 12, "temperature": 1.0},
        "optim": {"learning_rate": 1e-3}, "step": {"lambda_step": 1.0},
        "judge": {"model": "tiny-prm", "threshold": 0.5}});
    let r = post(a, "/v1/train", job).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // /v1/judge answers while the job runs on the same model (each probe differs, so none
    // is answered from the verdict cache)
    let t0 = Instant::now();
    let mut answered = 0;
    let j = loop {
        let probe = json!({"model": "tiny-prm",
            "items": [{"problem": format!("1+{answered}?"), "steps": ["1+1=2", "So 2."]}]});
        let r = post(a, "/v1/judge", probe).await;
        assert_eq!(r.json()["items"][0]["cached"], false);
        assert_eq!(r.status, 200, "{:?}", r.json());
        answered += 1;
        let j = get(a, &format!("/v1/train/{id}")).await.json();
        if ["succeeded", "failed"].contains(&j["state"].as_str().unwrap()) {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(j["state"], "succeeded", "{j}");
    eprintln!("{answered} /v1/judge requests answered while the job ran");

    // every sampled step was scored by the served model, through its batcher
    let samples = get(a, &format!("/v1/train/{id}/rounds/1/samples?limit=100"))
        .await
        .json();
    let samples = samples["samples"].as_array().unwrap().clone();
    assert_eq!(samples.len(), 6);
    let scored: usize = samples
        .iter()
        .map(|s| s["steps"].as_array().unwrap().len())
        .sum();
    assert!(scored > 0, "the samples have steps");
    let after = prm_items(std::str::from_utf8(&get(a, "/metrics").await.body).unwrap());
    assert!(
        after
            >= answered
                + samples
                    .iter()
                    .filter(|s| !s["steps"].as_array().unwrap().is_empty())
                    .count() as u64,
        "batcher items {after} after {answered} probes: the job's labels went through it"
    );
    // ... with the scores the served model gives over HTTP
    for s in samples
        .iter()
        .filter(|s| !s["steps"].as_array().unwrap().is_empty())
    {
        let steps: Vec<&str> = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["text"].as_str().unwrap())
            .collect();
        let r = post(
            a,
            "/v1/judge",
            json!({"model": "tiny-prm", "threshold": 0.5,
            "items": [{"problem": s["problem"], "steps": steps}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        let got = &r.json()["items"][0]["steps"];
        for (h, st) in s["steps"].as_array().unwrap().iter().enumerate() {
            let (job, http) = (
                st["score"].as_f64().unwrap(),
                got[h]["score"].as_f64().unwrap(),
            );
            assert!(
                (job - http).abs() < 1e-5,
                "step {h}: job {job} vs /v1/judge {http}"
            );
            assert_eq!(st["correct"], Value::Bool(job >= 0.5), "{st}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_prm_judges_the_jobs_steps_sqlite() {
    served_prm_judges_the_job(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_prm_judges_the_jobs_steps_postgres() {
    served_prm_judges_the_job(Db::Postgres).await;
}
