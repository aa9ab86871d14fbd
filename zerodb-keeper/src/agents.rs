//! How the keeper reaches agents: the [`Agents`] trait (which tests fake),
//! and [`AgentSet`], one [`AgentHandle`] per configured datasource (a
//! remote `zerodb-agent`, or an in-process one for a datasource without).

use crate::lead::Leadership;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zerodb_agent::client::{AgentHandle, Client, OrderError};
use zerodb_agent::AgentCore;
use zerodb_core::config::KeeperConfig;
use zerodb_core::control::{AgentReport, Order};

/// The agents of a cluster's datasources, by datasource name.
#[async_trait::async_trait]
pub trait Agents: Send + Sync {
    /// `datasource`'s report, or `None` if its agent did not answer within
    /// `timeout`.
    async fn report(&self, datasource: &str, timeout: Duration) -> Option<AgentReport>;

    /// Has `datasource`'s agent carry out `order` within `timeout`.
    async fn order(
        &self,
        datasource: &str,
        order: Order,
        timeout: Duration,
    ) -> Result<(), OrderError>;
}

/// One handle per configured datasource.
#[derive(Debug)]
pub struct AgentSet {
    handles: HashMap<String, AgentHandle>,
    client: Client,
}

impl AgentSet {
    /// The agents `cfg` names, and in-process ones for datasources without.
    pub fn from_config(cfg: &KeeperConfig) -> Self {
        let mut handles = HashMap::new();
        for dh in &cfg.datahosts {
            for ds in &dh.datasources {
                handles.insert(ds.name.clone(), AgentHandle::for_datasource(cfg, dh, ds));
            }
        }
        Self {
            handles,
            client: Client::with_tls(
                &cfg.token,
                // The binary read these files before it started.
                zerodb_core::control_tls::client_config(&cfg.control_tls).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "control_tls: calls to agents go in clear");
                    None
                }),
            ),
        }
    }

    /// The in-process agents, by datasource.
    pub fn local(&self) -> Vec<(String, Arc<AgentCore>)> {
        self.handles
            .iter()
            .filter_map(|(n, h)| match h {
                AgentHandle::Local(core) => Some((n.clone(), core.clone())),
                AgentHandle::Remote(_) => None,
            })
            .collect()
    }

    /// The datasources whose agent runs on its own.
    pub fn remote(&self) -> impl Iterator<Item = &String> {
        self.handles
            .iter()
            .filter(|(_, h)| matches!(h, AgentHandle::Remote(_)))
            .map(|(n, _)| n)
    }
}

#[async_trait::async_trait]
impl Agents for AgentSet {
    async fn report(&self, datasource: &str, timeout: Duration) -> Option<AgentReport> {
        self.handles
            .get(datasource)?
            .report(&self.client, timeout)
            .await
    }

    async fn order(
        &self,
        datasource: &str,
        order: Order,
        timeout: Duration,
    ) -> Result<(), OrderError> {
        match self.handles.get(datasource) {
            Some(h) => h.order(&self.client, &order, timeout).await,
            None => Err(OrderError::NoAgent(datasource.to_string())),
        }
    }
}

/// Agents reached only while this keeper may act ([`Leadership::acting`]):
/// a keeper whose lease may have lapsed (it was paused, or cut off from
/// etcd) sends no order, even one its switch was about to send.
pub struct LeaderOnly {
    inner: Arc<dyn Agents>,
    lead: Arc<Leadership>,
}

impl LeaderOnly {
    /// `inner`, gated by `lead`.
    pub fn new(inner: Arc<dyn Agents>, lead: Arc<Leadership>) -> Self {
        Self { inner, lead }
    }
}

#[async_trait::async_trait]
impl Agents for LeaderOnly {
    async fn report(&self, datasource: &str, timeout: Duration) -> Option<AgentReport> {
        self.inner.report(datasource, timeout).await
    }

    async fn order(
        &self,
        datasource: &str,
        order: Order,
        timeout: Duration,
    ) -> Result<(), OrderError> {
        if !self.lead.acting_for(order.term) {
            metrics::counter!("zerodb_keeper_orders_withheld_total").increment(1);
            tracing::warn!(datasource, ?order, "not leading: order withheld");
            return Err(OrderError::NotLeading);
        }
        self.inner.order(datasource, order, timeout).await
    }
}
