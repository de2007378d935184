//! The reward routes (issue 14, item 1) with the JSON each framework's own code sends,
//! against SQLite and PostgreSQL:
//! - OpenRLHF, `openrlhf/utils/remote_rm_utils.py`: `remote_rm_fn_ray` posts
//!   `{"query": queries, "prompts": prompts, "labels": labels}` (queries decoded with
//!   `skip_special_tokens=False` in `ppo_utils/experience_maker.py`, so they hold the chat
//!   template's tokens) and `update_samples_with_rewards` reads `rewards`, `scores` and
//!   every list of `extra_logs` as a tensor;
//! - slime, `slime/rollout/rm_hub/__init__.py`: `remote_rm` posts
//!   `{"prompt": sample.prompt, "response": sample.response, "label": sample.label}` and
//!   takes the reward from the answer's `--reward-key` field;
//! - NeMo Gym's verify contract (`resources_servers/math_with_judge/app.py`): the request
//!   with `responses_create_params`, the model's OpenAI Responses object in `response`, and
//!   `expected_answer`, answered with the request's fields plus `reward`.

mod common;

use common::{Db, db_url, post, request_with, spawn_jobs_app};
use serde_json::{Value, json};
use stepkto::api::Service;

const PROMPT: &str = "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>user\nFor example, 3 + 4 = \\boxed{7}. Now: what is 1/2 + 1/4?<|im_end|>\n<|im_start|>assistant\n";

fn query(response: &str) -> String {
    format!("{PROMPT}{response}<|im_end|>")
}

async fn routes(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_jobs_app(url, Service::default(), None).await;
    let a = app.addr;

    // OpenRLHF: right, wrong, no answer (the prompt's worked example must not count), and
    // a label given as a number
    let body = json!({
        "query": [
            query("We add: 1/2 + 1/4 = 2/4 + 1/4 = 3/4. So the answer is \\boxed{\\frac{3}{4}}."),
            query("1/2 + 1/4 = 2/6, so \\boxed{\\frac{1}{3}}."),
            query("I am not sure."),
            query("The total is \\boxed{0.75}"),
        ],
        "prompts": [PROMPT, PROMPT, PROMPT, PROMPT],
        "labels": ["\\frac{3}{4}", "\\frac{3}{4}", "\\frac{3}{4}", 0.75],
    });
    let r = post(a, "/get_reward", body).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let v = r.json();
    assert_eq!(v["rewards"], json!([1.0, 0.0, 0.0, 1.0]));
    assert_eq!(v["scores"], v["rewards"]);
    assert_eq!(v["extra_logs"]["correct"], json!([1.0, 0.0, 0.0, 1.0]));
    assert_eq!(v["extra_logs"]["has_answer"], json!([1.0, 1.0, 0.0, 1.0]));
    assert_eq!(
        v["extra_logs"]["budget_exceeded"],
        json!([0.0, 0.0, 0.0, 0.0])
    );
    // every extra_logs entry is a list of numbers, one per query (OpenRLHF makes tensors)
    for (k, l) in v["extra_logs"].as_object().unwrap() {
        let l = l.as_array().unwrap();
        assert_eq!(l.len(), 4, "{k}");
        assert!(l.iter().all(Value::is_number), "{k}");
    }
    assert_eq!(v["details"][0]["extracted"], "\\frac{3}{4}");
    assert_eq!(v["details"][2]["reason"], "no_answer");
    assert_eq!(v["details"][1]["reason"], "not_equal");
    // without prompts the whole query is read (the response's own answer is the last)
    let r = post(
        a,
        "/get_reward",
        json!({"query": [query("so \\boxed{3/4}")], "labels": ["0.75"]}),
    )
    .await;
    assert_eq!(r.json()["rewards"], json!([1.0]));
    // empty lists are a 200 with empty lists
    let r = post(
        a,
        "/get_reward",
        json!({"query": [], "prompts": [], "labels": []}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rewards"], json!([]));
    assert_eq!(r.json()["extra_logs"]["correct"], json!([]));
    // bad shapes: clear 4xx naming the field
    for (b, field) in [
        (json!({"query": ["x"]}), "labels"),
        (json!({"query": ["x", "y"], "labels": ["1"]}), "labels"),
        (
            json!({"query": ["x"], "labels": ["1"], "prompts": []}),
            "prompts",
        ),
        (json!({"query": "x", "labels": ["1"]}), "query"),
    ] {
        let r = post(a, "/get_reward", b.clone()).await;
        assert_eq!(r.status, 422, "{b}");
        assert!(
            r.json()["error"].as_str().unwrap().contains(field),
            "{b}: {:?}",
            r.json()
        );
    }
    assert_eq!(
        request_with(a, "POST", "/get_reward", "{", &[])
            .await
            .status,
        400
    );
    // many one-sample requests at once, as current OpenRLHF sends them: all answered
    let mut tasks = Vec::new();
    for i in 0..64 {
        tasks.push(tokio::spawn(async move {
            let b = json!({"query": [query(&format!("\\boxed{{{i}}}"))], "prompts": [PROMPT], "labels": [format!("{}", i % 2)]});
            post(a, "/get_reward", b).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        let want = if i < 2 { 1.0 } else { 0.0 };
        assert_eq!(r.json()["rewards"], json!([want]), "sample {i}");
    }

    // per-step scores for process-supervised RL (the symbolic judge here)
    let b = json!({"query": [query("First, $1/2 = 2/4$.\n\nThen $2/4 + 1/4 = 4/4$.\n\nSo \\boxed{1}.")],
        "prompts": [PROMPT], "labels": ["3/4"], "steps": true});
    let r = post(a, "/get_reward", b).await.json();
    let steps = &r["details"][0]["steps"];
    assert_eq!(steps["scores"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(steps["labels"], json!([true, false, true]));
    assert_eq!(steps["first_wrong_step"], 1);

    // slime: one sample, the reward under `reward` (and `score`)
    let r = post(
        a,
        "/v1/reward",
        json!({"prompt": PROMPT, "response": "1/2+1/4 = \\boxed{3/4}", "label": "0.75"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let v = r.json();
    assert_eq!(v["reward"], 1.0);
    assert_eq!(v["score"], 1.0);
    assert_eq!(v["correct"], true);
    assert!(v.get("steps").is_none());
    let r = post(
        a,
        "/v1/reward",
        json!({"prompt": "p", "response": "no idea", "label": null}),
    )
    .await;
    assert_eq!(r.json()["reward"], 0.0);
    assert_eq!(
        post(a, "/v1/reward", json!({"prompt": "p"})).await.status,
        422
    );
    // slime's Sample.prompt is `str | list[dict[str, str]]`: chat messages come as they are
    let chat = json!([
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": "What is 1/2 + 1/4?"}]);
    let r = post(
        a,
        "/v1/reward",
        json!({"prompt": chat, "response": "1/2 + 1/4 = 3/4\nSo \\boxed{3/4}", "label": "3/4", "steps": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["reward"], 1.0);
    assert!(r.json()["steps"]["scores"].is_array(), "{:?}", r.json());
    let r = post(
        a,
        "/v1/reward",
        json!({"prompt": 7, "response": "\\boxed{1}", "label": "1"}),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("prompt"));

    // NeMo Gym: the request comes back with the reward added
    let nemo = json!({
        "responses_create_params": {"input": [
            {"role": "system", "content": "Put the final answer in \\boxed{}."},
            {"role": "user", "content": "What is 1/2 + 1/4?"}]},
        "response": {"id": "resp_1", "object": "response", "model": "policy", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "maybe \\boxed{9}"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "1/2 + 1/4 = \\boxed{\\frac34}", "annotations": []}]}]},
        "expected_answer": "3/4"
    });
    let r = post(a, "/verify", nemo.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let v = r.json();
    assert_eq!(v["reward"], 1.0);
    assert_eq!(v["expected_answer"], "3/4");
    assert_eq!(v["response"], nemo["response"]);
    assert_eq!(
        v["responses_create_params"],
        nemo["responses_create_params"]
    );
    assert!(v["extracted_answer"].as_str().unwrap().contains("frac"));
    let mut wrong = nemo.clone();
    wrong["expected_answer"] = json!("9");
    assert_eq!(post(a, "/verify", wrong).await.json()["reward"], 0.0);
    let mut bad = nemo.clone();
    bad["response"] = json!({"output": "text"});
    let r = post(a, "/verify", bad).await;
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("response.output")
    );
    // `input` may be a plain string, and message content a list of input_text parts
    let mut plain = nemo.clone();
    plain["responses_create_params"]["input"] = json!("What is 1/2 + 1/4?");
    plain["steps"] = json!(true);
    let r = post(a, "/verify", plain).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["reward"], 1.0);
    assert!(r.json()["step_scores"]["scores"].is_array());
    let mut parts = nemo.clone();
    parts["responses_create_params"]["input"][1]["content"] =
        json!([{"type": "input_text", "text": "What is 1/2 + 1/4?"}]);
    assert_eq!(post(a, "/verify", parts).await.json()["reward"], 1.0);
    let mut none = nemo.clone();
    none.as_object_mut().unwrap().remove("expected_answer");
    assert_eq!(post(a, "/verify", none).await.status, 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reward_routes_sqlite() {
    routes(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reward_routes_postgres() {
    routes(Db::Postgres).await;
}

/// The reward mapping is the server's: numbers per verdict kind, from its flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reward_map_is_configurable() {
    let dir = common::tiny::temp_dir("reward-map");
    let port = common::bin::free_port();
    let args: Vec<String> = [
        "--database-url",
        &format!("sqlite://{}", dir.join("db.sqlite").display()),
        "--jobs-dir",
        &dir.join("jobs").display().to_string(),
        "--reward-correct",
        "2",
        "--reward-wrong",
        "-1",
        "--reward-no-answer",
        "-2",
        "--max-solution-len",
        "200",
        "--reward-budget",
        "-3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut s = common::bin::start(&dir.join("log"), port, &args).await;
    let b = json!({"query": ["\\boxed{1}", "\\boxed{2}", "nothing", format!("{} \\boxed{{1}}", "x".repeat(300))],
        "labels": ["1", "1", "1", "1"]});
    let r = post(s.addr, "/get_reward", b).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["rewards"], json!([2.0, -1.0, -2.0, -3.0]));
    assert_eq!(
        r.json()["extra_logs"]["budget_exceeded"],
        json!([0.0, 0.0, 0.0, 1.0])
    );
    let info = common::get(s.addr, "/info").await.json();
    assert_eq!(
        info["limits"]["rewards"],
        json!({"correct": 2.0, "wrong": -1.0, "no_answer": -2.0, "budget": -3.0})
    );
    common::bin::kill(&mut s);
}
