//! Eval records (issue 12, item 6) against SQLite and PostgreSQL: `POST /v1/evals` files
//! every sample under its class and stores all or nothing; the list filters, the record and
//! its samples page by class; `stepkto eval processbench | flawed-steps --record` writes a
//! record the server then serves, with each judged step's text and verdict.

mod common;

use std::net::SocketAddr;

use common::{Db, db_url, get, post, request_with, run_cli, spawn_jobs_app, tiny};
use serde_json::{Value, json};
use stepkto::api::Service;

fn sample(id: &str, answer: Option<bool>, labels: &[Option<bool>]) -> Value {
    let steps: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(h, l)| json!({"text": format!("step {h} of {id}"), "correct": l, "score": 0.5}))
        .collect();
    json!({"id": id, "problem": format!("problem {id}"), "final_answer_correct": answer, "steps": steps})
}

fn record(model: &str, samples: Vec<Value>) -> Value {
    json!({"model": model, "dataset": "math500", "kind": "generate", "round": 2,
        "metrics": {"pass_at_1": 0.5, "flawed_step_rate": 0.25, "pass_at_k": {"1": 0.5, "2": 0.7}},
        "counts": {"problems": samples.len()}, "samples": samples})
}

async fn total(a: SocketAddr) -> u64 {
    get(a, "/v1/evals").await.json()["total"].as_u64().unwrap()
}

async fn posted_records(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_jobs_app(url, Service::default(), None).await;
    let a = app.addr;
    assert_eq!(total(a).await, 0);

    // 2 correct, 1 flawed (a step labelled wrong), 1 wrong, 1 unknown; null labels are no evidence
    let samples = vec![
        sample("c1", Some(true), &[Some(true), Some(true)]),
        sample("f1", Some(true), &[Some(true), Some(false)]),
        sample("w1", Some(false), &[Some(true)]),
        sample("c2", Some(true), &[None, Some(true)]),
        sample("u1", None, &[Some(false)]),
    ];
    let r = post(a, "/v1/evals", record("llama-m2", samples.clone())).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let c = r.json();
    assert_eq!(c["samples"], 5);
    assert_eq!(
        c["classes"],
        json!({"correct": 2, "flawed": 1, "wrong": 1, "unknown": 1})
    );
    let id = c["id"].as_str().unwrap().to_string();
    let other = post(a, "/v1/evals", record("qwen-m0", samples[..2].to_vec())).await;
    assert_eq!(other.status, 201);

    // the list: newest first, filtered by model, dataset, kind
    let all = get(a, "/v1/evals").await.json();
    assert_eq!(all["total"], 2);
    let mine = get(a, "/v1/evals?model=llama-m2&dataset=math500&kind=generate")
        .await
        .json();
    assert_eq!(mine["total"], 1);
    let v = &mine["records"][0];
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["round"], 2);
    assert_eq!(v["metrics"]["pass_at_k"]["2"], 0.7);
    assert_eq!(v["counts"]["problems"], 5);
    assert!(v["job_id"].is_null());
    assert_eq!(get(a, "/v1/evals?model=nobody").await.json()["total"], 0);
    assert_eq!(get(a, &format!("/v1/evals/{id}")).await.json(), *v);
    assert_eq!(get(a, "/v1/evals/ev-nope").await.status, 404);

    // samples page by class, in order, and one by index
    let f = get(a, &format!("/v1/evals/{id}/samples?filter=flawed"))
        .await
        .json();
    assert_eq!(f["total"], 1);
    assert_eq!(f["samples"][0]["index"], 1);
    assert_eq!(f["samples"][0]["sample"], samples[1]);
    let c = get(
        a,
        &format!("/v1/evals/{id}/samples?filter=correct&limit=1&offset=1"),
    )
    .await
    .json();
    assert_eq!(c["total"], 2);
    assert_eq!(c["samples"][0]["sample"]["id"], "c2");
    let every = get(a, &format!("/v1/evals/{id}/samples")).await.json();
    let classes: Vec<&str> = every["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["correct", "flawed", "wrong", "correct", "unknown"]
    );
    let one = get(a, &format!("/v1/evals/{id}/samples/2")).await.json();
    assert_eq!(one["class"], "wrong");
    assert_eq!(one["sample"]["steps"][0]["text"], "step 0 of w1");
    assert_eq!(
        get(a, &format!("/v1/evals/{id}/samples/9")).await.status,
        404
    );
    for q in [
        "filter=nice",
        "limit=0",
        "limit=5000",
        "offset=-1",
        "bogus=1",
    ] {
        let s = get(a, &format!("/v1/evals/{id}/samples?{q}")).await.status;
        assert!(s == 422 || s == 400, "{q}: {s}");
    }
    assert_eq!(get(a, "/v1/evals/ev-nope/samples").await.status, 404);

    // bad records: 422 naming what is wrong, nothing stored
    let mut bad_samples = samples.clone();
    bad_samples[1]["final_answer_correct"] = json!("yes");
    bad_samples[3]["steps"][0]["score"] = json!(3.0);
    bad_samples.push(json!("not an object"));
    let r = post(a, "/v1/evals", record("bad", bad_samples)).await;
    assert_eq!(r.status, 422);
    let b = r.json();
    assert_eq!(b["bad_sample_count"], 3);
    let listed: Vec<u64> = b["bad_samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 3, 5]);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("final_answer_correct")
    );
    let cases = [
        (json!({"model": ""}), "model"),
        (json!({"model": "a\u{0}b"}), "model"),
        (json!({"dataset": "x".repeat(300)}), "dataset"),
        (json!({"kind": "Process Bench"}), "kind"),
        (json!({"round": -1}), "round"),
        (json!({"metrics": {"f1": "high"}}), "metrics.f1"),
        (
            json!({"metrics": {"pass_at_k": {"1": [1]}}}),
            "metrics.pass_at_k.1",
        ),
        (json!({"counts": {"n": -3}}), "counts.n"),
        (json!({"counts": {"n": 1.5}}), "counts.n"),
        (json!({"extra": 1}), "extra"),
        (json!({"samples": {"a": 1}}), "samples"),
    ];
    for (patch, field) in cases {
        let mut body = record("m", samples.clone());
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = post(a, "/v1/evals", body).await;
        assert_eq!(r.status, 422, "{patch}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(field), "{patch}: {e}");
    }
    let r = request_with(a, "POST", "/v1/evals", "{not json".to_string(), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_type"], "validation");
    assert_eq!(total(a).await, 2, "nothing of a bad record is stored");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_records_sqlite() {
    posted_records(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_records_postgres() {
    posted_records(Db::Postgres).await;
}

/// The sample and size budgets hold: more samples than `--max-eval-samples` is 422, a body
/// over `--max-dataset-bytes` 413, and a sample with more steps than a record allows 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_budgets() {
    let url = db_url(Db::Sqlite).await.unwrap();
    let svc = Service {
        max_eval_samples: 3,
        max_dataset_bytes: 64 * 1024,
        ..Service::default()
    };
    let app = spawn_jobs_app(url, svc, None).await;
    let a = app.addr;
    let four = vec![sample("a", Some(true), &[]); 4];
    let r = post(a, "/v1/evals", record("m", four)).await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--max-eval-samples")
    );
    let big = vec![json!({"final_answer_correct": true, "pad": "x".repeat(70 * 1024)})];
    let r = post(a, "/v1/evals", record("m", big)).await;
    assert_eq!(r.status, 413);
    let steps: Vec<Value> = (0..1001).map(|_| json!({"correct": true})).collect();
    let r = post(
        a,
        "/v1/evals",
        record(
            "m",
            vec![json!({"final_answer_correct": true, "steps": steps})],
        ),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("1000 steps"));
    // nesting deeper than the JSON parser's limit is a 400, not a crash
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = request_with(a, "POST", "/v1/evals", deep, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(get(a, "/v1/evals").await.json()["total"], 0);
    app.stop().await;
}

/// `--record` on the CLI's evals: ProcessBench with the symbolic judge and the flawed-step
/// rate from a file's labels, both stored in the database a server then reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_records_are_served() {
    let dir = tiny::temp_dir("cli-record");
    let db = format!("sqlite://{}", dir.join("db.sqlite").display());
    let pb = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/processbench_sample.jsonl"
    );
    let out = run_cli(&[
        "eval",
        "processbench",
        "--input",
        pb,
        "--record",
        "--record-dataset",
        "pb-sample",
        "--database-url",
        &db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recorded eval ev-"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();

    // flawed-steps from labels: two right answers (one flawed at step 1), one wrong
    let lab = dir.join("labelled.jsonl");
    std::fs::write(
        &lab,
        concat!(
            "{\"id\": \"p\", \"problem\": \"1+1\", \"steps\": [\"1+1=2\", \"so 2\"], \"final_answer_correct\": true, \"first_wrong_step\": -1}\n",
            "{\"id\": \"q\", \"problem\": \"2+2\", \"steps\": [\"2+2=4\", \"4+0=5\", \"so 4\"], \"final_answer_correct\": true, \"first_wrong_step\": 1}\n",
            "{\"id\": \"r\", \"problem\": \"3+3\", \"steps\": [\"3+3=7\"], \"final_answer_correct\": false, \"first_wrong_step\": 0}\n",
        ),
    )
    .unwrap();
    let lab_s = lab.to_str().unwrap();
    // without a model name the record cannot be filed
    let out = run_cli(&[
        "eval",
        "flawed-steps",
        "--input",
        lab_s,
        "--record",
        "--database-url",
        &db,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--record-model"));
    let out = run_cli(&[
        "eval",
        "flawed-steps",
        "--input",
        lab_s,
        "--record",
        "--record-model",
        "llama-m1",
        "--record-round",
        "1",
        "--database-url",
        &db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let app = spawn_jobs_app(db, Service::default(), None).await;
    let a = app.addr;
    let pbr = get(a, "/v1/evals?kind=processbench").await.json();
    assert_eq!(pbr["total"], 1, "{pbr}");
    let r = &pbr["records"][0];
    assert_eq!(r["model"], "symbolic");
    assert_eq!(r["dataset"], "pb-sample");
    // the record holds the numbers the command printed
    let f1 = r["metrics"]["f1"].as_f64().unwrap();
    assert!(
        text.contains(&format!("F1:                            {:.1}", 100.0 * f1)),
        "{text}"
    );
    let n = r["counts"]["samples"].as_u64().unwrap();
    assert!(text.contains(&format!("samples: {n} ")), "{text}");
    let rid = r["id"].as_str().unwrap();
    let s = get(a, &format!("/v1/evals/{rid}/samples?limit=1000"))
        .await
        .json();
    assert_eq!(s["total"].as_u64().unwrap(), n);
    let first = &s["samples"][0]["sample"];
    assert!(first["steps"][0]["text"].is_string());
    assert!(first["steps"][0]["symbolic"].is_string());
    assert!(first["label"].is_i64() && first["prediction"].is_i64());
    // a refuted step carries its false claim
    let refuted = s["samples"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| x["sample"]["steps"].as_array().unwrap().clone())
        .find(|st| st["symbolic"] == "refuted")
        .expect("the sample has refuted steps");
    assert!(!refuted["detail"].as_str().unwrap().is_empty(), "{refuted}");
    assert_eq!(refuted["correct"], false);

    let fs = get(a, "/v1/evals?kind=flawed-steps").await.json();
    assert_eq!(fs["total"], 1);
    let r = &fs["records"][0];
    assert_eq!(r["model"], "llama-m1");
    assert_eq!(r["round"], 1);
    assert_eq!(r["dataset"], "labelled");
    assert_eq!(r["metrics"]["flawed_step_rate"], 0.5);
    assert_eq!(
        r["classes"],
        json!({"correct": 1, "flawed": 1, "wrong": 1, "unknown": 0})
    );
    let rid = r["id"].as_str().unwrap();
    let f = get(a, &format!("/v1/evals/{rid}/samples?filter=flawed"))
        .await
        .json();
    let steps = &f["samples"][0]["sample"]["steps"];
    assert_eq!(
        *steps,
        json!([{"text": "2+2=4", "correct": true}, {"text": "4+0=5", "correct": false}, {"text": "so 4", "correct": null}])
    );
    app.stop().await;
}
