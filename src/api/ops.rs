//! Operational endpoints: `/health`, `/info`, `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::outcome::{self, Budget};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub store: String,
}

#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "Store and engines ready", body = Health),
    (status = 503, description = "Not ready (database down or migrating, or a model that cannot serve)", body = ErrorBody),
), tag = "ops")]
pub async fn health(State(st): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    let dead: Vec<&str> = st
        .judges
        .prms
        .iter()
        .filter(|b| !b.alive())
        .map(|b| b.prm.id.as_str())
        .collect();
    if !dead.is_empty() {
        return Err(ApiError::NotReady(format!(
            "model(s) {} cannot serve: the inference thread stopped",
            dead.join(", ")
        )));
    }
    match &st.store {
        None => Ok(Json(Health {
            status: "ok".into(),
            store: "disabled".into(),
        })),
        Some(s) => {
            s.ping()
                .await
                .map_err(|e| ApiError::NotReady(format!("verdict store: {e}")))?;
            Ok(Json(Health {
                status: "ok".into(),
                store: s.backend.name().into(),
            }))
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitsInfo {
    pub max_batch: usize,
    pub body_limit: usize,
    pub request_timeout_ms: u64,
    pub max_inflight: usize,
    /// A lone check's clock on the async thread, in microseconds (0: none).
    #[serde(default)]
    pub inline_check_us: u64,
    /// Shares of requests' checks computed at once on the blocking pool (`--check-workers`).
    #[serde(default)]
    pub check_workers: usize,
    #[schema(value_type = Object)]
    pub budget: Budget,
    /// What the reward routes answer per verdict.
    #[serde(default)]
    pub rewards: crate::config::RewardMap,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub engine: String,
    /// Loaded step judges.
    pub models: Vec<String>,
    /// The device pool and who holds each device.
    pub devices: Vec<crate::devices::DeviceInfo>,
    pub store: String,
    pub store_ready: bool,
    pub limits: LimitsInfo,
    pub uptime_secs: u64,
    /// This process's training workers.
    pub jobs: JobsInfo,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobsInfo {
    /// Jobs this process runs at once (0: none).
    pub max_concurrent: usize,
    pub running: usize,
    /// Threads a training job may use (`--train-threads`).
    pub train_threads: usize,
    pub lease_secs: i64,
    pub worker: Option<String>,
    /// API keys configured (never the keys).
    pub api_keys: usize,
    pub require_key_for_judging: bool,
}

#[utoipa::path(get, path = "/info", responses((status = 200, body = Info)), tag = "ops")]
pub async fn info(State(st): State<Arc<AppState>>) -> Json<Info> {
    let l = &st.limits;
    Json(Info {
        name: "stepkto".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine: outcome::ENGINE_VERSION.into(),
        models: st.judges.ids(),
        devices: st.devices.list(),
        store: st
            .store
            .as_ref()
            .map(|s| s.backend.name())
            .unwrap_or("disabled")
            .into(),
        store_ready: st.store.as_ref().is_some_and(|s| s.ready()),
        limits: LimitsInfo {
            max_batch: l.max_batch,
            body_limit: l.body_limit,
            request_timeout_ms: l.request_timeout_ms,
            max_inflight: l.max_inflight,
            inline_check_us: l.inline_check_us,
            check_workers: l.check_workers,
            budget: l.budget,
            rewards: l.rewards,
        },
        uptime_secs: st.started.elapsed().as_secs(),
        jobs: JobsInfo {
            max_concurrent: st.workers.as_ref().map_or(0, |w| w.config.max_concurrent),
            running: st
                .workers
                .as_ref()
                .map_or(0, |w| w.running.load(std::sync::atomic::Ordering::Relaxed)),
            train_threads: st.workers.as_ref().map_or(0, |w| w.config.train_threads),
            lease_secs: st.workers.as_ref().map_or(0, |w| w.config.lease_secs),
            worker: st.workers.as_ref().map(|w| w.id.clone()),
            api_keys: st.auth.keys(),
            require_key_for_judging: st.auth.require_for_judging,
        },
    })
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", body = String)), tag = "ops")]
pub async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render()
            + &super::metrics::render_judges(&st.judges)
            + &super::metrics::render_jobs(&st).await,
    )
}
