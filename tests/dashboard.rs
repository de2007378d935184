//! The dashboard in headless Chromium (issue 13), driven through chromedriver: the server on
//! port 0 with a real database holding recorded evals and a finished tiny job. The test
//! opens the overview and checks the rates and intervals shown against the records, sorts,
//! compares two rows, clicks through to a flawed solution and checks its step verdicts,
//! steps with `j`, follows a permalink, switches the theme, watches the job list and a
//! run's curves, and sees the error and empty states. It saves a screenshot of each view in
//! both themes (into STEPKTO_SCREENSHOTS, else target/screenshots).
//!
//! Needs Debian's `chromium` and `chromium-driver`; scripts/test.sh installs them and sets
//! STEPKTO_REQUIRE_BROWSER=1, under which a missing browser fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::browser;
use common::{Db, db_url, get, post, request_with, spawn_jobs_app, tiny};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};
use stepkto::api::Service;
use stepkto::jobs::JobsConfig;

/// `flawed` flawed and `right - flawed` correct solutions, then 5 wrong ones. Each flawed
/// solution has a refuted step with its claim, and PRM scores.
fn record(model: &str, round: i64, dataset: &str, right: usize, flawed: usize) -> Value {
    let mut samples = Vec::new();
    for i in 0..right + 5 {
        let ok = i < right;
        let bad = i < flawed;
        let steps = json!([
            {"text": format!("We have {i} + 1 = {}.", i + 1), "correct": true, "score": 0.9, "symbolic": "verified"},
            {"text": format!("Then {i} * 2 = {}.", if bad { 2 * i + 1 } else { 2 * i }), "correct": !bad,
             "score": if bad { 0.2 } else { 0.8 }, "symbolic": if bad { "refuted" } else { "verified" },
             "detail": if bad { json!(format!("`{i} * 2 = {}` is false", 2 * i + 1)) } else { Value::Null }},
            {"text": "So the answer follows.", "correct": null, "symbolic": "unknown"}
        ]);
        samples.push(json!({"id": format!("{model}-{i}"), "problem": format!("Problem {i}: compute {i} * 2."),
            "final_answer_correct": ok, "extracted": format!("{}", 2 * i), "answer": format!("{}", 2 * i), "steps": steps}));
    }
    json!({"model": model, "dataset": dataset, "kind": "generate", "round": round,
        "metrics": {"pass_at_1": right as f64 / (right + 5) as f64, "maj_at_k": 0.5},
        "counts": {"problems": right + 5, "k": 4}, "samples": samples})
}

async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// The element, waited for (views draw after their requests answer).
async fn el(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn goto(c: &Client, url: &str) {
    c.goto(url).await.unwrap();
    // a hash change within the page does not reload it: make sure the view is redrawn
    js(
        c,
        "window.dispatchEvent(new HashChangeEvent('hashchange')); return 1",
    )
    .await;
}

async fn shot(c: &Client, name: &str) {
    let dir = std::env::var_os("STEPKTO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // charts finish drawing
    std::fs::write(
        dir.join(format!("{name}.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
}

async fn set_theme(c: &Client, want: &str) {
    let now = js(c, "return document.documentElement.dataset.theme").await;
    if now != want {
        el(c, "#theme").await.click().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser() {
    let Some(b) = browser().await else { return };
    let c = &b.client;
    let dir = tiny::temp_dir("dash");

    // an empty database says how to record a run
    let empty = spawn_jobs_app(db_url(Db::Sqlite).await.unwrap(), Service::default(), None).await;
    goto(c, &format!("http://{}/", empty.addr)).await;
    let t = text(c, "#view pre.cmd").await;
    assert!(t.contains("--record"), "{t}");
    empty.stop().await;

    let jobs = JobsConfig {
        dir: dir.join("jobs"),
        max_concurrent: 1,
        train_threads: 1,
        lease_secs: 2,
        poll_ms: 50,
        ..Default::default()
    };
    let app = spawn_jobs_app(
        db_url(Db::Sqlite).await.unwrap(),
        Service::default(),
        Some(jobs),
    )
    .await;
    let a = app.addr;
    let base = format!("http://{a}/");
    let mut ids = Vec::new();
    for (m, r, d, right, flawed) in [
        ("llama-m0", 0, "math500", 40, 12),
        ("llama-m1", 1, "math500", 40, 4),
        ("tiny", 0, "gsm8k", 10, 1),
    ] {
        let resp = post(a, "/v1/evals", record(m, r, d, right, flawed)).await;
        assert_eq!(resp.status, 201, "{:?}", resp.json());
        ids.push(resp.json()["id"].as_str().unwrap().to_string());
    }
    // a finished tiny job with two evaluated rounds (M0 and M1)
    let model = dir.join("m0");
    tiny::write_checkpoint_with("rlhflow", &model, false, &json!({}));
    let problems = "{\"id\": \"a\", \"problem\": \"What is 2 + 3?\", \"answer\": \"5\"}\n{\"id\": \"b\", \"problem\": \"What is 7 - 4?\", \"answer\": \"3\"}\n";
    let ds = request_with(a, "POST", "/v1/datasets?name=toy", problems, &[])
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = post(a, "/v1/train", json!({"method": "step-kto", "model": model, "problems": ds, "eval_problems": ds,
        "system": "", "rounds": 1, "epochs": 3, "micro_batch": 2, "sample": {"samples": 2, "max_new_tokens": 10},
        "eval": {"samples": 2, "max_new_tokens": 8}, "optim": {"learning_rate": 1e-3}})).await;
    assert_eq!(job.status, 202, "{:?}", job.json());
    let job = job.json()["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    while get(a, &format!("/v1/train/{job}")).await.json()["state"] != "succeeded" {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the job did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api = get(a, "/v1/overview").await.json();
    let row = |id: &str| {
        api["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["record_id"] == id)
            .unwrap()
            .clone()
    };
    let pct = |x: &Value| format!("{:.1}%", 100.0 * x.as_f64().unwrap());

    // overview: every record's rate and interval as the records say, small n greyed
    goto(c, &base).await;
    text(c, "#overview tbody tr").await;
    let n_rows = c
        .find_all(Locator::Css("#overview tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(n_rows, 5, "three posted records and the job's two rounds");
    for id in &ids {
        let r = row(id);
        let shown = text(c, &format!("tr[data-record='{id}'] td.rate")).await;
        let want = format!(
            "{} [{}, {}]",
            pct(&r["flawed_rate"]),
            pct(&r["ci_low"]),
            pct(&r["ci_high"])
        );
        assert!(
            shown.starts_with(&want),
            "{id}: {shown:?} should start with {want:?}"
        );
        let class = el(c, &format!("tr[data-record='{id}']"))
            .await
            .attr("class")
            .await
            .unwrap();
        assert_eq!(
            class.as_deref() == Some("small"),
            r["small_n"] == true,
            "{id}: {class:?}"
        );
    }
    assert!(
        text(c, &format!("tr[data-record='{}'] td.rate", ids[0]))
            .await
            .starts_with("30.0%")
    );
    shot(c, "overview-light").await;
    set_theme(c, "dark").await;
    shot(c, "overview-dark").await;
    set_theme(c, "light").await;

    // sort by rate (highest first after two clicks), in the URL
    el(c, "th[data-col='flawed_rate']")
        .await
        .click()
        .await
        .unwrap();
    el(c, "th[data-col='flawed_rate']")
        .await
        .click()
        .await
        .unwrap();
    let first = el(c, "#overview tbody tr")
        .await
        .attr("data-record")
        .await
        .unwrap();
    assert_eq!(
        first.as_deref(),
        Some(ids[0].as_str()),
        "30% is the highest rate"
    );
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("sort=flawed_rate&dir=desc")
    );

    // compare the two llama rounds
    for id in &ids[..2] {
        el(c, &format!("tr[data-record='{id}'] input[type=checkbox]"))
            .await
            .click()
            .await
            .unwrap();
    }
    let cmp = get(
        a,
        &format!("/v1/overview/compare?a={}&b={}", ids[0], ids[1]),
    )
    .await
    .json();
    let diff = text(c, "#cmp-diff").await;
    assert!(
        diff.starts_with(&format!(
            "{:.1} points",
            100.0 * cmp["flawed_rate_difference"].as_f64().unwrap()
        )),
        "{diff}"
    );
    let overlap = text(c, "#cmp-overlap").await;
    assert_eq!(
        overlap.contains("do not overlap"),
        cmp["intervals_overlap"] == false,
        "{overlap}"
    );

    // from the rate to the flawed solutions behind it, one at a time
    el(c, &format!("tr[data-record='{}'] a.rate-link", ids[0]))
        .await
        .click()
        .await
        .unwrap();
    let flawed = get(
        a,
        &format!("/v1/evals/{}/samples?filter=flawed&limit=100", ids[0]),
    )
    .await
    .json();
    assert_eq!(flawed["total"], 12);
    let idx = |k: usize| flawed["samples"][k]["index"].as_i64().unwrap().to_string();
    let check_sample = |k: usize| {
        let want = flawed["samples"][k]["sample"].clone();
        async move {
            let shown = c
                .wait()
                .at_most(Duration::from_secs(20))
                .for_element(Locator::Css(&format!("#sample[data-index='{}']", idx(k))))
                .await
                .unwrap();
            let steps = shown.find_all(Locator::Css(".step")).await.unwrap();
            assert_eq!(steps.len(), want["steps"].as_array().unwrap().len());
            for (h, st) in steps.iter().enumerate() {
                let c_attr = st.attr("data-correct").await.unwrap().unwrap();
                assert_eq!(c_attr, want["steps"][h]["correct"].to_string(), "step {h}");
                let t = st.text().await.unwrap();
                assert!(
                    t.contains(want["steps"][h]["text"].as_str().unwrap()),
                    "{t}"
                );
                match want["steps"][h]["correct"].as_bool() {
                    Some(true) => assert!(t.contains("✓ right"), "{t}"),
                    Some(false) => {
                        assert!(t.contains("✗ wrong") && t.contains("✗ refuted"), "{t}");
                        assert!(
                            t.contains(want["steps"][h]["detail"].as_str().unwrap()),
                            "{t}"
                        );
                    }
                    None => assert!(t.contains("? unjudged"), "{t}"),
                }
            }
            let all = shown.text().await.unwrap();
            assert!(all.contains(want["problem"].as_str().unwrap()));
            assert!(
                all.contains("✓ right final answer") && all.contains("⚠ flawed"),
                "{all}"
            );
        }
    };
    check_sample(0).await;
    shot(c, "solution-light").await;
    set_theme(c, "dark").await;
    shot(c, "solution-dark").await;
    set_theme(c, "light").await;
    el(c, "body").await.send_keys("j").await.unwrap();
    check_sample(1).await;
    assert!(c.current_url().await.unwrap().as_str().contains("i=1"));
    el(c, "body").await.send_keys("k").await.unwrap();
    check_sample(0).await;

    // a permalink opens the same view in a fresh page
    goto(c, "about:blank").await;
    goto(c, &format!("{base}#/record/{}?filter=flawed&i=2", ids[0])).await;
    check_sample(2).await;
    let active = el(c, "#tabs a.active")
        .await
        .attr("data-filter")
        .await
        .unwrap();
    assert_eq!(active.as_deref(), Some("flawed"));

    // the theme switch changes the page, and is kept
    let before = js(c, "return getComputedStyle(document.body).backgroundColor").await;
    el(c, "#theme").await.click().await.unwrap();
    let after = js(c, "return getComputedStyle(document.body).backgroundColor").await;
    assert_ne!(before, after);
    let theme = js(c, "return document.documentElement.dataset.theme").await;
    let label = text(c, "#theme").await;
    assert!(
        label.to_lowercase().contains(theme.as_str().unwrap()),
        "{label} / {theme}"
    );
    c.refresh().await.unwrap();
    assert_eq!(
        js(c, "return document.documentElement.dataset.theme").await,
        theme
    );
    set_theme(c, "light").await;

    // the job list, live, and the run's curves and rounds
    goto(c, &format!("{base}#/runs")).await;
    text(c, &format!("tr[data-job='{job}'] [data-state='succeeded']")).await;
    goto(c, &format!("{base}#/run/{job}")).await;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#charts canvas"))
        .await
        .unwrap();
    let charts = c
        .find_all(Locator::Css("#charts .chart"))
        .await
        .unwrap()
        .len();
    assert!(charts >= 2, "{charts} charts");
    let rounds = c
        .find_all(Locator::Css("#rounds tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(rounds, 2, "M0 and M1");
    shot(c, "run-light").await;
    set_theme(c, "dark").await;
    shot(c, "run-dark").await;
    set_theme(c, "light").await;
    // the smoothing slider is part of the permalink
    goto(c, &format!("{base}#/run/{job}?ema=0.9&log=1")).await;
    let v = text(c, "#ema-value").await;
    assert_eq!(v, "0.90");

    // a position past the end of the class shows its last solution
    goto(c, &format!("{base}#/record/{}?filter=flawed&i=99", ids[0])).await;
    check_sample(11).await;

    // an error is shown, not a blank page
    goto(c, &format!("{base}#/record/ev-nope")).await;
    let e = text(c, "#view .error").await;
    assert!(e.contains("no eval record ev-nope"), "{e}");
    app.stop().await;
}
