//! How the keeper reaches each datasource's agent: over HTTP, or
//! in-process (SQL straight to the server) when no agent is configured.

use super::local_agent;
use crate::agent::AgentCore;
use crate::config::{DatasourceConfig, KeeperConfig, KeeperDataHostConfig};
use crate::control::{AgentReport, Client, Order};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum AgentHandle {
    /// A `zerodb-agent` at this control address.
    Remote(String),
    /// No agent: the keeper does the agent's work itself.
    Local(Arc<AgentCore>),
}

impl AgentHandle {
    pub fn for_datasource(
        cfg: &KeeperConfig,
        dh: &KeeperDataHostConfig,
        ds: &DatasourceConfig,
    ) -> Self {
        match &ds.agent {
            Some(addr) => AgentHandle::Remote(addr.clone()),
            None => AgentHandle::Local(Arc::new(local_agent(cfg, dh, &ds.addr, &ds.name))),
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

    pub async fn order(
        &self,
        client: &Client,
        order: &Order,
        timeout: Duration,
    ) -> Result<(), String> {
        match self {
            AgentHandle::Remote(addr) => client
                .post::<_, serde_json::Value>(addr, "/v1/order", order, timeout)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            AgentHandle::Local(core) => {
                match tokio::time::timeout(timeout, core.order(order)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            }
        }
    }
}
