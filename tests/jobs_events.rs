//! The event streams of `/v1/train/{id}/events` are bounded (`--max-event-streams`): one
//! over the limit is a 429 with the JSON error body, and a stream's slot comes back when
//! its client goes away.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Db, db_url, get, request_with, spawn_jobs_app, tiny};
use serde_json::json;
use stepkto::api::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open a stream and read until its first event has arrived; the connection stays open.
async fn open(addr: SocketAddr, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /v1/train/{id}/events HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("event: state") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the stream sends its first events at once")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded() {
    let url = db_url(Db::Sqlite).await.unwrap();
    let dir = tiny::temp_dir("events");
    let m = dir.join("m0");
    tiny::write_checkpoint_with("rlhflow", &m, false, &json!({}));
    let svc = Service {
        max_event_streams: 1,
        ..Service::default()
    };
    // no workers: the job stays queued and its stream stays open
    let app = spawn_jobs_app(url, svc, None).await;
    let a = app.addr;
    let up = request_with(
        a,
        "POST",
        "/v1/datasets",
        "{\"id\": \"a\", \"problem\": \"1+1?\", \"answer\": \"2\"}\n",
        &[],
    )
    .await;
    let pid = up.json()["id"].as_str().unwrap().to_string();
    let r = common::post(
        a,
        "/v1/train",
        json!({"method": "kto", "model": m, "problems": pid}),
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();

    let first = open(a, &id).await;
    let second = get(a, &format!("/v1/train/{id}/events")).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.json()["error_type"], "overloaded");
    drop(first);
    // the slot is given back once the server notices the client has gone
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect(a).await.unwrap();
        let req = format!("GET /v1/train/{id}/events HTTP/1.1\r\nhost: {a}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
    }
    assert!(ok, "the stream's slot was not given back");
    app.stop().await;
}
