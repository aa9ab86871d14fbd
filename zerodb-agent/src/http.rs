//! The agent over HTTP: the keeper calls `GET /v1/report` and
//! `POST /v1/order` on the control listener; the agent heartbeats to the
//! keeper and acts on the topology it gets back.

use crate::agent::{AgentCore, AgentError};
use crate::client::{CallError, Client};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use zerodb_core::control::{AgentHeartbeat, AgentHeartbeatReply, AgentReport, Order};
use zerodb_core::keepers::{KeeperCursor, Retry};

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

/// What one heartbeat tick heard from the keepers.
#[derive(Debug)]
pub enum Heard {
    /// The leading keeper (at this address) replied.
    Leader(String, AgentHeartbeatReply),
    /// Keepers answered, and none leads yet (an election is under way, or
    /// the leader they named could not be reached): an answer, not a lost
    /// keeper.
    NoLeader,
    /// No listed keeper answered; the last error.
    Nobody(CallError),
}

/// Sends `hb` to the keeper `cursor` points at, following `NotLeader`
/// answers (HTTP 421) to the leader at once and trying the next keeper
/// on a transport failure, until the leader replies, the keepers say no
/// one leads, or every listed keeper failed in turn. Each call waits at
/// most `timeout`.
pub async fn heartbeat_once(
    client: &Client,
    cursor: &mut KeeperCursor,
    hb: &AgentHeartbeat,
    timeout: Duration,
) -> Heard {
    let mut answered = false;
    loop {
        let addr = cursor.current().to_string();
        let error = match client
            .post::<_, AgentHeartbeatReply>(&addr, "/v1/agent/heartbeat", hb, timeout)
            .await
        {
            Ok(reply) => {
                cursor.on_answered();
                return Heard::Leader(addr, reply);
            }
            Err(e) => e,
        };
        let retry = match error.not_leader() {
            Some(n) => {
                tracing::debug!(keeper = %addr, leader = ?n.leader, "not the leader");
                answered = true;
                cursor.on_not_leader(n.leader.as_deref())
            }
            None => {
                tracing::debug!(keeper = %addr, error = %error, "keeper unreachable");
                let retry = cursor.on_failure();
                if retry != Retry::Now && !answered {
                    return Heard::Nobody(error);
                }
                retry
            }
        };
        if retry != Retry::Now {
            return Heard::NoLeader;
        }
    }
}

/// Heartbeats to the leader among `keepers` every `interval` until `stop`
/// changes, carrying the agent's report, and acts on each reply. Only a
/// tick in which no listed keeper answered counts as the keeper out of
/// reach (SPEC §8: a follower's answer is an answer).
pub async fn heartbeat_loop(
    core: Arc<AgentCore>,
    client: Client,
    keepers: Vec<String>,
    advertised: String,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = KeeperCursor::new(keepers);
    let mut leader: Option<String> = None;
    let mut keeper_up = true;
    let mut no_leader = false;
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
        match heartbeat_once(&client, &mut cursor, &hb, interval * 4).await {
            Heard::Leader(addr, reply) => {
                if !keeper_up || no_leader || leader.as_deref() != Some(addr.as_str()) {
                    tracing::info!(keeper = %addr, "heartbeating to the leading keeper");
                }
                (keeper_up, no_leader) = (true, false);
                leader = Some(addr);
                metrics::counter!("zerodb_agent_heartbeats_total", "result" => "ok").increment(1);
                core.on_heartbeat_reply(&reply, &report).await;
            }
            Heard::NoLeader => {
                if !no_leader {
                    tracing::warn!(keepers = ?cursor.keepers(), "no keeper leads now (an election is under way?)");
                }
                (keeper_up, no_leader) = (true, true);
                metrics::counter!("zerodb_agent_heartbeats_total", "result" => "not_leader")
                    .increment(1);
            }
            Heard::Nobody(e) => {
                if keeper_up {
                    tracing::warn!(keepers = ?cursor.keepers(), error = %e, "keeper unreachable");
                }
                (keeper_up, no_leader) = (false, false);
                metrics::counter!("zerodb_agent_heartbeats_total", "result" => "error")
                    .increment(1);
                core.on_keeper_unreachable(&report).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerodb_core::control::{ClusterTopology, NotLeader, NOT_LEADER_STATUS};

    /// A keeper on a free local port answering every heartbeat with
    /// `status` and `body`.
    async fn keeper(status: u16, body: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let status = StatusCode::from_u16(status).unwrap();
        let r = Router::new().route(
            "/v1/agent/heartbeat",
            post(move || {
                let body = body.clone();
                async move { (status, body) }
            }),
        );
        tokio::spawn(zerodb_core::admin_http::serve_router(
            listener,
            r,
            std::future::pending(),
        ));
        addr
    }

    async fn follower(leader: Option<&str>) -> String {
        let n = NotLeader {
            leader: leader.map(str::to_string),
        };
        keeper(NOT_LEADER_STATUS, serde_json::to_string(&n).unwrap()).await
    }

    async fn leader(term: u64) -> String {
        let reply = AgentHeartbeatReply {
            topology: ClusterTopology {
                epoch: 1,
                term,
                datahosts: vec![],
            },
            follow: None,
        };
        keeper(200, serde_json::to_string(&reply).unwrap()).await
    }

    /// An address nothing listens on.
    async fn dead() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    async fn once(cursor: &mut KeeperCursor) -> Heard {
        let hb = AgentHeartbeat {
            datasource: "mysql_1".into(),
            listen: "127.0.0.1:7800".into(),
            report: AgentReport::default(),
            topology: None,
        };
        heartbeat_once(&Client::new("t"), cursor, &hb, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn one_tick_follows_the_named_leader() {
        let l = leader(3).await;
        let list = vec![dead().await, follower(Some(&l)).await];
        let mut c = KeeperCursor::new(list);
        match once(&mut c).await {
            Heard::Leader(addr, reply) => {
                assert_eq!(addr, l);
                assert_eq!(reply.topology.term, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.current(), l, "the next tick goes straight there");
    }

    #[tokio::test]
    async fn only_silence_is_a_lost_keeper() {
        let mut c = KeeperCursor::new(vec![dead().await, dead().await]);
        assert!(matches!(once(&mut c).await, Heard::Nobody(_)));
        let mut c = KeeperCursor::new(vec![dead().await, follower(None).await]);
        assert!(matches!(once(&mut c).await, Heard::NoLeader));
        // A named leader that cannot be reached: the followers answered.
        let gone = dead().await;
        let mut c = KeeperCursor::new(vec![follower(Some(&gone)).await]);
        assert!(matches!(once(&mut c).await, Heard::NoLeader));
    }
}
