//! HTTP tests against the real router on a random port, with a real database: SQLite always,
//! PostgreSQL when the test command provides one (scripts/test.sh always does).

mod common;

use common::{Db, db_url, get, post, request, spawn_app};
use serde_json::json;
use stepkto::config::Limits;

async fn verify_and_cache(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_app(Some(url.clone()), Limits::default()).await;
    let h = get(app.addr, "/health").await;
    assert_eq!(h.status, 200, "{:?}", h.json());

    let body = json!({"reference": "\\frac{1}{2}", "candidate": "So $x = \\boxed{0.5}$."});
    let first = post(app.addr, "/v1/verify", body.clone()).await;
    assert_eq!(first.status, 200);
    let v = first.json();
    assert_eq!(v["equivalent"], true);
    assert_eq!(v["extracted"], "0.5");
    assert_eq!(v["cached"], false);
    assert_eq!(v["reason"]["tag"], "equal_exact");

    let second = post(app.addr, "/v1/verify", body.clone()).await;
    let mut w = second.json();
    assert_eq!(w["cached"], true);
    w["cached"] = json!(false);
    assert_eq!(v, w, "a cached verdict is the same verdict");
    // Byte-identical apart from the flag.
    let a = String::from_utf8(first.body.to_vec()).unwrap();
    let b = String::from_utf8(second.body.to_vec()).unwrap();
    assert_eq!(a.replace("\"cached\":false", "\"cached\":true"), b);

    // Survives a restart of the service.
    app.stop().await;
    let app = spawn_app(Some(url), Limits::default()).await;
    let third = post(app.addr, "/v1/verify", body).await;
    assert_eq!(third.json()["cached"], true);

    // Metrics count hits and misses.
    let m = get(app.addr, "/metrics").await;
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    assert!(text.contains("stepkto_cache_hits_total 1"), "{text}");
    assert!(
        text.contains("stepkto_http_request_duration_seconds_bucket{route=\"/v1/verify\""),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn verify_caches_across_restarts_sqlite() {
    verify_and_cache(Db::Sqlite).await;
}

#[tokio::test]
async fn verify_caches_across_restarts_postgres() {
    verify_and_cache(Db::Postgres).await;
}

async fn batch(db: Db) {
    let Some(url) = db_url(db).await else { return };
    let app = spawn_app(Some(url), Limits::default()).await;
    let r = post(
        app.addr,
        "/v1/verify",
        json!({"items": [
            {"id": 1, "reference": "x \\ge 5", "candidate": "[5, \\infty)"},
            {"id": 2, "reference": 5},
            {"id": "three", "reference": "3 m", "candidate": "3 cm", "mode": "answer"},
            {"id": 4, "reference": "1", "candidate": "x".repeat(300_000)},
            {"id": 5, "reference": "10^{10^{10}}", "candidate": "10^{10^{10}}+1"}
        ]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["id"], 1);
    assert_eq!(items[0]["equivalent"], true);
    assert_eq!(items[1]["id"], 2);
    assert_eq!(items[1]["error"]["error_type"], "validation");
    assert_eq!(items[2]["id"], "three");
    assert_eq!(items[2]["equivalent"], false);
    assert_eq!(items[3]["error"]["error_type"], "too_large");
    assert_eq!(items[4]["equivalent"], false);
    assert_eq!(items[4]["reason"]["tag"], "budget");
    app.stop().await;
}

#[tokio::test]
async fn batch_items_fail_alone_sqlite() {
    batch(Db::Sqlite).await;
}

#[tokio::test]
async fn batch_items_fail_alone_postgres() {
    batch(Db::Postgres).await;
}

#[tokio::test]
async fn every_error_code_has_a_json_body() {
    let limits = Limits {
        body_limit: 1024 * 1024,
        max_batch: 3,
        ..Limits::default()
    };
    let app = spawn_app(Some(common::sqlite_url()), limits).await;
    let check = |r: &common::Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        let v = r.json();
        assert_eq!(v["error_type"], kind, "{v}");
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()));
    };
    check(
        &request(app.addr, "POST", "/v1/verify", "{\"reference\": ").await,
        400,
        "validation",
    );
    check(
        &request(app.addr, "POST", "/v1/verify", "not json at all").await,
        400,
        "validation",
    );
    check(
        &post(
            app.addr,
            "/v1/verify",
            json!({"reference": 1, "candidate": "1"}),
        )
        .await,
        422,
        "validation",
    );
    check(
        &post(app.addr, "/v1/verify", json!({"reference": "1"})).await,
        422,
        "validation",
    );
    check(
        &post(
            app.addr,
            "/v1/verify",
            json!({"reference": "1", "candidate": "1", "mode": "guess"}),
        )
        .await,
        422,
        "validation",
    );
    check(
        &post(app.addr, "/v1/verify", json!({"items": "no"})).await,
        422,
        "validation",
    );
    check(
        &post(app.addr, "/v1/verify", json!([1, 2])).await,
        422,
        "validation",
    );
    let too_many: Vec<_> = (0..4)
        .map(|_| json!({"reference": "1", "candidate": "1"}))
        .collect();
    check(
        &post(app.addr, "/v1/verify", json!({"items": too_many})).await,
        413,
        "too_large",
    );
    // A 20 MB body.
    let big = format!(
        "{{\"reference\": \"1\", \"candidate\": \"{}\"}}",
        "9".repeat(20 * 1024 * 1024)
    );
    check(
        &request(app.addr, "POST", "/v1/verify", big).await,
        413,
        "too_large",
    );
    // An input over the length budget (inside the body limit).
    check(
        &post(
            app.addr,
            "/v1/verify",
            json!({"reference": "1", "candidate": "1".repeat(300_000)}),
        )
        .await,
        413,
        "too_large",
    );
    check(&get(app.addr, "/nope").await, 404, "not_found");
    check(&get(app.addr, "/v1/verify").await, 405, "validation");
    // 429: every in-flight permit is taken.
    let permits = app
        .state
        .inflight
        .clone()
        .acquire_many_owned(app.state.limits.max_inflight as u32)
        .await
        .unwrap();
    check(
        &post(
            app.addr,
            "/v1/verify",
            json!({"reference": "1", "candidate": "1"}),
        )
        .await,
        429,
        "overloaded",
    );
    drop(permits);
    assert_eq!(
        post(
            app.addr,
            "/v1/verify",
            json!({"reference": "1", "candidate": "1"})
        )
        .await
        .status,
        200
    );
    app.stop().await;

    // 504: a deadline shorter than the work.
    let limits = Limits {
        request_timeout_ms: 1,
        ..Limits::default()
    };
    let app = spawn_app(None, limits).await;
    let items: Vec<_> = (0..400).map(|i| json!({"reference": format!("(x+{i})^2"), "candidate": format!("x^2+{}x+{}", 2 * i, i * i)})).collect();
    check(
        &post(app.addr, "/v1/verify", json!({"items": items})).await,
        504,
        "timeout",
    );
    app.stop().await;

    // 503: the database is down; verdicts are still served.
    let app = spawn_app(
        Some("postgres://postgres@127.0.0.1:1/none".into()),
        Limits::default(),
    )
    .await;
    check(&get(app.addr, "/health").await, 503, "not_ready");
    let r = post(
        app.addr,
        "/v1/verify",
        json!({"reference": "2", "candidate": "\\sqrt{4}"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["equivalent"], true);
    let m = String::from_utf8(get(app.addr, "/metrics").await.body.to_vec()).unwrap();
    // The skipped lookup and the skipped write are both counted.
    assert!(m.contains("stepkto_store_errors_total 2"), "{m}");
    app.stop().await;
}

/// Issue #2's hostile inputs over HTTP: each answered within seconds, the server stays up.
#[tokio::test]
async fn issue_2_hostile_inputs_keep_the_server_up() {
    let app = spawn_app(Some(common::sqlite_url()), Limits::default()).await;
    let hostile = [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        "{".repeat(50_000),
        "2^{2^{2^{2^{100}}}}".to_string(),
        "10^{10^{10}}+1".to_string(),
        "1000!".to_string(),
        "\\frac{1}{0}".to_string(),
        "\u{202e}\u{0}\u{fffd}𝕏 ∑∫ ﬁ \u{200b}".to_string(),
    ];
    for c in &hostile {
        let t0 = std::time::Instant::now();
        let r = post(
            app.addr,
            "/v1/verify",
            json!({"reference": "10^{10^{10}}", "candidate": c}),
        )
        .await;
        assert!(
            r.status == 200 || r.status == 413,
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if r.status == 200 {
            assert_eq!(r.json()["equivalent"], false);
        }
        assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());
    }
    assert_eq!(get(app.addr, "/health").await.status, 200);
    app.stop().await;
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {metrics}"))
}

/// A lone check runs on the async thread under --inline-check-us and falls back to the
/// blocking pool with the whole budget when it needs longer: the verdict is the full
/// budget's either way (2000! against 2000!+1 takes milliseconds and is `not_equal`, not
/// `budget`), and /metrics counts the checks that finished inline; 0 turns it off.
#[tokio::test]
async fn lone_checks_run_inline_within_their_clock() {
    let app = spawn_app(Some(common::sqlite_url()), Limits::default()).await;
    let metrics =
        |a| async move { String::from_utf8(get(a, "/metrics").await.body.to_vec()).unwrap() };
    let before = counter(&metrics(app.addr).await, "stepkto_inline_checks_total");
    let slow = json!({"reference": "2000!", "candidate": "2000!+1", "mode": "answer"});
    let r = post(app.addr, "/v1/verify", slow.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reason"]["tag"], "not_equal", "{:?}", r.json());
    assert_eq!(
        counter(&metrics(app.addr).await, "stepkto_inline_checks_total"),
        before
    );
    // quick checks finish inline (five, so one preempted past its clock does not fail this)
    for k in 0..5 {
        let r = post(
            app.addr,
            "/v1/verify",
            json!({"reference": "\\frac{1}{2}", "candidate": format!("{k}: so $\\boxed{{0.5}}$")}),
        )
        .await;
        assert_eq!(r.json()["equivalent"], true);
    }
    let after = counter(&metrics(app.addr).await, "stepkto_inline_checks_total");
    assert!(
        (before + 1..=before + 5).contains(&after),
        "{before} -> {after}"
    );
    app.stop().await;

    let off = Limits {
        inline_check_us: 0,
        ..Limits::default()
    };
    let app = spawn_app(Some(common::sqlite_url()), off).await;
    for k in 0..3 {
        let r = post(
            app.addr,
            "/v1/verify",
            json!({"reference": "3", "candidate": format!("{k}: $\\boxed{{3}}$")}),
        )
        .await;
        assert_eq!(r.json()["equivalent"], true);
    }
    let r = post(app.addr, "/v1/verify", slow).await;
    assert_eq!(r.json()["reason"]["tag"], "not_equal");
    assert_eq!(
        counter(&metrics(app.addr).await, "stepkto_inline_checks_total"),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn info_docs_and_openapi_are_served() {
    let app = spawn_app(None, Limits::default()).await;
    let info = get(app.addr, "/info").await.json();
    assert_eq!(info["engine"], stepkto::outcome::ENGINE_VERSION);
    assert_eq!(info["limits"]["max_batch"], 1024);
    assert_eq!(info["store"], "disabled");
    let doc = get(app.addr, "/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/v1/verify"]["post"].is_object());
    let ui = get(app.addr, "/docs/").await;
    assert_eq!(ui.status, 200);
    assert!(
        String::from_utf8_lossy(&ui.body).contains("swagger"),
        "the UI page is served from the binary"
    );
    let js = get(app.addr, "/docs/swagger-ui-bundle.js").await;
    assert_eq!(js.status, 200);
    assert!(js.body.len() > 100_000);
    app.stop().await;
}
