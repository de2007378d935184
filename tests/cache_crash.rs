//! The verdict cache survives SIGKILL of the server in the middle of its batch writes
//! (issue 14): the real binary on SQLite takes cold 64-item batches from 16 connections and
//! is killed while they flow. Afterwards the database opens cleanly (`PRAGMA
//! integrity_check` is `ok`), and every verdict of every request answered before the kill
//! is in it, because a request returns only after its cache rows are committed, and only
//! whole batches are (each request's 64 rows commit in one transaction).

mod common;

use std::time::Duration;

use common::bin::{free_port, kill, start};
use common::{post, tiny};
use serde_json::json;
use sqlx::{Connection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_cache_writes_leaves_whole_answered_batches() {
    let dir = tiny::temp_dir("cache-crash");
    let db = dir.join("db.sqlite");
    let args: Vec<String> = vec![
        "--database-url".into(),
        format!("sqlite://{}", db.display()),
        "--jobs-dir".into(),
        dir.join("jobs").display().to_string(),
        "--max-jobs".into(),
        "0".into(),
    ];
    let mut s = start(&dir.join("log"), free_port(), &args).await;
    let a = s.addr;
    // 16 clients, each sending distinct cold batches until the server is gone; every
    // answered batch's pairs are remembered
    let mut tasks = Vec::new();
    for c in 0..16 {
        tasks.push(tokio::spawn(async move {
            let mut answered: Vec<(String, String)> = Vec::new();
            for b in 0.. {
                let items: Vec<(String, String)> = (0..64)
                    .map(|i| (format!("{}", c * 1_000_000 + b * 64 + i), format!("the answer is \\boxed{{{}}}", c * 1_000_000 + b * 64 + i)))
                    .collect();
                let body = json!({"items": items.iter().map(|(r, cand)| json!({"reference": r, "candidate": cand})).collect::<Vec<_>>()});
                let r = tokio::time::timeout(Duration::from_secs(10), post_quiet(a, body)).await;
                match r {
                    Ok(Some(200)) => answered.extend(items),
                    _ => return answered,
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(&mut s);
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(
        answered.len() >= 64 * 16,
        "the load ran: {} pairs answered",
        answered.len()
    );

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the database opens after SIGKILL");
    let ok: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(ok, "ok");
    let stored: i64 = sqlx::query("SELECT COUNT(*) FROM verdicts WHERE kind = 'verify'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(
        stored as usize >= answered.len(),
        "{stored} rows stored, {} pairs answered before the kill",
        answered.len()
    );
    // only whole batches: every request adds 64 new rows, and its rows commit together
    assert_eq!(stored % 64, 0, "{stored} rows is not whole batches of 64");
    // and the server starts again on it, answering the answered pairs from the cache
    let mut s = start(&dir.join("log"), free_port(), &args).await;
    let (r, c) = &answered[answered.len() / 2];
    let v = post(
        s.addr,
        "/v1/verify",
        json!({"reference": r, "candidate": c}),
    )
    .await
    .json();
    assert_eq!(v["equivalent"], true);
    assert_eq!(
        v["cached"], true,
        "an answered verdict was stored before the kill"
    );
    eprintln!(
        "{} pairs answered before SIGKILL; {stored} rows in the database",
        answered.len()
    );
    kill(&mut s);
}

/// POST that gives None instead of panicking when the server is gone.
async fn post_quiet(a: std::net::SocketAddr, body: serde_json::Value) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(a).await.ok()?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post("/v1/verify")
        .header("host", a.to_string())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            serde_json::to_vec(&body).unwrap(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    resp.into_body().collect().await.ok()?;
    Some(status)
}
