//! The symbolic step judge: `POST /v1/judge`, `GET /v1/models`, `stepkto judge`,
//! `stepkto eval processbench` and `stepkto eval flawed-steps`, on real ProcessBench items.

mod common;

use common::{Db, db_url, get, post, run_cli, run_ok, spawn_app};
use serde_json::{Value, json};
use stepkto::config::Limits;
use stepkto::judge::{first_wrong, judge_steps};
use stepkto::outcome::Budget;

fn sample() -> Vec<Value> {
    include_str!("data/processbench_sample.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// ProcessBench: a refutation before the labelled first error (or anywhere in a correct
/// solution) is a false alarm; they must stay under 1% of samples.
#[test]
fn processbench_false_refutations_stay_under_one_percent() {
    let rows = sample();
    let (mut false_alarms, mut caught) = (0, 0);
    for r in &rows {
        let steps: Vec<String> = serde_json::from_value(r["steps"].clone()).unwrap();
        let label = r["label"].as_i64().unwrap();
        let problem = r["problem"].as_str().unwrap();
        let pred = first_wrong(&judge_steps(problem, &steps, 0.5, &Budget::default()));
        if pred >= 0 && (label < 0 || pred < label) {
            false_alarms += 1;
        }
        if label >= 0 && pred == label {
            caught += 1;
        }
    }
    assert!(rows.len() > 190);
    assert!(
        false_alarms * 100 <= rows.len(),
        "{false_alarms} false alarms in {} samples",
        rows.len()
    );
    assert!(
        caught >= 5,
        "only {caught} errors caught at the labelled step"
    );
}

async fn judge_over_http(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_app(Some(url), Limits::default()).await;
    let models = get(app.addr, "/v1/models").await.json();
    assert_eq!(models[0]["id"], "symbolic");
    let body = json!({"items": [
        {"id": "a", "problem": "How many clips?", "steps": ["In May she sold 48/2 = 24 clips.", "Altogether $48 + 24 = 72$.", "The answer is 72."]},
        {"id": "b", "problem": "p", "solution": "First $7 \\times 8 = 54$.\n\nSo the answer is 54."},
        {"id": "c", "problem": "p"},
        {"id": "d", "problem": "p", "steps": "not a list"}
    ]});
    let r = post(app.addr, "/v1/judge", body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["model"], "symbolic");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], "a");
    assert_eq!(items[0]["first_wrong_step"], -1);
    assert_eq!(items[0]["steps"][0]["symbolic"]["status"], "verified");
    assert_eq!(items[0]["steps"][1]["score"], 1.0);
    assert_eq!(items[0]["steps"][2]["symbolic"]["status"], "unknown");
    assert_eq!(items[0]["aggregate"]["min"], 0.5);
    assert_eq!(items[1]["first_wrong_step"], 0);
    assert_eq!(items[1]["steps"][0]["symbolic"]["status"], "refuted");
    assert!(
        items[1]["steps"][0]["symbolic"]["detail"]
            .as_str()
            .unwrap()
            .contains("56")
    );
    assert_eq!(items[1]["steps"][0]["label"], false);
    assert_eq!(items[1]["aggregate"]["product"], 0.0);
    assert_eq!(items[2]["error"]["error_type"], "validation");
    assert_eq!(items[3]["error"]["error_type"], "validation");
    assert_eq!(items[0]["cached"], false);
    // Judged once, then served from the cache.
    let again = post(app.addr, "/v1/judge", body).await.json();
    assert_eq!(again["items"][0]["cached"], true);
    assert_eq!(again["items"][0]["steps"], v["items"][0]["steps"]);
    // Bad requests.
    let bad = post(
        app.addr,
        "/v1/judge",
        json!({"model": "Qwen/Qwen2.5-Math-PRM-7B", "items": []}),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["error"].as_str().unwrap().contains("symbolic"));
    assert_eq!(
        post(app.addr, "/v1/judge", json!({"items": [], "threshold": 2}))
            .await
            .status,
        422
    );
    assert_eq!(
        post(app.addr, "/v1/judge", json!({"steps": []}))
            .await
            .status,
        422
    );
    app.stop().await;
}

#[tokio::test]
async fn judge_over_http_sqlite() {
    judge_over_http(Db::Sqlite).await;
}

#[tokio::test]
async fn judge_over_http_postgres() {
    judge_over_http(Db::Postgres).await;
}

#[test]
fn judge_and_eval_commands() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/processbench_sample.jsonl"
    );
    let pb = run_ok(&[
        "eval",
        "processbench",
        "--input",
        sample,
        "--model",
        "symbolic",
    ]);
    assert!(pb.contains("accuracy on correct samples:   100.0%"), "{pb}");
    assert!(pb.contains("false alarms (a step flagged before the first error, or in a correct sample): 0 = 0.00% of samples"), "{pb}");
    // The expected rate comes from the file's own labels, counted here (issue 9, class 10).
    let rows = self::sample();
    let correct: Vec<&Value> = rows
        .iter()
        .filter(|r| r["final_answer_correct"] == true)
        .collect();
    let flawed = correct
        .iter()
        .filter(|r| r["label"].as_i64() >= Some(0))
        .count();
    assert!(correct.len() > 100 && flawed > 0);
    let fs = run_ok(&["eval", "flawed-steps", "--input", sample]);
    assert!(
        fs.contains(&format!(
            "solutions with a correct final answer: {}",
            correct.len()
        )),
        "{fs}"
    );
    assert!(
        fs.contains(&format!("of which with a step labelled wrong:   {flawed}")),
        "{fs}"
    );
    let rate = 100.0 * flawed as f64 / correct.len() as f64;
    assert!(
        fs.contains(&format!("flawed-step rate: {rate:.1}%")),
        "{fs}"
    );
    let out = run_ok(&["judge", "--model", "symbolic", "--input", sample]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 196);
    assert!(
        lines
            .iter()
            .all(|l| l["steps"].is_array() && l["first_wrong_step"].is_i64())
    );
    let bad = run_cli(&["judge", "--model", "/no/such/prm", "--input", sample]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/no/such/prm does not exist"));
}
