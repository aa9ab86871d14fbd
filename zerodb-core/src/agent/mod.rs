//! The agent beside one datasource: its reports, the orders it takes (each
//! under an epoch it checks), and what it does on its own when the keeper's
//! topology says its server is no longer the active one (SPEC §5).
//!
//! [`AgentCore`] holds that logic without any transport: the `zerodb-agent`
//! binary serves it over HTTP ([`service`]), and an embedded keeper drives it
//! in-process for datasources that have no agent of their own.

pub mod ops;
pub mod service;

use crate::control::{errant_gtids, AgentHeartbeatReply, AgentReport, Order, OrderKind};
use ops::{MysqlOps, OpsError};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("order under epoch {offered} refused: epoch {seen} has been seen")]
    StaleEpoch { seen: u64, offered: u64 },
    #[error(transparent)]
    Ops(#[from] OpsError),
}

#[derive(Debug, Default, Clone)]
struct State {
    /// The newest epoch seen, in an order or a topology.
    epoch: u64,
    /// Fenced by an order or by a topology naming another active.
    fenced: bool,
    /// Errant transactions that stop it from rejoining.
    errant: Option<String>,
}

/// One datasource's agent.
#[derive(Debug)]
pub struct AgentCore {
    pub ops: std::sync::Arc<MysqlOps>,
    /// How long a promotion may wait for the relay log to be applied.
    pub promote_timeout: Duration,
    state: Mutex<State>,
}

impl AgentCore {
    pub fn new(ops: MysqlOps, promote_timeout: Duration) -> Self {
        Self {
            ops: std::sync::Arc::new(ops),
            promote_timeout,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    pub async fn report(&self) -> AgentReport {
        let mut r = self.ops.report().await;
        let s = self.state().clone();
        r.epoch = s.epoch;
        r.fenced = s.fenced;
        r.errant = s.errant;
        r
    }

    /// Checks `epoch` against the newest seen and records it.
    fn admit(&self, epoch: u64) -> Result<(), AgentError> {
        let mut s = self.state();
        if epoch < s.epoch {
            return Err(AgentError::StaleEpoch {
                seen: s.epoch,
                offered: epoch,
            });
        }
        s.epoch = epoch;
        Ok(())
    }

    /// Carries out one order from the keeper.
    pub async fn order(&self, order: &Order) -> Result<(), AgentError> {
        self.admit(order.epoch)?;
        let name = &self.ops.name;
        match &order.kind {
            OrderKind::Promote => {
                self.ops.promote(self.promote_timeout).await?;
                let mut s = self.state();
                s.fenced = false;
                s.errant = None;
                tracing::warn!(datasource = %name, epoch = order.epoch, "promoted: replication reset, read_only OFF");
            }
            OrderKind::Fence => {
                // Whatever the SQL outcome, this server must stay fenced.
                self.state().fenced = true;
                let ended = self.ops.fence().await?;
                tracing::warn!(datasource = %name, epoch = order.epoch, sessions_ended = ended, "fenced: read_only ON");
            }
            OrderKind::Follow {
                source,
                user,
                password,
            } => {
                self.ops.follow(source, user, password).await?;
                tracing::info!(datasource = %name, source = %source, epoch = order.epoch, "replicating from the new source");
            }
            OrderKind::CatchUp {
                position,
                timeout_ms,
            } => {
                self.ops
                    .catch_up(position, Duration::from_millis(*timeout_ms))
                    .await?;
            }
        }
        Ok(())
    }

    /// Acts on the topology the keeper sent back to a heartbeat: a server
    /// that is not its dataHost's active datasource is made read-only at
    /// once, and rejoins as a standby of the active one only if it holds no
    /// transaction that the active lacks.
    pub async fn on_heartbeat_reply(&self, reply: &AgentHeartbeatReply, report: &AgentReport) {
        let name = self.ops.name.clone();
        if self.admit(reply.topology.epoch).is_err() {
            return; // an older view than an order we took: ignore it
        }
        let Some(dh) = reply
            .topology
            .datahosts
            .iter()
            .find(|d| d.active == name || d.standbys.contains(&name))
        else {
            return;
        };
        if dh.active == name || !report.alive {
            return;
        }
        if report.read_only == Some(false) {
            tracing::warn!(datasource = %name, active = %dh.active, epoch = reply.topology.epoch,
                "writable but not the active datasource: fencing");
            self.state().fenced = true;
            if let Err(e) = self.ops.fence().await {
                tracing::error!(datasource = %name, error = %e, "fencing failed; will retry");
                return;
            }
        }
        let Some(hint) = &reply.follow else { return };
        if report
            .replica
            .as_ref()
            .is_some_and(|r| r.source == hint.source)
        {
            // A standby of the active datasource: whatever fenced it
            // before, it is read-only and follows now.
            let mut s = self.state();
            s.errant = None;
            s.fenced = false;
            return;
        }
        let Some(theirs) = &hint.source_gtid_binlog_state else {
            return; // cannot check for errant transactions yet
        };
        let errant = errant_gtids(&report.gtid_binlog_state, theirs);
        if !errant.is_empty() {
            let msg = format!(
                "holds transactions {} that {} lacks; stays fenced until an operator resolves them",
                errant.join(","),
                hint.source_name
            );
            let mut s = self.state();
            if s.errant.as_deref() != Some(msg.as_str()) {
                tracing::error!(datasource = %name, "{msg}");
                s.errant = Some(msg);
            }
            return;
        }
        match self
            .ops
            .follow(&hint.source, &hint.user, &hint.password)
            .await
        {
            Ok(()) => {
                let mut s = self.state();
                s.errant = None;
                s.fenced = false;
                tracing::warn!(datasource = %name, source = %hint.source_name, "rejoined as a standby");
            }
            Err(e) => tracing::error!(datasource = %name, error = %e, "cannot rejoin as a standby"),
        }
    }
}
