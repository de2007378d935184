//! Training as a service (issue 12) over HTTP, against SQLite and PostgreSQL: datasets
//! checked line by line; a Step-KTO job on a tiny checkpoint runs to success with its
//! metrics, rounds, samples and eval records; cancel (queued and running); bad configs are
//! 422 naming the field; API keys (401, 403, the loopback rule); two workers on one
//! database and two queued jobs run each job exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Db, Resp, db_url, get, post, request_with, spawn_jobs_app, tiny};
use serde_json::{Value, json};
use stepkto::api::Service;
use stepkto::api::auth::Auth;
use stepkto::jobs::JobsConfig;

const PROBLEMS: &str = r#"{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}
{"id": "d", "problem": "What is 4 * 2?", "answer": 8}
{"id": "e", "problem": "What is 9 - 9?", "answer": "0"}
"#;

fn jobs_config(dir: &Path) -> JobsConfig {
    JobsConfig {
        dir: dir.join("jobs"),
        max_concurrent: 1,
        train_threads: 1,
        lease_secs: 2,
        poll_ms: 50,
        ..Default::default()
    }
}

/// A tiny Llama with a chat template (the trainer tests' checkpoint).
fn model(dir: &Path) -> PathBuf {
    let m = dir.join("m0");
    tiny::write_checkpoint_with("rlhflow", &m, false, &json!({}));
    m
}

async fn upload(addr: std::net::SocketAddr, query: &str, body: &str) -> Resp {
    request_with(
        addr,
        "POST",
        &format!("/v1/datasets{query}"),
        body.to_string(),
        &[],
    )
    .await
}

fn config(model: &Path, problems: &str, eval: &str, extra: Value) -> Value {
    let mut c = json!({
        "method": "step-kto",
        "model": model,
        "problems": problems,
        "eval_problems": eval,
        "system": "",
        "rounds": 1,
        "seed": 7,
        "micro_batch": 3,
        "save_every": 1,
        "sample": {"samples": 2, "max_batch": 2, "max_new_tokens": 10, "temperature": 1.0},
        "eval": {"samples": 2, "max_new_tokens": 8},
        "optim": {"learning_rate": 1e-3},
        "step": {"lambda_step": 1.0},
        "judge": {"model": "symbolic"}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

async fn wait_state(addr: std::net::SocketAddr, id: &str, want: &[&str], secs: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let j = get(addr, &format!("/v1/train/{id}")).await.json();
        if want.contains(&j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "job {id} still {} after {secs} s: {j}",
            j["state"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Upload the problems and one eval problem; their ids.
async fn datasets(addr: std::net::SocketAddr) -> (String, String) {
    let p = upload(addr, "?name=toy", PROBLEMS).await;
    assert_eq!(p.status, 201, "{:?}", p.json());
    let e = upload(
        addr,
        "",
        "{\"id\": \"x\", \"problem\": \"What is 1 + 1?\", \"answer\": \"2\"}\n",
    )
    .await;
    assert_eq!(e.status, 201);
    (
        p.json()["id"].as_str().unwrap().into(),
        e.json()["id"].as_str().unwrap().into(),
    )
}

async fn job_runs_to_success(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let dir = tiny::temp_dir("job-ok");
    let m = model(&dir);
    let app = spawn_jobs_app(url, Service::default(), Some(jobs_config(&dir))).await;
    let a = app.addr;

    // datasets: a bad line stops the upload and is listed; allowed, the good ones are kept
    let bad = upload(
        a,
        "",
        &format!("{PROBLEMS}not json\n{{\"problem\": \"x\"}}\n"),
    )
    .await;
    assert_eq!(bad.status, 422);
    let b = bad.json();
    assert_eq!(b["bad_line_count"], 2);
    assert_eq!(b["bad_lines"][0]["line"], 5);
    assert_eq!(b["bad_lines"][1]["line"], 6);
    assert!(
        get(a, "/v1/datasets")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let kept = upload(a, "?allow_bad_lines=true", &format!("{PROBLEMS}not json\n")).await;
    assert_eq!(kept.status, 201);
    assert_eq!(kept.json()["rows"], 4);
    assert_eq!(kept.json()["format"], "problems");
    let kto = upload(
        a,
        "",
        "{\"prompt\": \"p\", \"completion\": \"c\", \"label\": true}\n",
    )
    .await;
    assert_eq!(kto.json()["format"], "kto");

    let (pid, eid) = datasets(a).await;
    let d = get(a, &format!("/v1/datasets/{pid}")).await.json();
    assert_eq!(d["name"], "toy");
    assert_eq!(d["rows"], 4);
    // the sha256 is of the stored body, the good lines joined by newlines
    assert_eq!(d["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(get(a, "/v1/datasets/ds_nope").await.status, 404);

    let r = post(a, "/v1/train", config(&m, &pid, &eid, json!({}))).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["state"], "queued");
    let j = wait_state(a, &id, &["succeeded", "failed"], 600).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 1);
    let p = &j["progress"];
    assert!(p["global_step"].as_i64().unwrap() >= 1, "{p}");
    assert!(p["tokens_per_s"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["disk_bytes"].as_u64().unwrap() > 0);
    let final_model = PathBuf::from(p["final_model"].as_str().unwrap());
    assert!(final_model.join("model.safetensors").is_file());

    // one metric row per optimiser step, numbered from 1 across the job
    let rounds = get(a, &format!("/v1/train/{id}/rounds")).await.json();
    let rounds = rounds.as_array().unwrap();
    assert_eq!(rounds.len(), 2, "round 0 (the start) and round 1");
    let steps = rounds[1]["info"]["optimizer_steps"].as_i64().unwrap();
    assert!(steps >= 1);
    assert!(rounds[1]["eval"]["pass_at_1"].is_number());
    let rows = get(a, &format!("/v1/train/{id}/metrics")).await.json();
    let rows = rows.as_array().unwrap();
    let got: Vec<i64> = rows.iter().map(|r| r["step"].as_i64().unwrap()).collect();
    assert_eq!(got, (1..=steps).collect::<Vec<_>>());
    assert!(rows[0]["metrics"]["loss"].is_number());
    let since = get(a, &format!("/v1/train/{id}/metrics?since={}", steps - 1))
        .await
        .json();
    assert_eq!(since.as_array().unwrap().len(), 1);
    // the metric rows are the trainer's own metrics.jsonl lines
    let file = dir.join("jobs").join(&id).join("run/metrics.jsonl");
    let lines: Vec<Value> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as i64, steps);
    assert_eq!(lines[0]["loss"], rows[0]["metrics"]["loss"]);

    // samples: 4 problems x 2 samples; the filters split them
    let all = get(a, &format!("/v1/train/{id}/rounds/1/samples?limit=3"))
        .await
        .json();
    assert_eq!(all["total"], 8);
    assert_eq!(all["samples"].as_array().unwrap().len(), 3);
    assert!(all["samples"][0].get("token_ids").is_none());
    let mut parts = 0;
    for f in ["flawed", "wrong", "correct"] {
        let s = get(a, &format!("/v1/train/{id}/rounds/1/samples?filter={f}"))
            .await
            .json();
        for x in s["samples"].as_array().unwrap() {
            assert_eq!(x["class"], f);
        }
        parts += s["total"].as_u64().unwrap();
    }
    assert_eq!(parts, 8);
    assert_eq!(
        get(a, &format!("/v1/train/{id}/rounds/1/samples?filter=nice"))
            .await
            .status,
        422
    );
    assert_eq!(
        get(a, &format!("/v1/train/{id}/rounds/5/samples"))
            .await
            .status,
        404
    );

    // every round's evaluation is an eval record: the base model's name, the eval
    // dataset's name, the judged greedy solution with its steps' texts and verdicts
    let evals = get(a, &format!("/v1/evals?job={id}")).await.json();
    assert_eq!(evals["total"], 2, "{evals}");
    let recs = evals["records"].as_array().unwrap();
    let mut rounds_seen: Vec<i64> = recs.iter().map(|r| r["round"].as_i64().unwrap()).collect();
    rounds_seen.sort();
    assert_eq!(rounds_seen, vec![0, 1]);
    for r in recs {
        assert_eq!(r["model"], "m0");
        assert_eq!(r["dataset"], eid.as_str());
        assert_eq!(r["kind"], "generate");
        assert_eq!(r["counts"]["problems"], 1);
        assert!(r["metrics"]["pass_at_1"].is_number(), "{r}");
        let n: u64 = r["classes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(n, 1);
        let rid = r["id"].as_str().unwrap();
        let s = get(a, &format!("/v1/evals/{rid}/samples")).await.json();
        assert_eq!(s["total"], 1);
        let x = &s["samples"][0]["sample"];
        assert_eq!(x["problem"], "What is 1 + 1?");
        let text: String = x["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("");
        assert!(!x["greedy"].as_str().unwrap().is_empty() || text.is_empty());
    }

    // the list filters by state; /info and /metrics show the workers
    let list = get(a, "/v1/train?state=succeeded").await.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str())
    );
    assert!(
        get(a, "/v1/train?state=queued")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(get(a, "/v1/train?state=bogus").await.status, 422);
    let info = get(a, "/info").await.json();
    assert_eq!(info["jobs"]["max_concurrent"], 1);
    assert_eq!(info["jobs"]["train_threads"], 1);
    let metrics = String::from_utf8(get(a, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("stepkto_jobs{state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("stepkto_train_steps_total {steps}")));

    // the events of a finished job: its progress, then its final state, then the end
    let ev = get(a, &format!("/v1/train/{id}/events")).await;
    assert!(ev.content_type.starts_with("text/event-stream"));
    let text = String::from_utf8(ev.body.to_vec()).unwrap();
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("event: state"), "{text}");
    assert!(text.contains("\"state\":\"succeeded\""), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_sqlite() {
    job_runs_to_success(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_success_postgres() {
    job_runs_to_success(Db::Postgres).await;
}

async fn cancel_and_bad_configs(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let dir = tiny::temp_dir("job-cancel");
    let m = model(&dir);
    let app = spawn_jobs_app(url, Service::default(), Some(jobs_config(&dir))).await;
    let a = app.addr;
    let (pid, eid) = datasets(a).await;

    // bad configs: 422, the field named, nothing queued
    let cases: Vec<(Value, &str)> = vec![
        (json!({"method": null}), "method"),
        (json!({"method": "ppo"}), "method"),
        (json!({"problems": "ds_missing"}), "problems"),
        (json!({"problems": 3}), "problems"),
        (json!({"output": "/tmp/x"}), "output"),
        (json!({"device": "cuda:0"}), "device"),
        (json!({"threads": 2}), "threads"),
        (json!({"threads": 0}), "threads"),
        (json!({"judge": {"model": "no-such-prm"}}), "judge.model"),
        (json!({"judge": {"prm": "/models/prm"}}), "judge.prm"),
        (json!({"model": "/nonexistent/model"}), "model"),
        (json!({"model": "relative/model"}), "model"),
        (json!({"bogus": 1}), "bogus"),
        (
            json!({"optim": {"learning_rate": "fast"}}),
            "optim.learning_rate",
        ),
        (json!({"rounds": 0}), "rounds"),
        (json!({"kto": {"beta": -1.0}}), "kto.beta"),
        (
            json!({"eval_problems": pid.clone(), "problems": null, "dataset": null}),
            "problems",
        ),
    ];
    for (patch, field) in cases {
        let mut c = config(&m, &pid, &eid, json!({}));
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        let r = post(a, "/v1/train", c.clone()).await;
        assert_eq!(r.status, 422, "{patch}: {:?}", r.json());
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(field), "{patch}: {e:?} should name {field}");
    }
    let r = common::request(a, "POST", "/v1/train", "{not json").await;
    assert_eq!(r.status, 400);
    // a KTO dataset where problems belong
    let kto = upload(
        a,
        "",
        "{\"prompt\": \"p\", \"completion\": \"c\", \"label\": true}\n",
    )
    .await;
    let kid = kto.json()["id"].as_str().unwrap().to_string();
    let r = post(a, "/v1/train", config(&m, &kid, &eid, json!({}))).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("problems"));
    assert!(
        get(a, "/v1/train")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // a running job stops at its next step when cancelled
    let long = config(&m, &pid, &eid, json!({"rounds": 3, "epochs": 50}));
    let id = post(a, "/v1/train", long).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    loop {
        let j = get(a, &format!("/v1/train/{id}")).await.json();
        if j["progress"]["global_step"].as_i64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(j["state"] == "queued" || j["state"] == "running", "{j}");
        assert!(t0.elapsed() < Duration::from_secs(300), "no step: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = post(a, &format!("/v1/train/{id}/cancel"), json!({})).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json()["cancel_requested"], true);
    let j = wait_state(a, &id, &["cancelled", "failed", "succeeded"], 60).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(
        post(a, "/v1/train/job_nope/cancel", json!({})).await.status,
        404
    );
    app.stop().await;

    // a queued job (no worker runs it) is cancelled at once
    let app = spawn_jobs_app(
        db_url(db).await.expect("a database"),
        Service::default(),
        None,
    )
    .await;
    let a = app.addr;
    let (pid, eid) = datasets(a).await;
    let id = post(a, "/v1/train", config(&m, &pid, &eid, json!({})))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = post(a, &format!("/v1/train/{id}/cancel"), json!({}))
        .await
        .json();
    assert_eq!(c["state"], "cancelled");
    assert!(c["finished_at"].is_number());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_bad_configs_sqlite() {
    cancel_and_bad_configs(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_bad_configs_postgres() {
    cancel_and_bad_configs(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_training_and_judging_when_asked() {
    let key = "k3y-0123456789abcdef";
    let auth = Auth::load(None, Some(key), true, true).unwrap();
    let svc = Service {
        auth,
        ..Default::default()
    };
    let app = spawn_jobs_app(common::sqlite_url(), svc, None).await;
    let a = app.addr;
    for path in [
        "/v1/train",
        "/v1/datasets",
        "/v1/train/job_x",
        "/v1/datasets/ds_x",
    ] {
        let r = request_with(a, "GET", path, "", &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error_type"], "unauthorized");
        let r = request_with(
            a,
            "GET",
            path,
            "",
            &[("authorization", "Bearer wrong-key-0000000")],
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error_type"], "forbidden");
        assert!(!r.json()["error"].as_str().unwrap().contains("wrong-key"));
        let r = request_with(a, "GET", path, "", &[("authorization", key)]).await;
        assert_eq!(r.status, 401, "{path}: not a Bearer header");
    }
    let bearer = format!("Bearer {key}");
    let ok = request_with(a, "GET", "/v1/train", "", &[("authorization", &bearer)]).await;
    assert_eq!(ok.status, 200);
    let missing = request_with(
        a,
        "GET",
        "/v1/train/job_x",
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(missing.status, 404);
    // judging asks for the key too here (require_key_for_judging)
    let body = json!({"reference": "1", "candidate": "1"}).to_string();
    let r = request_with(a, "POST", "/v1/verify", body.clone(), &[]).await;
    assert_eq!(r.status, 401);
    let r = request_with(
        a,
        "POST",
        "/v1/verify",
        body.clone(),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // health, info and models stay open
    assert_eq!(get(a, "/health").await.status, 200);
    assert_eq!(get(a, "/info").await.json()["jobs"]["api_keys"], 1);
    app.stop().await;

    // keys for training only: judging is open
    let auth = Auth::load(None, Some(key), false, true).unwrap();
    let app = spawn_jobs_app(
        common::sqlite_url(),
        Service {
            auth,
            ..Default::default()
        },
        None,
    )
    .await;
    let r = request_with(app.addr, "POST", "/v1/verify", body.clone(), &[]).await;
    assert_eq!(r.status, 200);
    app.stop().await;

    // no keys on a non-loopback address: training is closed and says how to open it
    let auth = Auth::load(None, None, false, false).unwrap();
    let app = spawn_jobs_app(
        common::sqlite_url(),
        Service {
            auth,
            ..Default::default()
        },
        None,
    )
    .await;
    let r = get(app.addr, "/v1/train").await;
    assert_eq!(r.status, 403);
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("--api-keys-file") && e.contains("STEPKTO_API_KEYS"),
        "{e}"
    );
    assert_eq!(
        request_with(app.addr, "POST", "/v1/verify", body, &[])
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgres_run_each_job_once() {
    let Some(url) = db_url(Db::Postgres).await else {
        return;
    };
    let dir = tiny::temp_dir("job-two");
    let m = model(&dir);
    // two servers (each with its own worker and claim loop) on one database and one
    // jobs directory, as two processes on one machine would be
    let one = spawn_jobs_app(url.clone(), Service::default(), Some(jobs_config(&dir))).await;
    let two = spawn_jobs_app(url.clone(), Service::default(), Some(jobs_config(&dir))).await;
    let (pid, eid) = datasets(one.addr).await;
    let mut ids = Vec::new();
    for seed in [1, 2] {
        let r = post(
            one.addr,
            "/v1/train",
            config(&m, &pid, &eid, json!({"seed": seed})),
        )
        .await;
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let mut workers = Vec::new();
    for id in &ids {
        let j = wait_state(two.addr, id, &["succeeded", "failed"], 600).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "claimed once: {j}");
        workers.push(j["worker"].as_str().unwrap().to_string());
        let rows = get(one.addr, &format!("/v1/train/{id}/metrics"))
            .await
            .json();
        let steps: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["step"].as_i64().unwrap())
            .collect();
        let n = steps.len() as i64;
        assert_eq!(steps, (1..=n).collect::<Vec<_>>());
        // one trainer wrote the job's metric file: a second would have doubled its lines
        let file = dir.join("jobs").join(id).join("run/metrics.jsonl");
        assert_eq!(
            std::fs::read_to_string(file).unwrap().lines().count() as i64,
            n
        );
    }
    let w1 = one.state.workers.as_ref().unwrap().id.clone();
    let w2 = two.state.workers.as_ref().unwrap().id.clone();
    assert!(workers.iter().all(|w| *w == w1 || *w == w2));
    eprintln!("jobs ran on workers {workers:?}");
    one.stop().await;
    two.stop().await;
}
