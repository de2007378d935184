//! Test helpers: `spawn_app()` serves the real router on port 0 with a fresh database
//! (a temporary SQLite file, or a fresh PostgreSQL database when `STEPKTO_TEST_PG` names a
//! server), and a tiny HTTP/1 client built on hyper.
#![allow(dead_code)]

pub mod bin;
pub mod browser;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use stepkto::api::{self, AppState};
use stepkto::config::Limits;
use stepkto::store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

static N: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub db_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Stop serving and wait until the server has finished.
    pub async fn stop(mut self) {
        if let Some(w) = &self.state.workers {
            w.stop();
            let t0 = std::time::Instant::now();
            while w.running.load(Ordering::SeqCst) > 0 && t0.elapsed().as_secs() < 60 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(s) = &self.state.store {
            s.close().await;
        }
    }
}

/// A path for a fresh SQLite file, removed by nothing (under the target dir's tmp).
pub fn sqlite_url() -> String {
    let dir: PathBuf = std::env::temp_dir().join("stepkto-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let n = N.fetch_add(1, Ordering::SeqCst);
    let path = dir.join(format!("t{}-{}-{}.db", std::process::id(), n, nanos()));
    format!("sqlite://{}", path.display())
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The PostgreSQL server for tests, if any. With `STEPKTO_REQUIRE_PG=1` (set by
/// scripts/test.sh) a missing server is a failure, not a skip.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("STEPKTO_TEST_PG") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("STEPKTO_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("STEPKTO_TEST_PG is not set but STEPKTO_REQUIRE_PG=1");
            }
            eprintln!(
                "note: STEPKTO_TEST_PG unset; PostgreSQL tests skipped (scripts/test.sh sets it)"
            );
            None
        }
    }
}

/// A fresh database on the test server; returns its URL.
pub async fn pg_fresh_db(admin: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = format!(
        "stepkto_t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos() % 1_000_000
    );
    let mut conn = sqlx::AnyConnection::connect(admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // Replace the database path of the admin URL.
    let (base, _) = admin.rsplit_once('/').expect("admin URL has a database");
    format!("{base}/{name}")
}

pub async fn db_url(db: Db) -> Option<String> {
    match db {
        Db::Sqlite => Some(sqlite_url()),
        Db::Postgres => Some(pg_fresh_db(&pg_admin_url()?).await),
    }
}

pub async fn spawn_app(db_url: Option<String>, limits: Limits) -> TestApp {
    let devices = stepkto::devices::DevicePool::new("cpu").unwrap();
    spawn_app_with(db_url, limits, (stepkto::judge::Judges::default(), devices)).await
}

/// Like [`spawn_app`], with loaded PRMs.
pub async fn spawn_app_with(
    db_url: Option<String>,
    limits: Limits,
    (judges, devices): (stepkto::judge::Judges, Arc<stepkto::devices::DevicePool>),
) -> TestApp {
    let store = match &db_url {
        Some(u) => {
            let s = Store::open(u).expect("open store");
            s.start().await;
            Some(s)
        }
        None => None,
    };
    let state = AppState::with_judges(store, limits, judges, devices);
    serve_state(state, db_url).await
}

/// Serve the router with jobs: `svc` (auth, jobs dir), and, when `workers` is given, a
/// claim loop running jobs on this state's store and PRMs.
pub async fn spawn_jobs_app(
    db_url: String,
    svc: api::Service,
    workers: Option<stepkto::jobs::JobsConfig>,
) -> TestApp {
    let devices = stepkto::devices::DevicePool::new("cpu").unwrap();
    spawn_jobs_app_with(
        db_url,
        svc,
        workers,
        (stepkto::judge::Judges::default(), devices),
    )
    .await
}

/// Like [`spawn_jobs_app`], with loaded PRMs that jobs may name as their step judge.
pub async fn spawn_jobs_app_with(
    db_url: String,
    mut svc: api::Service,
    workers: Option<stepkto::jobs::JobsConfig>,
    (judges, devices): (stepkto::judge::Judges, Arc<stepkto::devices::DevicePool>),
) -> TestApp {
    let store = Store::open(&db_url).expect("open store");
    store.start().await;
    let w = workers.map(stepkto::jobs::Workers::new);
    svc.workers = w.clone();
    if svc.jobs_dir.is_none() {
        svc.jobs_dir = w.as_ref().map(|w| w.config.dir.clone());
    }
    let served = judges.prms.clone();
    let state = AppState::with_service(
        Some(store.clone()),
        Limits::default(),
        judges,
        devices.clone(),
        svc,
    );
    if let Some(w) = w {
        tokio::spawn(stepkto::jobs::run_workers(stepkto::jobs::Context {
            store,
            devices,
            served,
            workers: w,
        }));
    }
    serve_state(state, Some(db_url)).await
}

async fn serve_state(state: Arc<AppState>, db_url: Option<String>) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let st = state.clone();
    let task = tokio::spawn(async move {
        api::serve(listener, st, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        state,
        db_url: db_url.unwrap_or_default(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

pub struct Resp {
    pub status: u16,
    pub body: Bytes,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, body: impl Into<Bytes>) -> Resp {
    request_with(addr, method, path, body, &[]).await
}

/// [`request`] with extra headers.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util_io(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    let req = headers
        .iter()
        .fold(req, |r, (k, v)| r.header(*k, *v))
        .body(Full::new(body.into()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        body,
        content_type,
        headers,
    }
}

pub async fn post(addr: SocketAddr, path: &str, body: serde_json::Value) -> Resp {
    request(addr, "POST", path, serde_json::to_vec(&body).unwrap()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, Bytes::new()).await
}

fn hyper_util_io(stream: TcpStream) -> hyper_util::rt::TokioIo<TcpStream> {
    hyper_util::rt::TokioIo::new(stream)
}
pub mod tiny;

/// Run the `stepkto` binary.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stepkto"))
        .args(args)
        .output()
        .unwrap()
}

/// Run the `stepkto` binary, which must succeed; its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run_cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
