//! The agent over HTTP: the keeper calls `GET /v1/report` and
//! `POST /v1/order` on the control listener; the agent heartbeats to the
//! keeper and acts on the topology it gets back.

use crate::agent::{AgentCore, AgentError};
use crate::client::Client;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use zerodb_core::control::{AgentHeartbeat, AgentHeartbeatReply, AgentReport, Order};

/// `/v1/report` and `/v1/order`, behind the cluster token.
pub fn control_router(core: Arc<AgentCore>, token: &str) -> Router {
    let r = Router::new()
        .route("/v1/report", get(report))
        .route("/v1/order", post(order))
        .with_state(core);
    zerodb_core::admin_http::require_token(r, token)
}

/// `/health` (200 while the agent runs; it reports a dead server, it is
/// not one), `/status` (the last report) and `/metrics`.
pub fn admin_router(core: Arc<AgentCore>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/status", get(report))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { zerodb_core::admin_http::metrics_response(m.as_ref()) }
            }),
        )
        .with_state(core)
}

async fn report(State(core): State<Arc<AgentCore>>) -> Json<AgentReport> {
    Json(core.report().await)
}

async fn order(State(core): State<Arc<AgentCore>>, Json(order): Json<Order>) -> Response {
    let kind = serde_json::to_value(&order.kind)
        .ok()
        .and_then(|v| v.get("order").and_then(|o| o.as_str()).map(str::to_string))
        .unwrap_or_default();
    let result = core.order(&order).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("zerodb_agent_orders_total", "order" => kind.clone(), "result" => label)
        .increment(1);
    match result {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(e) => {
            tracing::error!(order = %kind, epoch = order.epoch, error = %e, "order failed");
            let status = match &e {
                AgentError::StaleEpoch { .. } | AgentError::StaleTerm { .. } => {
                    StatusCode::CONFLICT
                }
                // The keeper tells a server that does not answer from
                // one that refused (`OrderError::server_answered`).
                AgentError::Ops(o) if !o.server_answered() => StatusCode::SERVICE_UNAVAILABLE,
                AgentError::Ops(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, e.to_string()).into_response()
        }
    }
}

/// Heartbeats to the keeper at `keeper` every `interval` until `stop`
/// changes, carrying the agent's report, and acts on each reply.
pub async fn heartbeat_loop(
    core: Arc<AgentCore>,
    client: Client,
    keeper: String,
    advertised: String,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keeper_up = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let report = core.report().await;
        metrics::gauge!("zerodb_agent_server_up").set(if report.alive { 1.0 } else { 0.0 });
        let hb = AgentHeartbeat {
            datasource: core.ops.name.clone(),
            listen: advertised.clone(),
            report: report.clone(),
            topology: core.topology(),
        };
        let reply: Result<AgentHeartbeatReply, _> = client
            .post(&keeper, "/v1/agent/heartbeat", &hb, interval * 4)
            .await;
        match reply {
            Ok(reply) => {
                if !keeper_up {
                    tracing::info!(keeper = %keeper, "keeper reached again");
                    keeper_up = true;
                }
                metrics::counter!("zerodb_agent_heartbeats_total", "result" => "ok").increment(1);
                core.on_heartbeat_reply(&reply, &report).await;
            }
            Err(e) => {
                if keeper_up {
                    tracing::warn!(keeper = %keeper, error = %e, "keeper unreachable");
                    keeper_up = false;
                }
                metrics::counter!("zerodb_agent_heartbeats_total", "result" => "error")
                    .increment(1);
                core.on_keeper_unreachable(&report).await;
            }
        }
    }
}
