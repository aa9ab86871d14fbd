//! The control plane's HTTP client (JSON, the cluster token on every
//! request, a timeout on every call), with which agents heartbeat to the
//! keeper, and [`AgentHandle`], through which the keeper reaches each
//! datasource's agent: over HTTP, or in-process (SQL straight to the
//! server) when the datasource has no agent.

use crate::agent::{AgentCore, AgentError};
use crate::ops::MysqlOps;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use zerodb_core::config::{DatasourceConfig, KeeperConfig, KeeperDataHostConfig};
use zerodb_core::control::{bearer, AgentReport, LoadMeasure, NotLeader, Order, NOT_LEADER_STATUS};

/// A failed control-plane call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The URL called.
        url: String,
        /// The timeout that ran out.
        timeout: std::time::Duration,
    },
    /// The call failed in transport, or its answer could not be decoded.
    #[error("{url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The peer answered with a non-success HTTP status.
    #[error("{url}: {status}: {body}")]
    Refused {
        /// The URL called.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The answer's body (empty if it could not be read).
        body: String,
    },
}

impl CallError {
    /// The follower keeper's answer, when the peer is a keeper that does
    /// not lead (HTTP 421 with a JSON [`NotLeader`] body, SPEC §8). A 421
    /// whose body is not one is no such answer.
    pub fn not_leader(&self) -> Option<NotLeader> {
        match self {
            CallError::Refused { status, body, .. } if *status == NOT_LEADER_STATUS => {
                serde_json::from_str(body).ok()
            }
            _ => None,
        }
    }
}

/// An HTTP/JSON client for control-plane calls: the token on every
/// request, a timeout on every call.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    token: String,
    /// `http` or `https`.
    scheme: &'static str,
}

impl Client {
    /// A client that sends `token` as a bearer token on every request.
    pub fn new(token: &str) -> Self {
        Self::with_tls(token, None)
    }

    /// Like [`Client::new`], calling peers over HTTPS with `tls` when
    /// given (`control_tls`: the peers' CA, and this process's
    /// certificate for mutual TLS).
    pub fn with_tls(token: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        let builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(30));
        let (builder, scheme) = match tls {
            Some(cfg) => (builder.use_preconfigured_tls((*cfg).clone()), "https"),
            None => (builder, "http"),
        };
        Self {
            http: builder.build().unwrap_or_else(|e| {
                // Only a TLS config reqwest cannot take gets here: calls
                // in clear would be worse than calls that fail.
                tracing::error!(error = %e, "control-plane client: every call will fail");
                reqwest::Client::default()
            }),
            token: token.to_string(),
            scheme,
        }
    }

    /// POSTs `body` as JSON to `http(s)://{addr}{path}` and decodes the
    /// answer.
    pub async fn post<B: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: std::time::Duration,
    ) -> Result<R, CallError> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let req = self
            .http
            .post(&url)
            .header("authorization", bearer(&self.token))
            .json(body);
        self.send(url, req, timeout).await
    }

    /// GETs `http(s)://{addr}{path}` and decodes the JSON answer.
    pub async fn get<R: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<R, CallError> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let req = self
            .http
            .get(&url)
            .header("authorization", bearer(&self.token));
        self.send(url, req, timeout).await
    }

    async fn send<R: serde::de::DeserializeOwned>(
        &self,
        url: String,
        req: reqwest::RequestBuilder,
        timeout: std::time::Duration,
    ) -> Result<R, CallError> {
        let call = async {
            let resp = req.send().await?;
            let status = resp.status();
            if !status.is_success() {
                return Ok(Err((
                    status.as_u16(),
                    resp.text().await.unwrap_or_default(),
                )));
            }
            resp.json::<R>().await.map(Ok)
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(CallError::Timeout { url, timeout }),
            Ok(Err(source)) => Err(CallError::Transport { url, source }),
            Ok(Ok(Err((status, body)))) => Err(CallError::Refused { url, status, body }),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }
}

/// How the keeper reaches one datasource's agent.
#[derive(Debug, Clone)]
pub enum AgentHandle {
    /// A `zerodb-agent` at this control address.
    Remote(String),
    /// No agent: the keeper does the agent's work itself.
    Local(Arc<AgentCore>),
}

/// An order that was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The remote agent could not be called, or refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The in-process agent refused or failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The in-process agent did not finish in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The keeper knows no agent for this datasource.
    #[error("no agent for {0}")]
    NoAgent(String),
    /// The keeper no longer leads (keepers on etcd): the order was not sent.
    #[error("this keeper does not lead: the order was not sent")]
    NotLeading,
}

impl OrderError {
    /// Whether the datasource's server answered, through its agent (it
    /// refused the order, or the order failed there: HTTP 500, or 409 for
    /// an order under an old epoch or term), as opposed to nobody answering: the
    /// agent could not be called or did not answer in time, could not
    /// reach its server (503), or answered something else (401, 404, a
    /// gateway's 502 or 504), which says nothing of the server.
    pub fn server_answered(&self) -> bool {
        match self {
            OrderError::Call(CallError::Refused { status, .. }) => matches!(status, 409 | 500),
            OrderError::Call(_)
            | OrderError::Timeout(_)
            | OrderError::NoAgent(_)
            | OrderError::NotLeading => false,
            OrderError::Agent(AgentError::Ops(e)) => e.server_answered(),
            OrderError::Agent(AgentError::StaleEpoch { .. } | AgentError::StaleTerm { .. }) => true,
        }
    }
}

impl AgentHandle {
    /// The handle for `ds`: its agent's address, or an in-process agent
    /// logging in with the dataHost's credentials.
    pub fn for_datasource(
        cfg: &KeeperConfig,
        dh: &KeeperDataHostConfig,
        ds: &DatasourceConfig,
    ) -> Self {
        match &ds.agent {
            Some(addr) => AgentHandle::Remote(addr.clone()),
            None => {
                let ops = MysqlOps::new(
                    &ds.name,
                    &ds.addr,
                    &dh.user,
                    &dh.password,
                    cfg.timings.agent_timeout,
                    // The keeper's own load average says nothing of the
                    // datasource's machine: count its running statements.
                    LoadMeasure::ThreadsRunning,
                    None,
                );
                // Its epoch and topology survive the keeper's restarts (and
                // tell a keeper that lost its own state where it stood).
                let mut core = AgentCore::new(ops, cfg.timings.promote_timeout);
                let dir = cfg.state_dir.join("agents").join(&ds.name);
                if let Err(e) = core.keep_state_in(&dir) {
                    tracing::error!(datasource = %ds.name, dir = %dir.display(), error = %e, "the in-process agent keeps no state");
                }
                AgentHandle::Local(Arc::new(core))
            }
        }
    }

    /// The agent's report, or `None` if it did not answer in time.
    pub async fn report(&self, client: &Client, timeout: Duration) -> Option<AgentReport> {
        match self {
            AgentHandle::Remote(addr) => match client.get(addr, "/v1/report", timeout).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(agent = %addr, error = %e, "agent did not report");
                    None
                }
            },
            // The in-process agent answers even when its server is dead.
            AgentHandle::Local(core) => tokio::time::timeout(timeout * 2, core.report()).await.ok(),
        }
    }

    /// Has the agent carry out `order` within `timeout`.
    pub async fn order(
        &self,
        client: &Client,
        order: &Order,
        timeout: Duration,
    ) -> Result<(), OrderError> {
        match self {
            AgentHandle::Remote(addr) => {
                client
                    .post::<_, serde_json::Value>(addr, "/v1/order", order, timeout)
                    .await?;
                Ok(())
            }
            AgentHandle::Local(core) => {
                match tokio::time::timeout(timeout, core.order(order)).await {
                    Ok(r) => Ok(r?),
                    Err(_) => Err(OrderError::Timeout(timeout)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpsError;

    fn ops(e: mysql_async::Error) -> OrderError {
        OrderError::Agent(AgentError::Ops(OpsError::Sql {
            addr: "db:3306".into(),
            source: e,
        }))
    }

    fn refused(status: u16) -> OrderError {
        OrderError::Call(CallError::Refused {
            url: "http://agent/v1/order".into(),
            status,
            body: String::new(),
        })
    }

    #[test]
    fn a_follower_keeper_answers_421_with_the_leader() {
        let call = |status: u16, body: &str| CallError::Refused {
            url: "http://k/v1/agent/heartbeat".into(),
            status,
            body: body.into(),
        };
        assert_eq!(
            call(421, r#"{"leader":"10.0.0.6:7700"}"#).not_leader(),
            Some(NotLeader {
                leader: Some("10.0.0.6:7700".into())
            })
        );
        assert_eq!(
            call(421, r#"{"leader":null}"#).not_leader(),
            Some(NotLeader { leader: None })
        );
        assert_eq!(call(421, "misdirected").not_leader(), None);
        assert_eq!(call(409, r#"{"leader":"x:1"}"#).not_leader(), None);
    }

    /// What counts as "the server answered" (a fence it refused rejects the
    /// switch) and what as "nobody answered" (the switch goes on).
    #[test]
    fn which_errors_mean_the_server_answered() {
        let server = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1227,
            message: "Access denied; you need the READ_ONLY ADMIN privilege".into(),
            state: "42000".into(),
        });
        let refused_conn = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let table: Vec<(OrderError, bool)> = vec![
            (ops(server), true),
            (
                ops(mysql_async::Error::Other("relay log not applied".into())),
                true,
            ),
            (ops(refused_conn), false),
            (
                OrderError::Agent(AgentError::Ops(OpsError::Timeout("db".into()))),
                false,
            ),
            (
                OrderError::Agent(AgentError::Ops(OpsError::Stalled("db".into()))),
                false,
            ),
            (
                OrderError::Agent(AgentError::StaleEpoch {
                    seen: 3,
                    offered: 2,
                }),
                true,
            ),
            (
                OrderError::Agent(AgentError::StaleTerm {
                    seen: 3,
                    offered: 2,
                }),
                true,
            ),
            (refused(500), true),
            (refused(409), true),
            (refused(503), false),
            (refused(401), false),
            (refused(504), false),
            (OrderError::Timeout(Duration::from_secs(1)), false),
            (OrderError::NoAgent("x".into()), false),
        ];
        for (e, answered) in table {
            assert_eq!(e.server_answered(), answered, "{e}");
        }
    }
}
