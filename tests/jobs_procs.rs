//! Two real server processes on one PostgreSQL database (issue 12): two jobs queued at once
//! are claimed one by each server (each runs at most one job at a time), and each job runs
//! exactly once: one claim, one job directory, one "job started" in the two logs, one
//! metric row per step.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::bin::{self, Server, free_port, kill};
use common::{Db, db_url, get, post, request_with, tiny};
use serde_json::{Value, json};

const PROBLEMS: &str = r#"{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}
{"id": "d", "problem": "What is 4 * 2?", "answer": 8}
"#;

async fn start(dir: &Path, name: &str, db: &str) -> Server {
    let args = [
        "--database-url".to_string(),
        db.to_string(),
        "--jobs-dir".into(),
        dir.join(name).display().to_string(),
        "--max-jobs".into(),
        "1".into(),
        "--job-poll-ms".into(),
        "100".into(),
        "--job-lease-secs".into(),
        "2".into(),
    ];
    bin::start(&dir.join(format!("{name}.log")), free_port(), &args).await
}

async fn finished(addr: std::net::SocketAddr, id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let j = get(addr, &format!("/v1/train/{id}")).await.json();
        if ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "job {id}: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_on_one_postgres_run_each_job_once() {
    let Some(url) = db_url(Db::Postgres).await else {
        return;
    };
    let dir = tiny::temp_dir("two-procs");
    let model = dir.join("m0");
    // wide enough that a job lasts well over the 100 ms poll, so the idle server claims the other
    let wide = json!({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4});
    tiny::write_checkpoint_with("rlhflow", &model, false, &wide);
    let mut a = start(&dir, "a", &url).await;
    let mut b = start(&dir, "b", &url).await;

    let up = request_with(a.addr, "POST", "/v1/datasets", PROBLEMS, &[]).await;
    assert_eq!(up.status, 201);
    let pid = up.json()["id"].as_str().unwrap().to_string();
    let cfg = json!({"method": "kto", "model": model, "problems": pid, "system": "",
        "rounds": 2, "epochs": 2, "seed": 7, "micro_batch": 2,
        "sample": {"samples": 2, "max_batch": 2, "max_new_tokens": 10},
        "optim": {"learning_rate": 1e-3}});
    let mut ids = Vec::new();
    for server in [&a, &b] {
        let r = post(server.addr, "/v1/train", cfg.clone()).await;
        assert_eq!(r.status, 202, "{:?}", r.json());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }

    let mut workers = Vec::new();
    for id in &ids {
        let j = finished(b.addr, id).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "claimed once: {j}");
        workers.push(j["worker"].as_str().unwrap().to_string());
        // one job directory, in the server that ran it
        let dirs: Vec<bool> = ["a", "b"]
            .iter()
            .map(|s| dir.join(s).join(id).exists())
            .collect();
        assert_eq!(dirs.iter().filter(|x| **x).count(), 1, "{id}: {dirs:?}");
        let home = if dirs[0] { "a" } else { "b" };
        let on_disk = std::fs::read_to_string(dir.join(home).join(id).join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .count();
        let rows = get(b.addr, &format!("/v1/train/{id}/metrics")).await.json();
        let steps: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["step"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, (1..=on_disk as i64).collect::<Vec<_>>());
    }
    assert_ne!(
        workers[0], workers[1],
        "each server took one job: {workers:?}"
    );
    kill(&mut a);
    kill(&mut b);
    let logs: String = ["a.log", "b.log"]
        .iter()
        .map(|l| std::fs::read_to_string(dir.join(l)).unwrap())
        .collect();
    for id in &ids {
        let started = logs
            .lines()
            .filter(|l| l.contains("job started") && l.contains(id.as_str()))
            .count();
        assert_eq!(started, 1, "{id} started once in the two servers' logs");
    }
}
