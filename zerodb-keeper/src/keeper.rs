//! The keeper: proxies' sessions, votes, agents, and the switch itself.
//!
//! The decision is [`zerodb_core::decision::decide`]; this module gathers its
//! inputs (votes from every registered proxy, reports from agents), carries
//! out an approved switch (reserve and persist an epoch, promote, fence,
//! persist the topology, push it), and records every decision.

use crate::store::{Persisted, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use zerodb_agent::client::{AgentHandle, Client};
use zerodb_core::config::{KeeperConfig, KeeperDataHostConfig};
use zerodb_core::control::{
    AgentHeartbeat, AgentHeartbeatReply, AgentReport, ClusterTopology, DataHostState, FollowHint,
    FromKeeper, Order, OrderKind, SwitchAnswer,
};
use zerodb_core::decision::{
    decide, Decision, Input, Member, Need, Rejection, Reports, Request, RequestKind, Step, Vote,
};

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("state in {dir}: {source}")]
    State { dir: String, source: std::io::Error },
    #[error("persisted topology names dataHost `{0}`, which the config does not")]
    Mismatch(String),
}

/// One registered proxy.
#[derive(Debug)]
struct Proxy {
    last_seen: Instant,
    /// The live connection, if any: its id and outbound channel.
    conn: Option<(u64, mpsc::UnboundedSender<FromKeeper>)>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Persisted,
    proxies: BTreeMap<String, Proxy>,
    last_switch: HashMap<String, Instant>,
    /// Last heartbeat report of each datasource's agent.
    reports: HashMap<String, (Instant, AgentReport)>,
}

/// One recorded decision: its inputs, outcome and timings.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    pub id: u64,
    /// When the request arrived, and when the decision was carried out.
    pub requested_at_unix_ms: u64,
    pub at_unix_ms: u64,
    pub request: Request,
    pub active: String,
    pub members: Vec<Member>,
    pub votes: Option<BTreeMap<String, Vote>>,
    pub reports: Option<Reports>,
    pub decision: Decision,
    /// The epoch of the new topology, when approved and carried out.
    pub epoch: Option<u64>,
    /// Milliseconds spent per phase (votes, reports, promote, publish).
    pub phases_ms: BTreeMap<&'static str, u64>,
}

pub struct Keeper {
    cfg: KeeperConfig,
    store: Store,
    inner: Mutex<Inner>,
    /// Serialises decisions per dataHost.
    locks: HashMap<String, tokio::sync::Mutex<()>>,
    agents: HashMap<String, AgentHandle>,
    client: Client,
    /// Requests sent to proxies (votes, holds), by id, awaiting an answer.
    pending: Mutex<HashMap<u64, oneshot::Sender<u64>>>,
    decisions: Mutex<VecDeque<DecisionRecord>>,
    next_id: AtomicU64,
    started: Instant,
    /// Started without saved state: until this instant (or until every
    /// agent has reported), registrations wait, so that a topology an
    /// agent holds is adopted before any proxy is given the config's.
    discovery_until: Option<Instant>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").finish_non_exhaustive()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn initial_topology(cfg: &KeeperConfig) -> ClusterTopology {
    ClusterTopology {
        epoch: 1,
        datahosts: cfg
            .datahosts
            .iter()
            .map(|d| {
                let first = d.datasources.first().map(|s| s.name.as_str());
                let active = d.active.as_deref().or(first).unwrap_or_default();
                DataHostState::new(
                    &d.name,
                    active,
                    d.datasources.iter().map(|s| s.name.as_str()),
                )
            })
            .collect(),
    }
}

impl Keeper {
    /// Loads (or creates) the persisted state. Datasources without an
    /// `agent` address are handled in-process over SQL.
    pub fn open(cfg: KeeperConfig) -> Result<Arc<Self>, KeeperError> {
        let state_err = |source| KeeperError::State {
            dir: cfg.state_dir.display().to_string(),
            source,
        };
        let store = Store::open(&cfg.state_dir).map_err(state_err)?;
        let saved = store.load().map_err(state_err)?;
        let discovery_until = saved
            .is_none()
            .then(|| Instant::now() + cfg.timings.session_timeout);
        let state = match saved {
            Some(s) => {
                for dh in &s.topology.datahosts {
                    if !cfg.datahosts.iter().any(|d| d.name == dh.name) {
                        return Err(KeeperError::Mismatch(dh.name.clone()));
                    }
                }
                tracing::info!(
                    epoch = s.epoch,
                    proxies = s.proxies.len(),
                    "keeper state loaded"
                );
                s
            }
            None => {
                let s = Persisted {
                    epoch: 1,
                    topology: initial_topology(&cfg),
                    membership_confirmed: true,
                    ..Default::default()
                };
                store.save(&s).map_err(state_err)?;
                tracing::info!(
                    "keeper state created at epoch 1, from the config unless a proxy or agent reports a newer one"
                );
                s
            }
        };
        let now = Instant::now();
        // Proxies registered before a restart are members still: they get
        // one session timeout to reconnect before they count as lost.
        let proxies = state
            .proxies
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Proxy {
                        last_seen: now,
                        conn: None,
                    },
                )
            })
            .collect();
        let mut agents = HashMap::new();
        for dh in &cfg.datahosts {
            for ds in &dh.datasources {
                agents.insert(ds.name.clone(), AgentHandle::for_datasource(&cfg, dh, ds));
            }
        }
        let locks = cfg
            .datahosts
            .iter()
            .map(|d| (d.name.clone(), tokio::sync::Mutex::new(())))
            .collect();
        metrics::gauge!("zerodb_keeper_epoch").set(state.epoch as f64);
        Ok(Arc::new(Self {
            client: Client::new(&cfg.token),
            cfg,
            store,
            inner: Mutex::new(Inner {
                state,
                proxies,
                ..Default::default()
            }),
            locks,
            agents,
            pending: Mutex::new(HashMap::new()),
            decisions: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            started: now,
            discovery_until,
        }))
    }

    pub fn config(&self) -> &KeeperConfig {
        &self.cfg
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn topology(&self) -> ClusterTopology {
        self.inner().state.topology.clone()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn datahost_config(&self, name: &str) -> Option<&KeeperDataHostConfig> {
        self.cfg.datahosts.iter().find(|d| d.name == name)
    }

    fn addr_of(&self, datasource: &str) -> Option<String> {
        self.cfg
            .datahosts
            .iter()
            .flat_map(|d| &d.datasources)
            .find(|d| d.name == datasource)
            .map(|d| d.addr.clone())
    }

    /// Persists `f`'s change to the state; on failure nothing changes.
    fn persist(&self, f: impl FnOnce(&mut Persisted)) -> std::io::Result<Persisted> {
        let mut inner = self.inner();
        let mut next = inner.state.clone();
        f(&mut next);
        self.store.save(&next)?;
        inner.state = next.clone();
        Ok(next)
    }

    // ----- epochs and topology never go backwards (SPEC §7) ---------------

    /// Learns the newest epoch and topology a proxy or agent (`from`)
    /// holds: every epoch up to the one reported is reserved, and a
    /// topology newer than the keeper's (its state was lost, or is older)
    /// is adopted, after which no automatic switch happens until an
    /// operator confirms the membership ([`Keeper::bootstrap`]).
    pub fn observe(&self, from: &str, epoch: u64, topology: Option<&ClusterTopology>) {
        let reported = epoch.max(topology.map_or(0, |t| t.epoch));
        let (held, held_topology) = {
            let inner = self.inner();
            (inner.state.epoch, inner.state.topology.epoch)
        };
        let newer = topology.filter(|t| t.epoch > held_topology);
        if reported <= held && newer.is_none() {
            return;
        }
        let known: Vec<(&str, Vec<&str>)> = self
            .cfg
            .datahosts
            .iter()
            .map(|d| {
                let names = d.datasources.iter().map(|s| s.name.as_str()).collect();
                (d.name.as_str(), names)
            })
            .collect();
        let adopt = newer.filter(|t| match t.fits(&known) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(from, epoch = t.epoch, error = %e, "reported topology does not fit the config; not adopted");
                false
            }
        });
        let mut adopted = false;
        let saved = self.persist(|s| {
            s.epoch = s.epoch.max(reported);
            if let Some(t) = adopt.filter(|t| t.epoch > s.topology.epoch) {
                s.topology = t.clone();
                s.membership_confirmed = false;
                adopted = true;
            }
        });
        match saved {
            Ok(state) => {
                metrics::gauge!("zerodb_keeper_epoch").set(state.epoch as f64);
                let confirmed = if state.membership_confirmed { 1.0 } else { 0.0 };
                metrics::gauge!("zerodb_keeper_membership_confirmed").set(confirmed);
                if adopted {
                    tracing::warn!(from, epoch = state.topology.epoch,
                        "adopted a newer topology than the keeper's own; no automatic switch until an operator confirms the membership (zerodb-keeper bootstrap, POST /bootstrap)");
                    self.push(&state.topology);
                } else {
                    tracing::warn!(
                        from,
                        epoch = state.epoch,
                        "epochs up to a reported one reserved"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot persist a reported epoch"),
        }
    }

    /// An operator confirms the membership after the keeper adopted a
    /// reported topology: the proxies registered now, plus `expected`
    /// (members from now on, lost until they register), are all there
    /// are. Returns the members.
    pub fn bootstrap(&self, expected: &[String]) -> std::io::Result<Vec<String>> {
        let state = self.persist(|s| {
            s.membership_confirmed = true;
            for name in expected {
                if !s.proxies.contains(name) {
                    s.proxies.push(name.clone());
                }
            }
        })?;
        let lost_since = Instant::now()
            .checked_sub(self.cfg.timings.session_timeout * 2)
            .unwrap_or_else(Instant::now);
        let mut inner = self.inner();
        for name in expected {
            inner.proxies.entry(name.clone()).or_insert(Proxy {
                last_seen: lost_since,
                conn: None,
            });
        }
        metrics::gauge!("zerodb_keeper_membership_confirmed").set(1.0);
        tracing::warn!(proxies = ?state.proxies, "membership confirmed by an operator");
        Ok(state.proxies)
    }

    /// Waits, after a start without saved state, until every agent has
    /// reported or the discovery time is over.
    pub async fn discovered(&self) {
        let Some(until) = self.discovery_until else {
            return;
        };
        loop {
            let all_heard = {
                let inner = self.inner();
                self.agents.iter().all(|(name, h)| {
                    matches!(h, AgentHandle::Local(_)) || inner.reports.contains_key(name)
                })
            };
            if all_heard || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- proxies' sessions -------------------------------------------

    /// A proxy (re)registers on connection `conn`; returns the topology.
    pub fn register(
        &self,
        name: &str,
        conn: u64,
        tx: mpsc::UnboundedSender<FromKeeper>,
    ) -> std::io::Result<ClusterTopology> {
        let known = self.inner().state.proxies.iter().any(|p| p == name);
        if !known {
            self.persist(|s| s.proxies.push(name.to_string()))?;
        }
        let mut inner = self.inner();
        let old = inner.proxies.insert(
            name.to_string(),
            Proxy {
                last_seen: Instant::now(),
                conn: Some((conn, tx)),
            },
        );
        if let Some(Proxy {
            conn: Some((old_id, _)),
            ..
        }) = old
        {
            tracing::info!(proxy = %name, old_id, conn, "proxy reconnected; the older connection is dropped");
        } else {
            tracing::info!(proxy = %name, conn, "proxy registered");
        }
        Ok(inner.state.topology.clone())
    }

    /// Records a sign of life on `conn`; `false` when that connection no
    /// longer stands for a member (it was removed, or replaced).
    pub fn heartbeat(&self, name: &str, conn: u64) -> bool {
        match self.inner().proxies.get_mut(name) {
            Some(p) if p.conn.as_ref().is_some_and(|(id, _)| *id == conn) => {
                p.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// The connection closed: the proxy stays a member until its session
    /// times out, as in ZooKeeper.
    pub fn disconnected(&self, name: &str, conn: u64) {
        if let Some(p) = self.inner().proxies.get_mut(name) {
            if p.conn.as_ref().is_some_and(|(id, _)| *id == conn) {
                p.conn = None;
            }
        }
    }

    /// The proxy leaves (it asked, or an operator removed it).
    pub fn unregister(&self, name: &str, why: &str) -> std::io::Result<bool> {
        let known = self.inner().state.proxies.iter().any(|p| p == name);
        if known {
            self.persist(|s| s.proxies.retain(|p| p != name))?;
        }
        let removed = self.inner().proxies.remove(name).is_some();
        tracing::warn!(proxy = %name, reason = %why, "proxy unregistered");
        Ok(known || removed)
    }

    fn members(&self) -> Vec<Member> {
        let timeout = self.cfg.timings.session_timeout;
        let drop_after = self.cfg.timings.drop_lost_proxy_after;
        let mut inner = self.inner();
        let now = Instant::now();
        if let Some(after) = drop_after {
            let gone: Vec<String> = inner
                .proxies
                .iter()
                .filter(|(_, p)| now.duration_since(p.last_seen) > timeout + after)
                .map(|(n, _)| n.clone())
                .collect();
            if !gone.is_empty() {
                let mut next = inner.state.clone();
                next.proxies.retain(|p| !gone.contains(p));
                match self.store.save(&next) {
                    Ok(()) => {
                        inner.state = next;
                        for n in gone {
                            tracing::warn!(proxy = %n, "lost proxy dropped (drop_lost_proxy_after)");
                            inner.proxies.remove(&n);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot persist dropping lost proxies"),
                }
            }
        }
        inner
            .proxies
            .iter()
            .map(|(n, p)| Member {
                name: n.clone(),
                lost: now.duration_since(p.last_seen) > timeout,
            })
            .collect()
    }

    fn connections(&self) -> Vec<(String, mpsc::UnboundedSender<FromKeeper>)> {
        self.inner()
            .proxies
            .iter()
            .filter_map(|(n, p)| p.conn.as_ref().map(|(_, tx)| (n.clone(), tx.clone())))
            .collect()
    }

    /// A proxy answered request `id` (a vote: 1 for down; a hold: the
    /// sessions still open).
    pub fn answered(&self, id: u64, value: u64) {
        let tx = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(value);
        }
    }

    /// Sends every connected proxy the message `make(id)` makes and waits
    /// until `deadline` for their answers (`None`: no answer in time).
    async fn ask_proxies(
        &self,
        deadline: tokio::time::Instant,
        make: impl Fn(u64) -> FromKeeper,
    ) -> BTreeMap<String, Option<u64>> {
        let mut waits = Vec::new();
        let mut answers = BTreeMap::new();
        for (name, tx) in self.connections() {
            let id = self.next_id();
            let (atx, arx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, atx);
            if tx.send(make(id)).is_err() {
                answers.insert(name, None);
                continue;
            }
            waits.push(async move {
                let a = tokio::time::timeout_at(deadline, arx)
                    .await
                    .ok()
                    .and_then(Result::ok);
                (name, a)
            });
        }
        answers.extend(futures_util::future::join_all(waits).await);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, tx| !tx.is_closed());
        answers
    }

    // ----- agents --------------------------------------------------------

    /// An agent's heartbeat: remember its report, tell it the topology and
    /// which source it should follow if it is not the active datasource.
    pub fn agent_heartbeat(&self, hb: AgentHeartbeat) -> AgentHeartbeatReply {
        self.observe(&hb.datasource, hb.report.epoch, hb.topology.as_ref());
        let mut inner = self.inner();
        inner
            .reports
            .insert(hb.datasource.clone(), (Instant::now(), hb.report));
        let topology = inner.state.topology.clone();
        let follow = topology
            .datahosts
            .iter()
            .find(|d| d.standbys.contains(&hb.datasource))
            .and_then(|d| {
                let cfg = self.datahost_config(&d.name)?;
                let (user, password) = cfg.replication_credentials();
                let fresh = self.cfg.timings.session_timeout;
                let state = inner
                    .reports
                    .get(&d.active)
                    .filter(|(at, r)| at.elapsed() < fresh && r.alive)
                    .map(|(_, r)| r.gtid_binlog_state.clone());
                Some(FollowHint {
                    source_name: d.active.clone(),
                    source: self.addr_of(&d.active)?,
                    user,
                    password,
                    source_gtid_binlog_state: state,
                })
            });
        AgentHeartbeatReply { topology, follow }
    }

    /// Runs the heartbeat of every in-process agent (datasources without an
    /// `agent` address) until `stop` changes.
    pub fn spawn_local_agents(
        self: &Arc<Self>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        for (name, handle) in &self.agents {
            let AgentHandle::Local(core) = handle else {
                continue;
            };
            let (keeper, core, name, mut stop) =
                (self.clone(), core.clone(), name.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    let report = core.report().await;
                    let reply = keeper.agent_heartbeat(AgentHeartbeat {
                        datasource: name.clone(),
                        listen: "in-process".into(),
                        report: report.clone(),
                        topology: core.topology(),
                    });
                    core.on_heartbeat_reply(&reply, &report).await;
                }
            });
        }
    }

    /// Reports of the standbys, and of the source when the strict binlog
    /// check needs it (a paused source's agent would make everyone wait
    /// out its timeout for nothing).
    async fn gather_reports(&self, source: &str, standbys: &[String]) -> Reports {
        let t = self.cfg.timings.agent_timeout;
        let strict =
            self.cfg.policy.need_binlog_check && self.cfg.policy.safe_binlog_delay.is_some();
        let ask = |name: &str| {
            let handle = self.agents.get(name);
            async move {
                match handle {
                    Some(h) => h.report(&self.client, t).await,
                    None => None,
                }
            }
        };
        let src = async {
            match strict {
                true => ask(source).await,
                false => None,
            }
        };
        let others = futures_util::future::join_all(standbys.iter().map(|s| ask(s)));
        let (source_report, reports) = tokio::join!(src, others);
        Reports {
            source: source_report,
            standbys: standbys.iter().cloned().zip(reports).collect(),
        }
    }

    async fn order(&self, datasource: &str, order: Order, timeout: Duration) -> Result<(), String> {
        match self.agents.get(datasource) {
            Some(h) => h
                .order(&self.client, &order, timeout)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!("no agent for {datasource}")),
        }
    }

    // ----- switches ------------------------------------------------------

    async fn gather_votes(&self, datahost: &str, source: &str) -> BTreeMap<String, Vote> {
        let deadline = tokio::time::Instant::now() + self.cfg.timings.vote_timeout;
        let answers = self
            .ask_proxies(deadline, |id| FromKeeper::VoteRequest {
                id,
                datahost: datahost.to_string(),
                datasource: source.to_string(),
            })
            .await;
        let mut votes: BTreeMap<String, Vote> = answers
            .into_iter()
            .map(|(name, a)| {
                let v = match a {
                    Some(1) => Vote::Down,
                    Some(_) => Vote::Up,
                    None => Vote::NoAnswer,
                };
                (name, v)
            })
            .collect();
        // Members that are not connected cannot answer.
        let names: Vec<String> = self.inner().proxies.keys().cloned().collect();
        for m in names {
            votes.entry(m).or_insert(Vote::NoAnswer);
        }
        votes
    }

    /// Decides a switch request (SPEC §3) and carries it out if approved.
    pub async fn request_switch(self: &Arc<Self>, request: Request) -> SwitchAnswer {
        let Some(lock) = self.locks.get(&request.datahost) else {
            let rejection = Rejection::UnknownTarget {
                target: request.datahost.clone(),
            };
            return SwitchAnswer::Rejected { rejection };
        };
        let requested_at_unix_ms = unix_ms();
        let _serial = lock.lock().await;
        let started = Instant::now();
        let (active, standbys, maintenance, cooldown_left, membership_confirmed) = {
            let inner = self.inner();
            let dh = inner.state.topology.datahost(&request.datahost).cloned();
            let (active, standbys) = dh.map(|d| (d.active, d.standbys)).unwrap_or_default();
            let cooldown_left = inner.last_switch.get(&request.datahost).map(|at| {
                self.cfg
                    .timings
                    .cooldown
                    .saturating_sub(at.elapsed())
                    .as_millis() as u64
            });
            let maintenance = inner.state.maintenance.contains(&request.datahost);
            let confirmed = inner.state.membership_confirmed;
            (active, standbys, maintenance, cooldown_left, confirmed)
        };
        let members = self.members();
        let mut phases = BTreeMap::new();
        let mut votes = None;
        let mut reports = None;
        let mut source_addrs: Vec<String> = self.addr_of(&active).into_iter().collect();
        let decision = loop {
            let step = decide(&Input {
                policy: &self.cfg.policy,
                request: &request,
                active: &active,
                source_addrs: &source_addrs,
                standbys: &standbys,
                maintenance,
                membership_confirmed,
                cooldown_left_ms: cooldown_left,
                members: &members,
                votes: votes.as_ref(),
                reports: reports.as_ref(),
            });
            let t = Instant::now();
            match step {
                Step::Need(Need::Votes) => {
                    // The reports will be needed if the vote passes: fetch
                    // them meanwhile.
                    let (v, r) = tokio::join!(
                        self.gather_votes(&request.datahost, &request.source),
                        self.gather_reports(&request.source, &standbys)
                    );
                    source_addrs = same_server(&source_addrs, &r).await;
                    votes = Some(v);
                    reports = Some(r);
                    phase(&mut phases, "votes_and_reports", t);
                }
                Step::Need(Need::Reports) => {
                    let r = self.gather_reports(&request.source, &standbys).await;
                    source_addrs = same_server(&source_addrs, &r).await;
                    reports = Some(r);
                    phase(&mut phases, "reports", t);
                }
                Step::Done(d) => break d,
            }
        };
        let (decision, answer, epoch) = match decision {
            Decision::Stale => {
                let topology = self.topology();
                (Decision::Stale, SwitchAnswer::Stale { topology }, None)
            }
            Decision::Reject { rejection } => (
                Decision::Reject {
                    rejection: rejection.clone(),
                },
                SwitchAnswer::Rejected { rejection },
                None,
            ),
            Decision::Approve { target } => {
                let planned = matches!(request.kind, RequestKind::Switchover { .. });
                match self
                    .carry_out(&request, &target, planned, &standbys, &mut phases)
                    .await
                {
                    Ok(topology) => (
                        Decision::Approve { target },
                        SwitchAnswer::Switched {
                            topology: topology.clone(),
                        },
                        Some(topology.epoch),
                    ),
                    Err(error) => {
                        let rejection = Rejection::PromotionFailed { target, error };
                        (
                            Decision::Reject {
                                rejection: rejection.clone(),
                            },
                            SwitchAnswer::Rejected { rejection },
                            None,
                        )
                    }
                }
            }
        };
        let result = match &decision {
            Decision::Stale => "stale",
            Decision::Approve { .. } => "approved",
            Decision::Reject { rejection } => rejection.kind(),
        };
        metrics::counter!("zerodb_keeper_decisions_total", "datahost" => request.datahost.clone(), "result" => result)
            .increment(1);
        metrics::histogram!("zerodb_keeper_decision_seconds", "result" => result)
            .record(started.elapsed().as_secs_f64());
        match &decision {
            Decision::Reject { rejection } => {
                tracing::warn!(datahost = %request.datahost, source = %request.source, reason = ?rejection, "switch rejected")
            }
            Decision::Approve { target } => {
                tracing::warn!(datahost = %request.datahost, from = %request.source, to = %target, epoch, ms = started.elapsed().as_millis() as u64, "switch approved")
            }
            Decision::Stale => {}
        }
        if !matches!(decision, Decision::Stale) {
            self.record(DecisionRecord {
                id: self.next_id(),
                requested_at_unix_ms,
                at_unix_ms: unix_ms(),
                request,
                active,
                members,
                votes,
                reports,
                decision,
                epoch,
                phases_ms: phases,
            });
        }
        answer
    }

    /// SPEC §3 step 7: reserve an epoch (persisted), promote the target,
    /// fence the source, persist the topology, then push it.
    async fn carry_out(
        self: &Arc<Self>,
        request: &Request,
        target: &str,
        planned: bool,
        standbys: &[String],
        phases: &mut BTreeMap<&'static str, u64>,
    ) -> Result<ClusterTopology, String> {
        let t = &self.cfg.timings;
        let epoch = self
            .persist(|s| s.epoch += 1)
            .map_err(|e| format!("cannot persist the epoch: {e}"))?
            .epoch;
        metrics::gauge!("zerodb_keeper_epoch").set(epoch as f64);
        let source = request.source.as_str();
        let order = move |kind| Order { epoch, kind };
        let started = Instant::now();
        if planned {
            // Hold new statements in every proxy and let open transactions
            // finish (up to the grace period); then stop writes on the old
            // source, and let the target catch up with everything it wrote.
            let grace = t.switchover_grace;
            let max = grace + t.catch_up_timeout + t.promote_timeout + t.agent_timeout * 4;
            let datahost = request.datahost.clone();
            let held = self
                .ask_proxies(
                    tokio::time::Instant::now() + grace + t.agent_timeout,
                    |id| FromKeeper::Hold {
                        id,
                        datahost: datahost.clone(),
                        grace_ms: grace.as_millis() as u64,
                        max_ms: max.as_millis() as u64,
                    },
                )
                .await;
            phase(phases, "hold", started);
            let open: u64 = held.values().map(|a| a.unwrap_or(0)).sum();
            if open > 0 {
                tracing::warn!(
                    open,
                    "sessions still open after the grace period: they lose their transaction"
                );
            }
            let fenced = self
                .order(source, order(OrderKind::Fence), t.agent_timeout)
                .await
                .map_err(|e| format!("cannot fence the source {source}: {e}"));
            if let Err(e) = fenced {
                self.release(&request.datahost);
                return Err(e);
            }
            let end = self
                .agents
                .get(source)
                .map(|h| h.report(&self.client, t.agent_timeout));
            let end = match end {
                Some(f) => f.await.and_then(|r| r.binlog_end),
                None => None,
            };
            if let Some(position) = end {
                let timeout_ms = t.catch_up_timeout.as_millis() as u64;
                let caught_up = self
                    .order(
                        target,
                        order(OrderKind::CatchUp {
                            position,
                            timeout_ms,
                        }),
                        t.catch_up_timeout + t.agent_timeout,
                    )
                    .await
                    .map_err(|e| format!("{target} did not catch up: {e}"));
                let forced = matches!(request.kind, RequestKind::Switchover { force: true, .. });
                match caught_up {
                    Err(e) if forced => {
                        tracing::warn!(error = %e, "forced switchover: promoting without catching up");
                    }
                    Err(e) => {
                        self.undo_fence(source, epoch).await;
                        self.release(&request.datahost);
                        return Err(e);
                    }
                    Ok(()) => {}
                }
            }
            phase(phases, "fence_and_catch_up", started);
        }
        let p = Instant::now();
        let promoted = self
            .order(target, order(OrderKind::Promote), t.promote_timeout)
            .await;
        if let Err(e) = promoted {
            if planned {
                self.undo_fence(source, epoch).await;
                self.release(&request.datahost);
            }
            return Err(e);
        }
        phase(phases, "promote", p);
        if !planned {
            // Best effort, in the background: a paused or dead source does
            // not answer, and its agent fences it when it sees the epoch.
            let me = self.clone();
            let source = source.to_string();
            let timeout = t.agent_timeout;
            tokio::spawn(async move {
                if let Err(e) = me.order(&source, order(OrderKind::Fence), timeout).await {
                    tracing::warn!(datasource = %source, error = %e, "source not fenced now; its agent fences it when it sees the new epoch");
                }
            });
        }
        let p = Instant::now();
        let dh_name = request.datahost.clone();
        let new_standbys: Vec<String> = std::iter::once(source.to_string())
            .chain(standbys.iter().filter(|s| *s != target).cloned())
            .collect();
        let target_name = target.to_string();
        let state = self
            .persist(|s| {
                s.topology.epoch = epoch;
                if let Some(d) = s.topology.datahosts.iter_mut().find(|d| d.name == dh_name) {
                    d.active = target_name.clone();
                    d.standbys = new_standbys.clone();
                }
            })
            .map_err(|e| format!("cannot persist the topology: {e}"))?;
        self.inner()
            .last_switch
            .insert(request.datahost.clone(), Instant::now());
        self.push(&state.topology);
        phase(phases, "publish", p);
        // Re-point the surviving standbys to the new source.
        if let (Some(cfg), Some(addr)) = (
            self.datahost_config(&request.datahost),
            self.addr_of(target),
        ) {
            let (user, password) = cfg.replication_credentials();
            for s in standbys.iter().filter(|s| *s != target) {
                let me = self.clone();
                let (s, kind) = (
                    s.clone(),
                    OrderKind::Follow {
                        source: addr.clone(),
                        user: user.clone(),
                        password: password.clone(),
                    },
                );
                let timeout = t.agent_timeout * 4;
                tokio::spawn(async move {
                    if let Err(e) = me.order(&s, Order { epoch, kind }, timeout).await {
                        tracing::warn!(datasource = %s, error = %e, "standby not re-pointed; it rejoins from its agent's heartbeat");
                    }
                });
            }
        }
        Ok(state.topology)
    }

    /// A planned switchover stopped half way: the proxies serve the
    /// dataHost as before.
    fn release(&self, datahost: &str) {
        for (_, tx) in self.connections() {
            let _ = tx.send(FromKeeper::Release {
                datahost: datahost.to_string(),
            });
        }
    }

    /// Makes a source fenced for a switchover that then failed writable
    /// again (a promotion of a server that replicates from nobody only
    /// clears `read_only`).
    async fn undo_fence(&self, source: &str, epoch: u64) {
        let order = Order {
            epoch,
            kind: OrderKind::Promote,
        };
        if let Err(e) = self
            .order(source, order, self.cfg.timings.promote_timeout)
            .await
        {
            tracing::error!(datasource = %source, error = %e, "the switchover failed and the source stays read-only: an operator must clear read_only");
        }
    }

    /// Sends `topology` to every connected proxy.
    fn push(&self, topology: &ClusterTopology) {
        for (name, tx) in self.connections() {
            if tx
                .send(FromKeeper::Topology {
                    topology: topology.clone(),
                })
                .is_err()
            {
                tracing::debug!(proxy = %name, "push to a closing connection");
            }
        }
    }

    fn record(&self, r: DecisionRecord) {
        if let Ok(v) = serde_json::to_value(&r) {
            if let Err(e) = self.store.append_decision(&v) {
                tracing::warn!(error = %e, "cannot append to decisions.jsonl");
            }
        }
        let mut d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= 500 {
            d.pop_front();
        }
        d.push_back(r);
    }

    pub fn decisions(&self) -> Vec<DecisionRecord> {
        self.decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Maintenance on or off for a dataHost (persisted).
    pub fn set_maintenance(&self, datahost: &str, on: bool) -> Result<(), String> {
        if self.datahost_config(datahost).is_none() {
            return Err(format!("no dataHost named {datahost}"));
        }
        self.persist(|s| {
            s.maintenance.retain(|d| d != datahost);
            if on {
                s.maintenance.push(datahost.to_string());
            }
        })
        .map_err(|e| e.to_string())?;
        tracing::warn!(datahost, on, "maintenance");
        Ok(())
    }

    /// A snapshot for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let members = self.members();
        let inner = self.inner();
        let proxies: Vec<_> = members
            .iter()
            .map(|m| {
                let p = inner.proxies.get(&m.name);
                serde_json::json!({
                    "name": m.name,
                    "lost": m.lost,
                    "connected": p.is_some_and(|p| p.conn.is_some()),
                    "last_seen_ms_ago": p.map(|p| p.last_seen.elapsed().as_millis() as u64),
                })
            })
            .collect();
        let agents: BTreeMap<_, _> = inner
            .reports
            .iter()
            .map(|(n, (at, r))| {
                (
                    n.clone(),
                    serde_json::json!({"age_ms": at.elapsed().as_millis() as u64, "report": r}),
                )
            })
            .collect();
        let maintenance: BTreeSet<_> = inner.state.maintenance.iter().cloned().collect();
        serde_json::json!({
            "epoch": inner.state.epoch,
            "membership_confirmed": inner.state.membership_confirmed,
            "topology": inner.state.topology,
            "maintenance": maintenance,
            "proxies": proxies,
            "agents": agents,
            "uptime_s": self.started.elapsed().as_secs(),
        })
    }
}

/// `addrs` (the source's configured address) and every address a
/// standby replicates from that names the same server by another name
/// (`localhost` for `127.0.0.1`, a host name for its IP): both resolve to
/// a common socket address. Only names that differ are looked up.
async fn same_server(addrs: &[String], reports: &Reports) -> Vec<String> {
    let resolve = |a: String| async move {
        let found = tokio::time::timeout(Duration::from_millis(500), tokio::net::lookup_host(a));
        match found.await {
            Ok(Ok(it)) => it.collect::<Vec<_>>(),
            _ => Vec::new(),
        }
    };
    let mut out = addrs.to_vec();
    let Some(configured) = addrs.first() else {
        return out;
    };
    let others: BTreeSet<&String> = reports
        .standbys
        .values()
        .flatten()
        .filter_map(|r| r.replica.as_ref().map(|s| &s.source))
        .filter(|s| !addrs.contains(s))
        .collect();
    if others.is_empty() {
        return out;
    }
    let mine = resolve(configured.clone()).await;
    for other in others {
        let theirs = resolve(other.clone()).await;
        if theirs.iter().any(|a| mine.contains(a)) {
            out.push(other.clone());
        }
    }
    out
}

fn phase(phases: &mut BTreeMap<&'static str, u64>, name: &'static str, since: Instant) {
    let d = since.elapsed();
    metrics::histogram!("zerodb_keeper_phase_seconds", "phase" => name).record(d.as_secs_f64());
    phases.insert(name, d.as_millis() as u64);
}
