//! Crash safety of training jobs with the real binary (issue 12): a server killed with
//! SIGKILL while a job trains is started again; the job resumes from its last saved state
//! (its attempt count says it was claimed twice), ends with the weights of the same job run
//! without interruption, and stores every metric step once, with the uninterrupted values.
//! A job whose saved state is unreadable after the crash fails with the reason.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bin::{self, Server, free_port, kill};
use common::{get, post, request_with, tiny};
use serde_json::{Value, json};

const PROBLEMS: &str = r#"{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}
{"id": "d", "problem": "What is 4 * 2?", "answer": 8}
"#;

async fn start(dir: &Path, port: u16) -> Server {
    let args = [
        "--job-lease-secs".to_string(),
        "2".into(),
        "--database-url".into(),
        format!("sqlite://{}", dir.join("db.sqlite").display()),
        "--jobs-dir".into(),
        dir.join("jobs").display().to_string(),
    ];
    bin::start(&dir.join("server.log"), port, &args).await
}

async fn wait_state(addr: SocketAddr, id: &str, secs: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let j = get(addr, &format!("/v1/train/{id}")).await.json();
        if ["succeeded", "failed", "cancelled"].contains(&j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "job {id}: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn submit(addr: SocketAddr, cfg: &Value) -> String {
    let r = post(addr, "/v1/train", cfg.clone()).await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    r.json()["id"].as_str().unwrap().to_string()
}

fn metrics_of(rows: &Value) -> Vec<(i64, String)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["step"].as_i64().unwrap(), r["metrics"].to_string()))
        .collect()
}

/// Wait until the job's trainer has written `n` more metric lines than at `from`.
async fn until_lines(file: &Path, n: usize) {
    let t0 = Instant::now();
    while lines(file) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no progress in {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_sigkill_of_its_server_and_ends_with_the_same_weights() {
    let dir = tiny::temp_dir("job-crash");
    let model: PathBuf = dir.join("m0");
    // wide enough that a round lasts long enough to be killed in
    let wide = json!({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4});
    tiny::write_checkpoint_with("rlhflow", &model, false, &wide);
    let port = free_port();
    let mut s = start(&dir, port).await;
    let up = request_with(s.addr, "POST", "/v1/datasets", PROBLEMS, &[]).await;
    assert_eq!(up.status, 201);
    let pid = up.json()["id"].as_str().unwrap().to_string();
    let cfg = json!({"method": "kto", "model": model, "problems": pid, "system": "",
        "rounds": 2, "epochs": 3, "seed": 7, "micro_batch": 2, "save_every": 1,
        "sample": {"samples": 2, "max_batch": 2, "max_new_tokens": 10},
        "optim": {"learning_rate": 1e-3}});

    // the reference: the same job, never interrupted
    let whole = submit(s.addr, &cfg).await;
    let j = wait_state(s.addr, &whole, 600).await;
    assert_eq!(j["state"], "succeeded", "{j}");

    // the same job, its server killed while round 2 trains
    let id = submit(s.addr, &cfg).await;
    let run = dir.join("jobs").join(&id).join("run");
    until_lines(
        &run.join("metrics.jsonl"),
        lines(&dir.join("jobs").join(&whole).join("run/metrics.jsonl")) / 2 + 2,
    )
    .await;
    kill(&mut s);
    let before = lines(&run.join("metrics.jsonl"));
    let mut s = start(&dir, port).await;
    let j = wait_state(s.addr, &id, 600).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 2, "claimed again after the crash: {j}");
    eprintln!("killed after {before} metric lines; resumed and finished");

    let weights = |job: &str, r: usize| {
        std::fs::read(
            dir.join("jobs")
                .join(job)
                .join(format!("run/round-{r}/model/model.safetensors")),
        )
        .unwrap()
    };
    for r in 1..=2 {
        assert!(
            weights(&id, r) == weights(&whole, r),
            "round {r} weights differ"
        );
    }
    let a = metrics_of(
        &get(s.addr, &format!("/v1/train/{whole}/metrics"))
            .await
            .json(),
    );
    let b = metrics_of(&get(s.addr, &format!("/v1/train/{id}/metrics")).await.json());
    assert_eq!(a.len(), b.len(), "every step once");
    assert_eq!(
        a, b,
        "the resumed job's metric rows are the uninterrupted job's"
    );

    // a saved state made unreadable while the server is down: the job fails, saying why
    let bad = submit(s.addr, &cfg).await;
    let run = dir.join("jobs").join(&bad).join("run");
    until_lines(&run.join("metrics.jsonl"), 3).await;
    kill(&mut s);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let sdir = run.join(format!("state-{}-{}", state["round"], state["step"]));
    std::fs::write(
        sdir.join("optimizer.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let mut s = start(&dir, port).await;
    let j = wait_state(s.addr, &bad, 120).await;
    assert_eq!(j["state"], "failed", "{j}");
    let e = j["error"].as_str().unwrap();
    assert!(
        e.contains("cannot be read") && e.contains(&sdir.display().to_string()),
        "{j}"
    );
    eprintln!("unreadable state: {e}");
    kill(&mut s);
}
