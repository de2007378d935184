//! The HTTP layer (axum): router, handlers (one file per resource), the error mapping, the
//! OpenAPI document and `/docs`, metrics, limits. Only this module knows axum.
//!
//! [`app`] is a pure function of the state, so tests drive it with `oneshot` or serve it on
//! port 0; [`serve`] takes the listener and the shutdown future from its caller.

pub mod docs;
pub mod error;
pub mod judge;
pub mod metrics;
pub mod ops;
pub mod verify;
pub mod work;

use std::future::Future;
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
    pub started: Instant,
    /// Loaded PRMs (the symbolic judge is always available besides them).
    pub judges: Judges,
    pub devices: Arc<DevicePool>,
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
        Arc::new(AppState {
            store,
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
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
    Router::new()
        .route("/v1/verify", post(verify::verify))
        .route("/v1/judge", post(judge::judge))
        .route("/v1/models", get(judge::models))
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
    rt.block_on(async move {
        let store = Store::open(&cfg.database_url).map_err(std::io::Error::other)?;
        store.start().await;
        let state = AppState::with_judges(Some(store.clone()), cfg.limits, judges, devices);
        let listener = TcpListener::bind(cfg.addr).await?;
        tracing::info!(addr = %listener.local_addr()?, store = store.backend.name(), "stepkto listening");
        serve(listener, state, shutdown_signal()).await?;
        store.close().await;
        Ok(())
    })
}
