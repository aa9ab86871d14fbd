//! The proxy's admin HTTP surface (feature `admin-http`): `/health` for
//! load balancers, `/status` for people and tools, `/metrics` for
//! Prometheus, `/sessions`, and a swap call for standalone use and tests.

use crate::shared::{Serving, Shared};
use crate::topology::TopologyError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zerodb_core::admin_http::PrometheusHandle;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
}

/// The admin router for a proxy. The calls that act (`POST`s) need an
/// operator token when `admin_token_file` is set; without one they are
/// served only on a loopback admin listener.
pub fn router(shared: Arc<Shared>, metrics: Option<PrometheusHandle>) -> Router {
    let state = AdminState { shared, metrics };
    let acting = Router::new()
        .route("/topology/swap", post(swap))
        .route("/pools/flush", post(flush_pools))
        .route("/config/reload", post(reload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            operators_only,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(render_metrics))
        .route("/sessions", get(sessions))
        .with_state(state)
        .merge(acting)
}

/// Lets a call that acts through: with an operator token when
/// `admin_token_file` is set (read at each call, so a reload that sets it
/// takes effect), else only on a loopback admin listener.
async fn operators_only(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let in_force = s.shared.config_in_force();
    let allowed = if in_force.admin_token_file.is_some() {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        s.shared.operators.accepts(presented)
    } else {
        is_loopback(&in_force.admin)
    };
    if allowed {
        return next.run(req).await;
    }
    metrics::counter!("zerodb_admin_unauthorized_total").increment(1);
    let why = if in_force.admin_token_file.is_some() {
        "operator token missing or wrong\n"
    } else {
        "this admin listener is not on loopback: set admin_token_file to act through it\n"
    };
    (StatusCode::UNAUTHORIZED, why).into_response()
}

/// Whether an admin address (`host:port`) listens on loopback only.
fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.starts_with("localhost:"),
    }
}

/// Reads the config file again (see [`crate::reload`]): 200 with the keys
/// that changed, or 409 with why it was refused.
async fn reload(State(s): State<AdminState>) -> Response {
    match crate::reload::from_file(&s.shared) {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// Serves the admin router on `addr` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    zerodb_core::admin_http::serve_router(listener, router(shared, metrics), stop).await
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
    /// The proxy's login may write despite `read_only`: fencing cannot
    /// hold against it.
    login_bypasses_read_only: bool,
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
                schemas: dh.schemas().to_vec(),
                active: active.datasource.name.clone(),
                epoch: active.epoch,
                login_bypasses_read_only: dh.login_bypasses_read_only(),
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
    zerodb_core::admin_http::metrics_response(s.metrics.as_ref())
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
