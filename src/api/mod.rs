//! The HTTP layer (axum): router, handlers (one file per resource), the error mapping, the
//! OpenAPI document and `/docs`, metrics, limits. Only this module knows axum.
//!
//! [`app`] is a pure function of the state, so tests drive it with `oneshot` or serve it on
//! port 0; [`serve`] takes the listener and the shutdown future from its caller.

pub mod auth;
pub mod dash;
pub mod datasets;
pub mod docs;
pub mod error;
pub mod evals;
pub mod judge;
pub mod metrics;
pub mod ops;
pub mod rewards;
pub mod train;
pub mod ui;
pub mod verify;
pub mod work;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{Config, Limits};
use crate::devices::DevicePool;
use crate::jobs::{self, Workers};
use crate::judge::Judges;
use crate::store::Store;
use error::ApiError;
use metrics::Metrics;

/// Shared state of all handlers.
pub struct AppState {
    /// The verdict cache; `None` runs without one.
    pub store: Option<Store>,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Bounds concurrent verify work; a request that finds no permit gets 429.
    pub inflight: Arc<Semaphore>,
    /// Bounds blocking-pool jobs at once (`Limits::check_workers`); more wait in turn.
    pub checkers: Arc<Semaphore>,
    pub started: Instant,
    /// Loaded PRMs (the symbolic judge is always available besides them).
    pub judges: Judges,
    pub devices: Arc<DevicePool>,
    pub auth: auth::Auth,
    /// This process's job workers (None: it runs no jobs).
    pub workers: Option<Arc<Workers>>,
    /// Where job directories are (for a round's samples).
    pub jobs_dir: Option<PathBuf>,
    pub max_dataset_bytes: usize,
    /// Most samples in one eval record.
    pub max_eval_samples: usize,
    /// Open `/v1/train/{id}/events` streams; one more gets 429 (each polls the database).
    pub event_streams: Arc<Semaphore>,
    /// The verdict cache's group-commit writer and grouped reader (started on first use).
    pub cache_writes: work::CacheWriter,
    pub cache_reads: work::CacheReader,
}

/// The training side of the state; [`Service::default`] is open on loopback, no workers.
pub struct Service {
    pub auth: auth::Auth,
    pub workers: Option<Arc<Workers>>,
    pub jobs_dir: Option<PathBuf>,
    pub max_dataset_bytes: usize,
    pub max_eval_samples: usize,
    pub max_event_streams: usize,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            auth: auth::Auth::open(),
            workers: None,
            jobs_dir: None,
            max_dataset_bytes: 64 * 1024 * 1024,
            max_eval_samples: crate::jobs::records::RecordLimits::default().max_samples,
            max_event_streams: 64,
        }
    }
}

impl AppState {
    /// State with the symbolic judge only.
    pub fn new(store: Option<Store>, limits: Limits) -> Arc<AppState> {
        let devices = DevicePool::new("cpu").expect("the CPU is always a device");
        AppState::with_judges(store, limits, Judges::default(), devices)
    }

    pub fn with_judges(
        store: Option<Store>,
        limits: Limits,
        judges: Judges,
        devices: Arc<DevicePool>,
    ) -> Arc<AppState> {
        AppState::with_service(store, limits, judges, devices, Service::default())
    }

    pub fn with_service(
        store: Option<Store>,
        limits: Limits,
        judges: Judges,
        devices: Arc<DevicePool>,
        svc: Service,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            auth: svc.auth,
            workers: svc.workers,
            jobs_dir: svc.jobs_dir,
            max_dataset_bytes: svc.max_dataset_bytes,
            max_eval_samples: svc.max_eval_samples,
            event_streams: Arc::new(Semaphore::new(svc.max_event_streams)),
            cache_writes: work::CacheWriter::default(),
            cache_reads: work::CacheReader::default(),
            store,
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
            checkers: Arc::new(Semaphore::new(limits.check_workers.max(1))),
            limits,
            metrics: Metrics::default(),
            started: Instant::now(),
            judges,
            devices,
        })
    }
}

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .observe(&route, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Response {
    let mut r = ApiError::Validation(format!(
        "method {} not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// The whole router for the given state.
pub fn app(state: Arc<AppState>) -> Router {
    let swagger = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", docs::ApiDoc::openapi_doc());
    let training = Router::new()
        .route(
            "/v1/datasets",
            post(datasets::create)
                .layer(DefaultBodyLimit::max(state.max_dataset_bytes))
                .get(datasets::list),
        )
        .route("/v1/datasets/{id}", get(datasets::get))
        .route(
            "/v1/evals",
            post(evals::create)
                .layer(DefaultBodyLimit::max(state.max_dataset_bytes))
                .get(evals::list),
        )
        .route("/v1/evals/{id}", get(evals::get))
        .route("/v1/evals/{id}/samples", get(evals::samples))
        .route("/v1/evals/{id}/samples/{index}", get(evals::sample))
        .route("/v1/overview", get(dash::overview))
        .route("/v1/overview/compare", get(dash::compare))
        .route("/v1/train/events", get(dash::job_events))
        .route("/v1/train/{id}/curves", get(dash::curves))
        .route("/v1/train", post(train::create).get(train::list))
        .route("/v1/train/{id}", get(train::get))
        .route("/v1/train/{id}/cancel", post(train::cancel))
        .route("/v1/train/{id}/metrics", get(train::metrics))
        .route("/v1/train/{id}/events", get(train::events))
        .route("/v1/train/{id}/rounds", get(train::rounds))
        .route("/v1/train/{id}/rounds/{round}/samples", get(train::samples))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::training,
        ));
    let judging = Router::new()
        .route("/v1/verify", post(verify::verify))
        .route("/v1/judge", post(judge::judge))
        .route("/get_reward", post(rewards::get_reward))
        .route("/v1/reward", post(rewards::reward))
        .route("/verify", post(rewards::nemo_verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::judging));
    Router::new()
        .merge(training)
        .merge(judging)
        .route("/v1/models", get(judge::models))
        .route("/", get(ui::index))
        .route("/ui/{*path}", get(ui::file))
        .route("/health", get(ops::health))
        .route("/info", get(ops::info))
        .route("/metrics", get(ops::metrics))
        .merge(swagger)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.body_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// `stepkto serve`: open the store, bind, serve until a signal.
pub fn run(cfg: Config) -> std::io::Result<()> {
    // Models load before the port opens, so a bad checkpoint stops the start with its reason.
    let devices = DevicePool::new(&cfg.device).map_err(std::io::Error::other)?;
    let judges = Judges::load(&cfg.models, &devices, cfg.batch).map_err(std::io::Error::other)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::outcome::budget::CHECK_STACK_BYTES)
        .build()?;
    let auth = auth::Auth::load(
        cfg.api_keys_file.as_deref(),
        cfg.api_keys.as_deref(),
        cfg.require_key_for_judging,
        cfg.addr.ip().is_loopback(),
    )
    .map_err(std::io::Error::other)?;
    if auth.keys() == 0 && !cfg.addr.ip().is_loopback() {
        tracing::warn!(
            "no API keys and a non-loopback address: /v1/train and /v1/datasets answer 403 until keys are set (--api-keys-file, STEPKTO_API_KEYS)"
        );
    }
    std::fs::create_dir_all(&cfg.jobs.dir)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", cfg.jobs.dir.display())))?;
    let workers = Workers::new(cfg.jobs.clone());
    rt.block_on(async move {
        let store = Store::open(&cfg.database_url).map_err(std::io::Error::other)?;
        store.start().await;
        let served = judges.prms.clone();
        let svc = Service {
            auth,
            workers: Some(workers.clone()),
            jobs_dir: Some(cfg.jobs.dir.clone()),
            max_dataset_bytes: cfg.max_dataset_bytes,
            max_eval_samples: cfg.max_eval_samples,
            max_event_streams: cfg.max_event_streams,
        };
        let state =
            AppState::with_service(Some(store.clone()), cfg.limits, judges, devices.clone(), svc);
        let listener = TcpListener::bind(cfg.addr).await?;
        tracing::info!(addr = %listener.local_addr()?, store = store.backend.name(),
            max_jobs = cfg.jobs.max_concurrent, train_threads = cfg.jobs.train_threads, "stepkto listening");
        let ctx = jobs::Context {
            store: store.clone(),
            devices,
            served,
            workers: workers.clone(),
        };
        let claim = tokio::spawn(jobs::run_workers(ctx));
        serve(listener, state, shutdown_signal()).await?;
        // running jobs stop between steps and hand their leases back for the next start
        workers.stop();
        let _ = claim.await;
        let t0 = Instant::now();
        while workers.running.load(std::sync::atomic::Ordering::SeqCst) > 0
            && t0.elapsed() < std::time::Duration::from_secs(60)
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        store.close().await;
        Ok(())
    })
}
