//! The admin HTTP surface: `/health` for load balancers, `/status` for
//! people and tools, `/metrics` for Prometheus, and a swap call for
//! standalone use and tests.

use crate::server::{Serving, Shared};
use crate::topology::TopologyError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets (seconds) for every `*_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the Prometheus recorder for this process and keeps it trimmed.
/// Call once, early, from a binary (inside a tokio runtime).
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let h = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            h.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
}

/// The admin router for a proxy.
pub fn router(shared: Arc<Shared>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .route("/sessions", get(sessions))
        .route("/topology/swap", post(swap))
        .route("/pools/flush", post(flush_pools))
        .with_state(AdminState { shared, metrics })
}

/// Serves the admin router on `addr` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(shared, metrics), stop).await
}

/// Serves any router (a proxy's, a keeper's, an agent's) until `stop`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn health(State(s): State<AdminState>) -> Response {
    match s.shared.serving() {
        Serving::Serving => (StatusCode::OK, "serving\n").into_response(),
        Serving::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
        Serving::Offline => (StatusCode::SERVICE_UNAVAILABLE, "offline\n").into_response(),
        Serving::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
    }
}

#[derive(Serialize)]
struct DatasourceStatus {
    name: String,
    addr: String,
    active: bool,
    health: crate::health::HealthSnapshot,
    pool_open: usize,
    pool_idle: usize,
    sessions: usize,
}

#[derive(Serialize)]
struct DataHostStatus {
    name: String,
    schemas: Vec<String>,
    active: String,
    epoch: u64,
    datasources: Vec<DatasourceStatus>,
}

#[derive(Serialize)]
struct Status {
    name: String,
    serving: Serving,
    epoch: u64,
    sessions: usize,
    datahosts: Vec<DataHostStatus>,
    /// The proxy's part in a cluster: keeper connection, rules' counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<serde_json::Value>,
}

async fn status(State(s): State<AdminState>) -> Json<Status> {
    let shared = &s.shared;
    let sessions = shared.registry.all();
    let on = |ds: &str| {
        sessions
            .iter()
            .filter(|h| h.backend().is_some_and(|(d, _)| d.name == ds))
            .count()
    };
    let datahosts = shared
        .topology
        .datahosts()
        .iter()
        .map(|dh| {
            let active = dh.active();
            DataHostStatus {
                name: dh.name.clone(),
                schemas: dh.schemas.clone(),
                active: active.datasource.name.clone(),
                epoch: active.epoch,
                datasources: dh
                    .datasources
                    .iter()
                    .map(|d| DatasourceStatus {
                        name: d.name.clone(),
                        addr: d.addr.clone(),
                        active: dh.is_active(d),
                        health: d.health.snapshot(),
                        pool_open: d.pool.open(),
                        pool_idle: d.pool.idle_count(),
                        sessions: on(&d.name),
                    })
                    .collect(),
            }
        })
        .collect();
    Json(Status {
        name: shared.config.name.clone(),
        serving: shared.serving(),
        epoch: shared.topology.epoch(),
        sessions: sessions.len(),
        datahosts,
        cluster: shared.cluster.get().map(|c| c.status()),
    })
}

#[derive(Serialize)]
struct SessionRow {
    id: u32,
    user: String,
    peer: String,
    seconds: u64,
    datasource: Option<String>,
    backend_thread: Option<u32>,
}

/// The proxy's own processlist: proxy connection ids (what clients see in
/// CONNECTION_ID() and use with KILL) and the backend thread behind each.
async fn sessions(State(s): State<AdminState>) -> Json<Vec<SessionRow>> {
    let mut rows: Vec<SessionRow> = s
        .shared
        .registry
        .all()
        .iter()
        .map(|h| {
            let b = h.backend();
            SessionRow {
                id: h.id,
                user: h.user(),
                peer: h.peer.to_string(),
                seconds: h.started.elapsed().as_secs(),
                datasource: b.as_ref().map(|(d, _)| d.name.clone()),
                backend_thread: b.map(|(_, t)| t),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    Json(rows)
}

async fn render_metrics(State(s): State<AdminState>) -> Response {
    metrics_response(s.metrics.as_ref())
}

/// `/metrics` in Prometheus text format.
pub fn metrics_response(metrics: Option<&PrometheusHandle>) -> Response {
    match metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// Closes every idle backend connection, e.g. after `SET GLOBAL`, so that
/// sessions started from now on get connections with the new globals.
async fn flush_pools(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let mut closed = serde_json::Map::new();
    for dh in s.shared.topology.datahosts() {
        for ds in &dh.datasources {
            closed.insert(ds.name.clone(), ds.pool.flush_idle().into());
        }
    }
    Json(serde_json::json!({ "closed": closed }))
}

#[derive(Deserialize)]
struct SwapRequest {
    datahost: String,
    datasource: String,
    epoch: u64,
}

async fn swap(State(s): State<AdminState>, Json(req): Json<SwapRequest>) -> Response {
    if s.shared.config.keeper.is_some() {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": "the topology is managed by the keeper; use its /switchover"})),
        )
            .into_response();
    }
    match s
        .shared
        .topology
        .swap_active(&req.datahost, &req.datasource, req.epoch)
    {
        Ok(swap) => (StatusCode::OK, Json(swap)).into_response(),
        Err(e @ TopologyError::StaleEpoch { .. }) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Refuses every request to `router` that does not carry the cluster token
/// (`Authorization: Bearer <token>`) with 401.
pub fn require_token(router: Router, token: &str) -> Router {
    let token: Arc<str> = Arc::from(token);
    router.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if crate::control::token_matches(presented, &token) {
                    next.run(req).await
                } else {
                    metrics::counter!("zerodb_control_unauthorized_total").increment(1);
                    (StatusCode::UNAUTHORIZED, "cluster token missing or wrong\n").into_response()
                }
            }
        },
    ))
}
