//! The agent beside one datasource: its reports, the orders it takes (each
//! under an epoch it checks), and what it does on its own when the keeper's
//! topology says its server is no longer the active one (SPEC §5).
//!
//! [`AgentCore`] holds that logic without any transport: the `zerodb-agent`
//! binary serves it over HTTP (the `http` module), and a keeper drives it
//! in-process for datasources that have no agent of their own.

use crate::ops::{MysqlOps, OpsError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use zerodb_core::control::{
    errant_gtids, AgentHeartbeatReply, AgentReport, ClusterTopology, Order, OrderKind,
};

/// Why an order was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The order comes from a keeper whose term is older than the newest
    /// the agent has seen: a deposed leader (SPEC §8).
    #[error("order under term {offered} refused: term {seen} has been seen")]
    StaleTerm {
        /// The newest term seen.
        seen: u64,
        /// The order's term.
        offered: u64,
    },
    /// The order's epoch is older than the newest the agent has seen.
    #[error("order under epoch {offered} refused: epoch {seen} has been seen")]
    StaleEpoch {
        /// The newest epoch seen.
        seen: u64,
        /// The order's epoch.
        offered: u64,
    },
    /// The SQL work on the server failed.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

#[derive(Debug, Default, Clone)]
struct State {
    /// The newest keeper term seen, in an order or a topology.
    term: u64,
    /// The newest epoch seen, in an order or a topology.
    epoch: u64,
    /// The newest topology seen.
    topology: Option<ClusterTopology>,
    /// Fenced by an order or by a topology naming another active.
    fenced: bool,
    /// Errant transactions that stop it from rejoining.
    errant: Option<String>,
    /// Promoted, or its fence lifted, by an order under this epoch: it
    /// may be the active datasource of a topology it has not seen yet
    /// (cleared by a fence).
    active_under: Option<u64>,
}

/// What an agent keeps across restarts (`state_dir/agent-state.json`), so
/// that a keeper that lost its own state learns the newest epoch and
/// topology from it (SPEC §7).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The newest epoch seen.
    pub epoch: u64,
    /// The newest keeper term seen (0: none, or a sole keeper).
    #[serde(default)]
    pub term: u64,
    /// The newest topology seen (`None`: none yet).
    pub topology: Option<ClusterTopology>,
    /// The epoch of the last order that made the server writable (a
    /// promotion, a fence lifted), unless a fence came after it.
    #[serde(default)]
    pub active_under: Option<u64>,
}

/// One datasource's agent.
#[derive(Debug)]
pub struct AgentCore {
    /// The server this agent looks after, reached over SQL.
    pub ops: std::sync::Arc<MysqlOps>,
    /// How long a promotion may wait for the relay log to be applied.
    pub promote_timeout: Duration,
    state: Mutex<State>,
    /// Where [`SavedState`] is kept (`None`: nowhere, for the keeper's
    /// in-process agents).
    saved: Option<PathBuf>,
    /// Serialises writes of [`SavedState`].
    saving: Mutex<()>,
    /// Orders run one at a time, in the order they arrive: a late fence
    /// never lands after the order that lifts it.
    ordering: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl AgentCore {
    /// An agent for `ops` that keeps nothing across restarts (see [`Self::with_state_dir`]).
    pub fn new(ops: MysqlOps, promote_timeout: Duration) -> Self {
        Self {
            ops: std::sync::Arc::new(ops),
            promote_timeout,
            state: Mutex::new(State::default()),
            saved: None,
            saving: Mutex::new(()),
            ordering: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Keeps the newest epoch and topology in `dir` (created if need be),
    /// starting from what was kept there before.
    pub fn with_state_dir(mut self, dir: &std::path::Path) -> std::io::Result<Self> {
        self.keep_state_in(dir)?;
        Ok(self)
    }

    /// [`Self::with_state_dir`] on an agent already built; on failure it
    /// keeps nothing.
    pub fn keep_state_in(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("agent-state.json");
        if let Some(b) = zerodb_core::durable::read_file(&path)? {
            let saved: SavedState = serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            tracing::info!(epoch = saved.epoch, term = saved.term, "agent state loaded");
            let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            s.epoch = saved.epoch;
            s.term = saved.term;
            s.topology = saved.topology;
            s.active_under = saved.active_under;
        }
        self.saved = Some(path);
        Ok(())
    }

    /// The newest topology seen, to report to the keeper.
    pub fn topology(&self) -> Option<ClusterTopology> {
        self.state().topology.clone()
    }

    /// Writes the epoch and topology down if they changed.
    fn save(&self, before: &SavedState) {
        let Some(path) = &self.saved else { return };
        // One writer at a time, each writing the newest state: a write
        // never replaces a newer one.
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.saved_state();
        if now == *before {
            return;
        }
        let written = serde_json::to_vec_pretty(&now)
            .map_err(std::io::Error::other)
            .and_then(|b| zerodb_core::durable::replace_file(path, &b));
        if let Err(e) = written {
            metrics::counter!("zerodb_agent_state_write_errors_total").increment(1);
            tracing::error!(path = %path.display(), error = %e, "cannot keep the agent's epoch and topology");
        }
    }

    fn saved_state(&self) -> SavedState {
        let s = self.state();
        SavedState {
            epoch: s.epoch,
            term: s.term,
            topology: s.topology.clone(),
            active_under: s.active_under,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest epoch seen, in an order or a topology.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// The newest keeper term seen, in an order or a topology.
    pub fn term(&self) -> u64 {
        self.state().term
    }

    /// The server's report, with the agent's epoch and term, fencing and errant transactions added; never
    /// fails.
    pub async fn report(&self) -> AgentReport {
        let mut r = self.ops.report().await;
        let s = self.state().clone();
        r.epoch = s.epoch;
        r.term = s.term;
        r.fenced = s.fenced;
        r.errant = s.errant;
        r
    }

    /// Checks `term`, then `epoch`, against the newest seen and records
    /// both; a refusal records nothing.
    fn admit(&self, term: u64, epoch: u64) -> Result<(), AgentError> {
        let mut s = self.state();
        if term < s.term {
            return Err(AgentError::StaleTerm {
                seen: s.term,
                offered: term,
            });
        }
        if epoch < s.epoch {
            return Err(AgentError::StaleEpoch {
                seen: s.epoch,
                offered: epoch,
            });
        }
        s.term = term;
        s.epoch = epoch;
        Ok(())
    }

    /// Carries out one order from the keeper.
    pub async fn order(&self, order: &Order) -> Result<(), AgentError> {
        let one_at_a_time = self.ordering.clone().lock_owned().await;
        let before = self.saved_state();
        self.admit(order.term, order.epoch)?;
        self.save(&before);
        let name = &self.ops.name;
        match &order.kind {
            OrderKind::Promote => {
                // The promotion runs to its end even if this caller stops
                // waiting, and the next order waits for it: it holds the
                // turn itself.
                let (ops, timeout) = (self.ops.clone(), self.promote_timeout);
                let promoted = tokio::spawn(async move {
                    let _turn = one_at_a_time;
                    ops.promote(timeout).await
                });
                promoted
                    .await
                    .map_err(|e| OpsError::Failed(format!("the promotion stopped: {e}")))??;
                {
                    let mut s = self.state();
                    s.fenced = false;
                    s.errant = None;
                    s.active_under = Some(order.epoch);
                }
                self.save(&before);
                tracing::warn!(datasource = %name, epoch = order.epoch, "promoted: replication reset, read_only OFF");
            }
            OrderKind::Fence => {
                // Whatever the SQL outcome, this server must stay fenced.
                {
                    let mut s = self.state();
                    s.fenced = true;
                    s.active_under = None;
                }
                self.save(&before);
                let ended = self.ops.fence().await?;
                tracing::warn!(datasource = %name, epoch = order.epoch, sessions_ended = ended, "fenced: read_only ON");
            }
            OrderKind::Unfence => {
                self.ops.unfence().await?;
                {
                    let mut s = self.state();
                    s.fenced = false;
                    s.active_under = Some(order.epoch);
                }
                self.save(&before);
                tracing::warn!(datasource = %name, epoch = order.epoch, "fence lifted: read_only OFF");
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

    /// With the keeper out of reach: fences a writable server that the
    /// newest topology this agent has seen (kept across its restarts) names
    /// a standby, so a former source that comes back never takes writes
    /// while the keeper is down (SPEC §5).
    ///
    /// The agent may have taken an order under a newer epoch than that
    /// topology (the keeper went away before its heartbeat brought the
    /// new one). If the order made the server writable (a promotion, a
    /// fence lifted), the keeper may have published it as the active
    /// datasource, and proxies may be writing to it: it is left alone (a
    /// switch the keeper never published is rolled back by the next
    /// keeper). Any other order under a newer epoch (a fence, a re-point)
    /// means a switch happened or was tried and did not make it the
    /// active one: a writable server is fenced, whatever the older
    /// topology says.
    pub async fn on_keeper_unreachable(&self, report: &AgentReport) {
        // Not while an order runs: its outcome decides (next tick).
        let Ok(_turn) = self.ordering.try_lock() else {
            return;
        };
        let (topology, epoch, active_under) = {
            let s = self.state();
            (s.topology.clone(), s.epoch, s.active_under)
        };
        let Some(t) = topology else { return };
        if active_under.is_some_and(|e| e > t.epoch) {
            return;
        }
        if epoch > t.epoch {
            self.fence_if_writable(report, "an order under a newer epoch than its topology")
                .await;
            return;
        }
        self.fence_unless_active(&t, report).await;
    }

    /// Fences the server if it answers and is writable; `false` if the
    /// fence failed.
    async fn fence_if_writable(&self, report: &AgentReport, why: &str) -> bool {
        if !report.alive || report.read_only != Some(false) {
            return true;
        }
        let name = &self.ops.name;
        tracing::warn!(datasource = %name, why, "writable but not the active datasource: fencing");
        self.state().fenced = true;
        if let Err(e) = self.ops.fence().await {
            tracing::error!(datasource = %name, error = %e, "fencing failed; will retry");
            return false;
        }
        true
    }

    /// Fences the server if `topology` names another datasource active and
    /// it is writable. `true` when it is a live standby that is (now)
    /// read-only or fenced, `false` when there is nothing more to do (it is
    /// the active one, unknown, dead, or the fence failed).
    async fn fence_unless_active(&self, topology: &ClusterTopology, report: &AgentReport) -> bool {
        let name = &self.ops.name;
        let Some(dh) = topology
            .datahosts
            .iter()
            .find(|d| d.active == *name || d.standbys.contains(name))
        else {
            return false;
        };
        if dh.active == *name || !report.alive {
            return false;
        }
        let why = format!("epoch {} names {} active", topology.epoch, dh.active);
        self.fence_if_writable(report, &why).await
    }

    /// Acts on the topology the keeper sent back to a heartbeat: a server
    /// that is not its dataHost's active datasource is made read-only at
    /// once, and rejoins as a standby of the active one only if it holds no
    /// transaction that the active lacks.
    pub async fn on_heartbeat_reply(&self, reply: &AgentHeartbeatReply, report: &AgentReport) {
        let name = self.ops.name.clone();
        let before = self.saved_state();
        if let Err(e) = self.admit(reply.topology.term, reply.topology.epoch) {
            // A deposed leader's reply, or an older view than an order we
            // took: ignore it.
            if matches!(e, AgentError::StaleTerm { .. }) {
                tracing::warn!(datasource = %name, error = %e, "heartbeat reply from a deposed keeper ignored");
            }
            return;
        }
        {
            let mut s = self.state();
            let newer = s
                .topology
                .as_ref()
                .is_none_or(|t| reply.topology.epoch > t.epoch);
            if newer {
                s.topology = Some(reply.topology.clone());
            }
        }
        self.save(&before);
        // Not while an order runs (the report may predate it): next tick.
        let Ok(_turn) = self.ordering.try_lock() else {
            return;
        };
        if self.epoch() > reply.topology.epoch {
            return; // an order under a newer epoch came meanwhile
        }
        if !self.fence_unless_active(&reply.topology, report).await {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;
    use zerodb_core::control::{DataHostState, LoadMeasure};

    /// An agent whose server is not there (connections are refused at
    /// once): the checks before any SQL are what these tests look at.
    fn agent() -> AgentCore {
        let ops = MysqlOps::new(
            "mysql_1",
            "127.0.0.1:1",
            "admin",
            "",
            Duration::from_millis(300),
            LoadMeasure::ThreadsRunning,
            None,
        );
        AgentCore::new(ops, Duration::from_secs(1))
    }

    fn state_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zerodb-agent-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn order(term: u64, epoch: u64) -> Order {
        Order {
            epoch,
            term,
            kind: OrderKind::Fence,
        }
    }

    fn reply(term: u64, epoch: u64) -> AgentHeartbeatReply {
        AgentHeartbeatReply {
            topology: ClusterTopology {
                epoch,
                term,
                datahosts: vec![DataHostState::new("dh1", "mysql_2", ["mysql_1", "mysql_2"])],
            },
            follow: None,
        }
    }

    #[tokio::test]
    async fn an_order_under_an_older_term_is_refused_term_first() {
        let a = agent();
        // Admitted (its SQL then fails: no server), so term 3 and epoch 5
        // are the newest seen.
        let _ = a.order(&order(3, 5)).await;
        assert_eq!((a.term(), a.epoch()), (3, 5));
        // An older term is refused even under a newer epoch.
        let e = a.order(&order(2, 9)).await.unwrap_err();
        assert!(
            matches!(
                e,
                AgentError::StaleTerm {
                    seen: 3,
                    offered: 2
                }
            ),
            "{e}"
        );
        assert_eq!((a.term(), a.epoch()), (3, 5), "a refusal records nothing");
        // A newer term under an older epoch: the epoch refuses it, and
        // the term is not taken either.
        let e = a.order(&order(4, 4)).await.unwrap_err();
        assert!(
            matches!(
                e,
                AgentError::StaleEpoch {
                    seen: 5,
                    offered: 4
                }
            ),
            "{e}"
        );
        assert_eq!((a.term(), a.epoch()), (3, 5));
        // The same term and a newer epoch: taken; a newer term too.
        let _ = a.order(&order(3, 6)).await;
        let _ = a.order(&order(7, 7)).await;
        assert_eq!((a.term(), a.epoch()), (7, 7));
        assert_eq!(a.report().await.term, 7, "the report carries the term");
    }

    #[tokio::test]
    async fn the_newest_term_survives_a_restart() {
        let dir = state_dir("term");
        let a = agent().with_state_dir(&dir).unwrap();
        let _ = a.order(&order(4, 2)).await;
        assert_eq!(a.term(), 4);
        drop(a);
        let b = agent().with_state_dir(&dir).unwrap();
        assert_eq!((b.term(), b.epoch()), (4, 2));
        let e = b.order(&order(3, 8)).await.unwrap_err();
        assert!(matches!(e, AgentError::StaleTerm { .. }), "{e}");
        // A state written before terms existed is under term 0.
        std::fs::write(
            dir.join("agent-state.json"),
            r#"{"epoch":6,"topology":null}"#,
        )
        .unwrap();
        let c = agent().with_state_dir(&dir).unwrap();
        assert_eq!((c.term(), c.epoch()), (0, 6));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_heartbeat_reply_under_an_older_term_is_ignored() {
        let a = agent();
        let _ = a.order(&order(5, 3)).await;
        let report = AgentReport::default();
        a.on_heartbeat_reply(&reply(4, 9), &report).await;
        assert_eq!(a.topology(), None, "a deposed leader's topology");
        assert_eq!((a.term(), a.epoch()), (5, 3));
        a.on_heartbeat_reply(&reply(6, 9), &report).await;
        assert_eq!(a.topology().map(|t| (t.term, t.epoch)), Some((6, 9)));
        assert_eq!((a.term(), a.epoch()), (6, 9), "the reply's term is learnt");
    }
}
