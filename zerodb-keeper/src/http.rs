//! The keeper's two HTTP surfaces.
//!
//! Control (`listen`, every route behind the cluster token): `/v1/proxy`,
//! the WebSocket each proxy keeps open, and `/v1/agent/heartbeat`.
//! Admin (`admin`): `/health`, `/status`, `/proxies`, `/decisions`,
//! `/metrics` to read; `POST /switchover`, `POST /maintenance`,
//! `POST /bootstrap` and `DELETE /proxies/{name}` to act, which need the
//! token too; `/leader` answers 200 only on the keeper that leads.
//!
//! A follower (keepers on etcd) registers no proxy and takes no
//! heartbeat: it answers `NotLeader`, naming the leader (HTTP 421 for
//! agents and operators).

use crate::keeper::{Keeper, KeeperError};
use crate::lead::Role;
use crate::members::Answer;
use crate::request::request_switch;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zerodb_core::control::{AgentHeartbeat, FromKeeper, NotLeader, SwitchAnswer, ToKeeper};
use zerodb_core::decision::{Request, RequestKind};
use zerodb_core::tokens::{read_token_file, Tokens};

/// The control router (proxies and agents).
pub fn control_router(keeper: Arc<Keeper>) -> Router {
    let token = keeper.config().token.clone();
    let r = Router::new()
        .route("/v1/proxy", get(proxy_ws))
        .route("/v1/agent/heartbeat", post(agent_heartbeat))
        .with_state(keeper);
    zerodb_core::admin_http::require_token(r, &token)
}

/// The tokens the admin calls that act accept: those of
/// `admin_token_file`, else the cluster token. (The file was read when the
/// config was checked; one gone since leaves nothing accepted.)
pub fn operator_tokens(cfg: &zerodb_core::config::KeeperConfig) -> Tokens {
    match &cfg.admin_token_file {
        Some(f) => Tokens::new(read_token_file(f).unwrap_or_else(|e| {
            tracing::error!(error = %e, "admin_token_file: no operator call will be accepted");
            Vec::new()
        })),
        None => Tokens::new(vec![cfg.token.clone()]),
    }
}

/// The admin router (operators); the calls that act need one of
/// `operators` (see [`operator_tokens`]).
pub fn admin_router(
    keeper: Arc<Keeper>,
    metrics: Option<PrometheusHandle>,
    operators: Tokens,
) -> Router {
    let acting = Router::new()
        .route("/switchover", post(switchover))
        .route("/maintenance", post(maintenance))
        .route("/bootstrap", post(bootstrap))
        .route("/proxies/{name}", delete(remove_proxy))
        .with_state(keeper.clone());
    Router::new()
        .route("/health", get(health))
        .route("/leader", get(leader))
        .route("/status", get(status))
        .route("/decisions", get(decisions))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { zerodb_core::admin_http::metrics_response(m.as_ref()) }
            }),
        )
        .with_state(keeper)
        .merge(zerodb_core::admin_http::require_tokens(
            acting,
            operators,
            "operator token",
        ))
}

/// Who leads, as a follower tells it.
fn not_leader(k: &Keeper) -> NotLeader {
    match k.leadership().role() {
        Role::Follower { leader } => NotLeader {
            leader: leader.map(|l| l.advertise),
        },
        _ => NotLeader::default(),
    }
}

/// 421 Misdirected Request, naming the leader: what a follower answers
/// to anything only the leader does.
fn misdirected(k: &Keeper) -> Response {
    (StatusCode::MISDIRECTED_REQUEST, Json(not_leader(k))).into_response()
}

/// 200 on every running keeper; the body says whether it leads.
async fn health(State(k): State<Arc<Keeper>>) -> String {
    match k.leadership().role() {
        Role::Sole => "ok\n".into(),
        Role::Leader { term } => format!("ok: leader, term {term}\n"),
        Role::TakingOver => "ok: taking the lead\n".into(),
        Role::Follower { .. } => "ok: follower\n".into(),
    }
}

/// 200 only on the keeper that leads (a load balancer's check, as
/// Patroni's `/leader`); 503 elsewhere, naming the leader.
async fn leader(State(k): State<Arc<Keeper>>) -> Response {
    if k.leadership().serving() {
        Json(serde_json::json!({"leader": k.config().advertised(), "term": k.term()}))
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(not_leader(&k))).into_response()
    }
}

async fn status(State(k): State<Arc<Keeper>>) -> Json<serde_json::Value> {
    Json(k.status().await)
}

async fn decisions(State(k): State<Arc<Keeper>>) -> Json<Vec<crate::record::DecisionRecord>> {
    Json(k.decisions())
}

#[derive(Deserialize)]
struct SwitchoverBody {
    datahost: String,
    target: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn switchover(State(k): State<Arc<Keeper>>, Json(b): Json<SwitchoverBody>) -> Response {
    if !k.leadership().serving() {
        return misdirected(&k);
    }
    let Some(active) = k.topology().datahost(&b.datahost).map(|d| d.active.clone()) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no dataHost named {}\n", b.datahost),
        )
            .into_response();
    };
    let request = Request {
        datahost: b.datahost,
        source: active,
        kind: RequestKind::Switchover {
            target: b.target,
            force: b.force,
        },
    };
    let answer = request_switch(&k, request).await;
    let status = match answer {
        SwitchAnswer::Switched { .. } => StatusCode::OK,
        _ => StatusCode::CONFLICT,
    };
    (status, Json(answer)).into_response()
}

#[derive(Deserialize, Default)]
struct BootstrapBody {
    #[serde(default)]
    proxies: Vec<String>,
}

/// An operator confirms the membership (SPEC §7): the registered proxies,
/// plus any named in the body, are all there are.
async fn bootstrap(State(k): State<Arc<Keeper>>, body: Option<Json<BootstrapBody>>) -> Response {
    if !k.leadership().serving() {
        return misdirected(&k);
    }
    let Json(b) = body.unwrap_or_default();
    match k.bootstrap(&b.proxies).await {
        Ok(members) => Json(serde_json::json!({"membership_confirmed": true, "proxies": members}))
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct MaintenanceBody {
    datahost: String,
    on: bool,
}

async fn maintenance(State(k): State<Arc<Keeper>>, Json(b): Json<MaintenanceBody>) -> Response {
    if !k.leadership().serving() {
        return misdirected(&k);
    }
    match k.set_maintenance(&b.datahost, b.on).await {
        Ok(()) => {
            Json(serde_json::json!({"datahost": b.datahost, "maintenance": b.on})).into_response()
        }
        Err(e @ KeeperError::UnknownDataHost(_)) => {
            (StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn remove_proxy(State(k): State<Arc<Keeper>>, Path(name): Path<String>) -> Response {
    if !k.leadership().serving() {
        return misdirected(&k);
    }
    match k.unregister(&name, "removed by an operator").await {
        Ok(true) => Json(serde_json::json!({"removed": name})).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no proxy named {name}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn agent_heartbeat(State(k): State<Arc<Keeper>>, Json(hb): Json<AgentHeartbeat>) -> Response {
    if !k.leadership().serving() {
        return misdirected(&k);
    }
    Json(k.agent_heartbeat(hb).await).into_response()
}

async fn proxy_ws(State(k): State<Arc<Keeper>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| proxy_session(k, socket))
}

fn text(m: &FromKeeper) -> Option<Message> {
    serde_json::to_string(m)
        .ok()
        .map(|s| Message::Text(s.into()))
}

/// The first message of a proxy's connection, which must register it
/// under a name: that name, or `None` (refused, or the connection ended).
async fn first_register(
    k: &Keeper,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<(String, u64)> {
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    let Ok(Some(Ok(Message::Text(t)))) = first else {
        return None;
    };
    match serde_json::from_str::<ToKeeper>(&t) {
        Ok(ToKeeper::Register {
            name,
            epoch,
            topology,
            instance,
        }) if !name.is_empty() => {
            k.observe(&name, epoch, 0, topology.as_ref()).await;
            Some((name, instance))
        }
        _ => {
            let refuse = FromKeeper::Refused {
                reason: "the first message must be a register with a name".into(),
            };
            if let Some(m) = text(&refuse) {
                let _ = sink.send(m).await;
            }
            None
        }
    }
}

/// Sends what is queued for one proxy, while this keeper may act: a
/// keeper whose lease may have lapsed says nothing more but that it does
/// not lead.
async fn write_session(
    lead: Arc<crate::lead::Leadership>,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<FromKeeper>,
) {
    while let Some(m) = rx.recv().await {
        if !lead.acting() && !matches!(m, FromKeeper::NotLeader(_)) {
            continue;
        }
        let Some(m) = text(&m) else { continue };
        if sink.send(m).await.is_err() {
            break;
        }
    }
}

/// Registers `name` on a new connection, if this keeper serves: the
/// connection's id and its outbound queue (the hello already in it); or
/// `None` once the proxy was told why not.
async fn admit(
    k: &Arc<Keeper>,
    name: &str,
    instance: u64,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> Option<(
    u64,
    mpsc::UnboundedSender<FromKeeper>,
    mpsc::UnboundedReceiver<FromKeeper>,
)> {
    // After a start without state, no proxy is told a topology before the
    // agents had their say.
    k.discovered().await;
    let refuse = |m: FromKeeper| text(&m);
    if !k.leadership().serving() {
        if let Some(m) = refuse(FromKeeper::NotLeader(not_leader(k))) {
            let _ = sink.send(m).await;
        }
        return None;
    }
    let conn = k.next_id();
    let (tx, rx) = mpsc::unbounded_channel::<FromKeeper>();
    let topology = match k.register(name, instance, conn, tx.clone()).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(proxy = %name, error = %e, "registration refused");
            if let Some(m) = refuse(FromKeeper::Refused {
                reason: e.to_string(),
            }) {
                let _ = sink.send(m).await;
            }
            return None;
        }
    };
    if !k.leadership().serving() {
        // It stepped down while registering (an etcd write).
        k.disconnected(name, conn);
        if let Some(m) = refuse(FromKeeper::NotLeader(not_leader(k))) {
            let _ = sink.send(m).await;
        }
        return None;
    }
    metrics::counter!("zerodb_keeper_registrations_total").increment(1);
    let hello = FromKeeper::Registered {
        topology,
        session_timeout_ms: k.config().timings.session_timeout.as_millis() as u64,
    };
    tx.send(hello).ok()?;
    Some((conn, tx, rx))
}

/// One proxy's connection: it must register first; then heartbeats,
/// switch requests and votes come in, and votes, answers and topologies
/// go out.
async fn proxy_session(k: Arc<Keeper>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let Some((name, instance)) = first_register(&k, &mut sink, &mut stream).await else {
        return;
    };
    // Watched from before the checks below: a step-down between them and
    // the session's loop is not missed.
    let mut role = k.leadership().subscribe();
    let Some((conn, tx, rx)) = admit(&k, &name, instance, &mut sink).await else {
        return;
    };
    let writer = tokio::spawn(write_session(k.leadership().clone(), sink, rx));
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = role.changed() => {
                if k.leadership().serving() {
                    continue;
                }
                let _ = tx.send(FromKeeper::NotLeader(not_leader(&k)));
                break;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        let Message::Text(t) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        if !k.heartbeat(&name, conn) {
            // Removed by an operator, replaced by a newer connection, or
            // forgotten by a step-down: the proxy must register again (with
            // the leader) to count.
            let _ = tx.send(if k.leadership().serving() {
                FromKeeper::Refused {
                    reason: "not registered on this connection; register again".into(),
                }
            } else {
                FromKeeper::NotLeader(not_leader(&k))
            });
            break;
        }
        if !on_message(&k, &name, &tx, &t).await {
            break;
        }
    }
    k.disconnected(&name, conn);
    // Let what is queued (a refusal, a last answer) go out, briefly.
    drop(tx);
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_millis(300), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Acts on one message from the registered proxy `name`; `false` when
/// the connection is to end.
async fn on_message(
    k: &Arc<Keeper>,
    name: &str,
    tx: &mpsc::UnboundedSender<FromKeeper>,
    text: &str,
) -> bool {
    match serde_json::from_str::<ToKeeper>(text) {
        Ok(ToKeeper::Heartbeat) | Ok(ToKeeper::Register { .. }) => {}
        Ok(ToKeeper::Vote { id, down }) => k.answered(id, Answer::Vote { down }),
        Ok(ToKeeper::Held { id, open }) => k.answered(id, Answer::Held { open }),
        Ok(ToKeeper::SwitchRequest {
            id,
            datahost,
            source,
        }) => {
            let _ = tx.send(FromKeeper::SwitchAck { id });
            let (keeper, tx, requester) = (k.clone(), tx.clone(), name.to_string());
            k.background.spawn(async move {
                tracing::info!(proxy = %requester, datahost = %datahost, source = %source, "switch requested");
                let request = Request {
                    datahost,
                    source,
                    kind: RequestKind::Failover { requester },
                };
                let answer = request_switch(&keeper, request).await;
                let _ = tx.send(FromKeeper::SwitchAnswer { id, answer });
            });
        }
        Ok(ToKeeper::Unregister { reason }) => {
            if let Err(e) = k.unregister(name, &reason).await {
                tracing::error!(proxy = %name, error = %e, "cannot persist the unregistration");
            }
            return false;
        }
        Err(e) => {
            tracing::warn!(proxy = %name, error = %e, "malformed control message; closing");
            return false;
        }
    }
    true
}
