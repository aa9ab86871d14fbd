//! The keeper: its persisted state, the proxies' sessions, the agents'
//! reports, epochs that never go backwards, maintenance and status.
//! Switch requests are decided and carried out in `request.rs`.

use crate::agents::{AgentSet, Agents, LeaderOnly};
use crate::lead::{Leadership, Role};
use crate::members::{Answer, Members};
use crate::record::{unix_ms, DecisionLog, DecisionRecord};
use crate::store::{Change, FileStore, Persisted, Store, StoreError, SwitchIntent};
use crate::switch::{Background, Follow, Phase, Plan, Switch};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zerodb_agent::AgentCore;
use zerodb_core::config::{KeeperConfig, KeeperDataHostConfig, StoreKind};
use zerodb_core::control::{
    AgentHeartbeat, AgentHeartbeatReply, AgentReport, ClusterTopology, DataHostState, FollowHint,
    FromKeeper,
};
use zerodb_core::decision::Member;

/// The keeper could not start, or refused an operator's request.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// Its state could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The persisted topology names a dataHost the config does not.
    #[error("persisted topology names dataHost `{0}`, which the config does not")]
    Mismatch(String),
    /// The persisted topology's active datasource of a dataHost is not in
    /// the config: every proxy would refuse the topology.
    #[error("persisted topology has `{active}` active in dataHost `{datahost}`, which the config does not list; add it back, or move the saved state away to start from the config (docs/failover.md)")]
    UnknownActive {
        /// The dataHost.
        datahost: String,
        /// Its active datasource in the saved state.
        active: String,
    },
    /// The config has no such dataHost.
    #[error("no dataHost named {0}")]
    UnknownDataHost(String),
    /// A proxy of this name has a live session: names are unique.
    #[error("a proxy named `{0}` is connected and alive; names must be unique (its session must close or expire first)")]
    NameTaken(String),
    /// The config asks for a store this build does not have.
    #[error("`store: {0}` needs a zerodb-keeper built with the `{0}` feature")]
    StoreNotBuilt(&'static str),
    /// The store could not be reached or set up.
    #[error("{0}")]
    StoreSetup(String),
}

/// A [`Store`] whose newest state the keeper can read at any time without
/// I/O; updates are serialised, so the cached state only moves forward.
#[derive(Debug)]
struct CachedStore {
    inner: Arc<dyn Store>,
    /// A keeper that may not act writes nothing.
    lead: Arc<Leadership>,
    cache: Mutex<Persisted>,
    serial: tokio::sync::Mutex<()>,
}

impl CachedStore {
    fn cached(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the newest state from the store into the cache (a keeper
    /// taking the lead: another wrote it meanwhile).
    async fn reload(&self) -> Result<Option<Persisted>, StoreError> {
        let _serial = self.serial.lock().await;
        let loaded = self.inner.load().await?;
        *self.cached() = loaded.clone().unwrap_or_default();
        Ok(loaded)
    }
}

#[async_trait::async_trait]
impl Store for CachedStore {
    async fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(Some(self.cached().clone()))
    }

    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError> {
        let _serial = self.serial.lock().await;
        if !self.lead.acting() {
            return Err(StoreError::NotLeader);
        }
        let next = self.inner.update(change).await?;
        *self.cached() = next.clone();
        Ok(next)
    }

    async fn append_decision(&self, decision: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.append_decision(decision).await
    }
}

/// The keeper of one cluster.
pub struct Keeper {
    pub(crate) cfg: KeeperConfig,
    store: CachedStore,
    pub(crate) members: Members,
    /// Orders go out only while this keeper may act.
    pub(crate) agents: Arc<dyn Agents>,
    /// Whether this keeper decides (always, on the file store).
    pub(crate) lead: Arc<Leadership>,
    /// In-process agents (datasources without one of their own).
    local_agents: Vec<(String, Arc<AgentCore>)>,
    /// Last heartbeat report of each datasource's agent.
    reports: Mutex<HashMap<String, (Instant, AgentReport)>>,
    /// When each dataHost last switched (anti-flapping).
    pub(crate) last_switch: Mutex<HashMap<String, tokio::time::Instant>>,
    /// When a switch of each dataHost last failed (`switch_backoff`).
    pub(crate) failed_switch: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Serialises decisions per dataHost.
    pub(crate) locks: HashMap<String, tokio::sync::Mutex<()>>,
    /// Serialises switches of all dataHosts, from the epoch's reservation
    /// to the topology's persistence: epochs are global, and a switch's
    /// topology must carry the newest one.
    pub(crate) switching: tokio::sync::Mutex<()>,
    pub(crate) decisions: DecisionLog,
    /// Orders still running in the background (fences, re-pointing).
    pub(crate) background: Background,
    /// Fault injection: every switch stops after this phase, as a crash.
    stop_after: Mutex<Option<Phase>>,
    /// Fault injection: the process pauses (SIGSTOP) after this phase.
    pause_after: Mutex<Option<Phase>>,
    /// Fault injection: and the process aborts there.
    #[cfg_attr(not(feature = "fault-points"), allow(dead_code))]
    abort_at_stop: std::sync::atomic::AtomicBool,
    started: Instant,
    /// Started without saved state: until this instant (or until every
    /// agent has reported), registrations wait, so that a topology an
    /// agent holds is adopted before any proxy is given the config's.
    discovery_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").finish_non_exhaustive()
    }
}

/// Locks `m`, whatever a panicking holder left.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn initial_topology(cfg: &KeeperConfig) -> ClusterTopology {
    let datahosts = cfg
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
        .collect();
    ClusterTopology {
        epoch: 1,
        term: 0,
        datahosts,
    }
}

/// Whether saved state still fits the config: every dataHost it names is
/// configured, with its active datasource among the configured ones.
fn saved_state_fits(state: &Persisted, cfg: &KeeperConfig) -> Result<(), KeeperError> {
    for dh in &state.topology.datahosts {
        let Some(c) = cfg.datahosts.iter().find(|d| d.name == dh.name) else {
            return Err(KeeperError::Mismatch(dh.name.clone()));
        };
        if !c.datasources.iter().any(|s| s.name == dh.active) {
            return Err(KeeperError::UnknownActive {
                datahost: dh.name.clone(),
                active: dh.active.clone(),
            });
        }
    }
    Ok(())
}

/// The cooldown each dataHost still has after a restart, from the
/// persisted time of its last switch (wall clock: a keeper restarted on
/// another machine keeps it too).
fn cooldowns_left(state: &Persisted, cooldown: Duration) -> HashMap<String, tokio::time::Instant> {
    let now_ms = unix_ms();
    state
        .last_switch_unix_ms
        .iter()
        .filter_map(|(dh, &at)| {
            let ago = Duration::from_millis(now_ms.saturating_sub(at));
            // Before this machine's monotonic clock began (it rebooted):
            // the whole cooldown again, rather than none.
            let now = tokio::time::Instant::now();
            let at = now.checked_sub(ago).unwrap_or(now);
            (ago < cooldown).then(|| (dh.clone(), at))
        })
        .collect()
}

/// Takes the active datasource of every dataHost `reported` names, and
/// its epoch, into `topology`; dataHosts it does not name (a proxy reports
/// only those it serves) stay as they are, and each dataHost's standbys
/// are the other datasources of the keeper's own config.
fn adopt_topology(
    topology: &mut ClusterTopology,
    reported: &ClusterTopology,
    config: &[(String, Vec<String>)],
) {
    for r in &reported.datahosts {
        let Some((_, sources)) = config.iter().find(|(n, _)| *n == r.name) else {
            continue;
        };
        let entry = DataHostState::new(&r.name, &r.active, sources.iter().map(String::as_str));
        match topology.datahosts.iter_mut().find(|d| d.name == r.name) {
            Some(d) => *d = entry,
            None => topology.datahosts.push(entry),
        }
    }
    topology.epoch = reported.epoch;
}

impl Keeper {
    /// Opens the keeper's file store in `cfg.state_dir` (creating the state
    /// on a first start) and its agents: over HTTP where the config names
    /// one, in-process over SQL where it does not.
    pub async fn open(cfg: KeeperConfig) -> Result<Arc<Self>, KeeperError> {
        if cfg.store != StoreKind::File {
            return Err(KeeperError::StoreSetup(
                "Keeper::open runs on the file store; use zerodb_keeper::start".into(),
            ));
        }
        let store = Arc::new(FileStore::open(&cfg.state_dir)?);
        let agents = AgentSet::from_config(&cfg);
        let local = agents.local();
        Self::with_parts(cfg, store, Arc::new(agents), local).await
    }

    /// The keeper over any store and agents (tests use fakes). `local` are
    /// the in-process agents whose heartbeats the keeper runs itself.
    pub async fn with_parts(
        cfg: KeeperConfig,
        store: Arc<dyn Store>,
        agents: Arc<dyn Agents>,
        local: Vec<(String, Arc<AgentCore>)>,
    ) -> Result<Arc<Self>, KeeperError> {
        Self::build(cfg, store, agents, local, Arc::new(Leadership::sole())).await
    }

    /// The keeper over any store and agents, deciding only as `lead`
    /// allows. A sole keeper creates or loads its state and ends an
    /// interrupted switch now; one of several does that when it takes the
    /// lead ([`Keeper::take_over`]).
    pub async fn build(
        cfg: KeeperConfig,
        store: Arc<dyn Store>,
        agents: Arc<dyn Agents>,
        local: Vec<(String, Arc<AgentCore>)>,
        lead: Arc<Leadership>,
    ) -> Result<Arc<Self>, KeeperError> {
        let sole = lead.role() == Role::Sole;
        let saved = if sole {
            store.load().await?
        } else {
            // Read when it takes the lead; until then it knows nothing.
            Some(Persisted::default())
        };
        let discovery_until = saved
            .is_none()
            .then(|| Instant::now() + cfg.timings.session_timeout);
        let state = match saved {
            Some(s) => {
                saved_state_fits(&s, &cfg)?;
                tracing::info!(
                    epoch = s.epoch,
                    proxies = s.proxies.len(),
                    "keeper state loaded"
                );
                s
            }
            None => {
                let initial = initial_topology(&cfg);
                let s = store
                    .update(&|s: &mut Persisted| {
                        s.epoch = 1;
                        s.topology = initial.clone();
                        s.membership_confirmed = true;
                    })
                    .await?;
                tracing::info!(
                    "keeper state created at epoch 1, from the config unless a proxy or agent reports a newer one"
                );
                s
            }
        };
        // Proxies registered before a restart are members still: they get
        // one session timeout to reconnect before they count as lost.
        let members = Members::new(cfg.timings.session_timeout, &state.proxies);
        let locks = cfg
            .datahosts
            .iter()
            .map(|d| (d.name.clone(), tokio::sync::Mutex::new(())))
            .collect();
        metrics::gauge!("zerodb_keeper_epoch").set(state.epoch as f64);
        let last_switch = cooldowns_left(&state, cfg.timings.cooldown);
        let interrupted = state.switch.clone().filter(|_| sole);
        let agents: Arc<dyn Agents> = if sole {
            agents
        } else {
            Arc::new(LeaderOnly::new(agents, lead.clone()))
        };
        let keeper = Arc::new(Self {
            cfg,
            store: CachedStore {
                inner: store,
                lead: lead.clone(),
                cache: Mutex::new(state),
                serial: tokio::sync::Mutex::new(()),
            },
            members,
            agents,
            lead,
            local_agents: local,
            reports: Mutex::new(HashMap::new()),
            last_switch: Mutex::new(last_switch),
            failed_switch: Mutex::new(HashMap::new()),
            locks,
            switching: tokio::sync::Mutex::new(()),
            decisions: DecisionLog::default(),
            background: Background::default(),
            stop_after: Mutex::new(None),
            pause_after: Mutex::new(None),
            abort_at_stop: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
            discovery_until: Mutex::new(discovery_until),
        });
        if let Some(intent) = interrupted {
            keeper.recover(&intent, intent.epoch).await;
        }
        Ok(keeper)
    }

    /// Whether this keeper leads, and how (`/status`, `/leader`).
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.lead
    }

    /// This keeper won the lead (keepers on etcd): it reads the newest
    /// state, reserves a fresh epoch and a new term in one write (which
    /// checks its lease), rolls back its predecessor's unfinished switch
    /// under that epoch, and from then on hands out the result. Returns
    /// its term. On error it must not lead.
    pub async fn take_over(&self) -> Result<u64, KeeperError> {
        let saved = self.store.reload().await?;
        if let Some(s) = &saved {
            saved_state_fits(s, &self.cfg)?;
        } else {
            // etcd's data is gone (or this is the first start): the
            // agents' and proxies' reports come first.
            *lock(&self.discovery_until) = Some(Instant::now() + self.cfg.timings.session_timeout);
        }
        lock(&self.reports).clear();
        let initial = initial_topology(&self.cfg);
        let state = self
            .persist(move |s| {
                // Decided on the state the write applies to: a topology a
                // proxy reported meanwhile is never overwritten.
                let fresh = s.epoch == 0 && s.topology.datahosts.is_empty();
                if fresh {
                    s.topology = initial.clone();
                    s.membership_confirmed = true;
                }
                s.term = if fresh {
                    // etcd was empty: terms handed out before are unknown.
                    // Seeded from the clock, the new one is above them
                    // (each election adds one); a reported one still
                    // higher raises it again ([`Keeper::observe`]).
                    (unix_ms() / 1000).max(s.term + 1)
                } else {
                    s.term + 1
                };
                s.epoch += 1;
                s.topology.epoch = s.epoch;
                s.topology.term = s.term;
            })
            .await?;
        // From now on only orders under this term go out: a switch this
        // keeper began under an earlier leadership gives no more.
        self.lead.lead_under(state.term);
        self.members.reset(&state.proxies);
        *lock(&self.last_switch) = cooldowns_left(&state, self.cfg.timings.cooldown);
        lock(&self.failed_switch).clear();
        metrics::gauge!("zerodb_keeper_epoch").set(state.epoch as f64);
        metrics::gauge!("zerodb_keeper_term").set(state.term as f64);
        tracing::warn!(term = state.term, epoch = state.epoch, "taking the lead");
        if let Some(intent) = state.switch.clone() {
            self.recover(&intent, state.epoch).await;
        }
        Ok(state.term)
    }

    /// This keeper lost the lead: its proxies' sessions end (they find the
    /// leader), and it forgets who was connected.
    pub fn step_down(&self) {
        self.members.reset(&[]);
        tracing::warn!("no longer leading");
    }

    /// Rolls back the switch a previous run or leader began and did not
    /// end ([`Switch::recover`]), giving its orders under `epoch`.
    async fn recover(&self, intent: &SwitchIntent, epoch: u64) {
        let standbys = self
            .topology()
            .datahost(&intent.datahost)
            .map(|d| d.standbys.clone())
            .unwrap_or_default();
        let plan = Plan {
            datahost: intent.datahost.clone(),
            source: intent.source.clone(),
            target: intent.target.clone(),
            planned: intent.planned,
            force: false,
            standbys,
            follow: self.follow(&intent.datahost, &intent.target),
            back: self.follow(&intent.datahost, &intent.source),
        };
        let mut switch = Switch {
            plan: &plan,
            agents: self.agents.clone(),
            proxies: &self.members,
            store: &self.store,
            term: self.term(),
            timings: &self.cfg.timings,
            background: &self.background,
            stop_after: None,
            pause_after: None,
            phases_ms: BTreeMap::new(),
        };
        match switch.recover(epoch).await {
            Ok(state) => {
                let active = state
                    .topology
                    .datahost(&intent.datahost)
                    .map(|d| d.active.clone());
                tracing::warn!(datahost = %intent.datahost, active = ?active, epoch = state.topology.epoch, "interrupted switch ended");
            }
            Err(e) => tracing::error!(error = %e, "cannot end the interrupted switch"),
        }
    }

    /// How the other standbys of `datahost` follow `target` once it is
    /// promoted: its address and the replication login.
    pub(crate) fn follow(&self, datahost: &str, target: &str) -> Option<Follow> {
        let cfg = self.datahost_config(datahost)?;
        let (user, password) = cfg.replication_credentials();
        Some(Follow {
            addr: self.addr_of(target)?,
            user,
            password,
        })
    }

    /// Fault injection: from now on every switch stops right after
    /// `phase`, as if the keeper crashed there (nothing is compensated).
    #[cfg(any(test, feature = "fault-points"))]
    pub fn stop_switches_after(&self, phase: Option<Phase>) {
        *lock(&self.stop_after) = phase;
    }

    /// Fault injection: the process aborts right after `phase` of the next
    /// switch, a crash at a named point.
    #[cfg(feature = "fault-points")]
    pub fn abort_after(&self, phase: Phase) {
        tracing::warn!(
            ?phase,
            "fault point armed: the keeper aborts after this phase of a switch"
        );
        self.abort_at_stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_switches_after(Some(phase));
    }

    /// Fault injection: the process pauses itself (SIGSTOP) right after
    /// `phase` of every switch, as a keeper frozen by its machine; it goes
    /// on when continued.
    #[cfg(feature = "fault-points")]
    pub fn pause_after(&self, phase: Phase) {
        tracing::warn!(
            ?phase,
            "fault point armed: the keeper pauses after this phase of a switch"
        );
        *lock(&self.pause_after) = Some(phase);
    }

    pub(crate) fn paused_after(&self) -> Option<Phase> {
        *lock(&self.pause_after)
    }

    pub(crate) fn stop_after(&self) -> Option<Phase> {
        *lock(&self.stop_after)
    }

    /// A switch stopped at a fault point: with `fault-points` armed by
    /// [`Keeper::abort_after`], the process aborts now.
    pub(crate) fn stopped_at(&self, phase: Phase) {
        #[cfg(feature = "fault-points")]
        if self.abort_at_stop.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::error!(?phase, "fault point: aborting");
            std::process::abort();
        }
        tracing::warn!(?phase, "switch stopped at a fault point");
    }

    /// The config it runs with.
    pub fn config(&self) -> &KeeperConfig {
        &self.cfg
    }

    /// The persisted state now.
    pub fn state(&self) -> Persisted {
        self.store.cached().clone()
    }

    /// The term this keeper leads under (0: a sole keeper on the file
    /// store), which every order and pushed topology carries.
    pub fn term(&self) -> u64 {
        self.store.cached().term
    }

    /// The topology in force.
    pub fn topology(&self) -> ClusterTopology {
        self.store.cached().topology.clone()
    }

    /// Where switches persist.
    pub(crate) fn store(&self) -> &dyn Store {
        &self.store
    }

    /// A fresh id for a proxy's connection.
    pub fn next_id(&self) -> u64 {
        self.members.next_id()
    }

    pub(crate) fn datahost_config(&self, name: &str) -> Option<&KeeperDataHostConfig> {
        self.cfg.datahosts.iter().find(|d| d.name == name)
    }

    pub(crate) fn addr_of(&self, datasource: &str) -> Option<String> {
        self.cfg
            .datahosts
            .iter()
            .flat_map(|d| &d.datasources)
            .find(|d| d.name == datasource)
            .map(|d| d.addr.clone())
    }

    /// Persists `change` to the state; on failure nothing changes.
    async fn persist(
        &self,
        change: impl Fn(&mut Persisted) + Send + Sync,
    ) -> Result<Persisted, StoreError> {
        self.store.update(&change).await
    }

    // ----- epochs and topology never go backwards (SPEC §7) ---------------

    /// Learns the newest epoch and topology a proxy or agent (`from`)
    /// holds: every epoch up to the one reported is reserved, and a
    /// topology newer than the keeper's (its state was lost, or is older)
    /// is adopted, after which no automatic switch happens until an
    /// operator confirms the membership ([`Keeper::bootstrap`]).
    pub async fn observe(
        &self,
        from: &str,
        epoch: u64,
        term: u64,
        topology: Option<&ClusterTopology>,
    ) {
        if !self.lead.serving() {
            return; // the leader learns it; a follower writes nothing
        }
        let reported = epoch.max(topology.map_or(0, |t| t.epoch));
        let reported_term = term.max(topology.map_or(0, |t| t.term));
        let (held, held_topology, held_term) = {
            let s = self.store.cached();
            (s.epoch, s.topology.epoch, s.term)
        };
        let newer = topology.filter(|t| t.epoch > held_topology);
        let newer_term = reported_term > held_term;
        if reported <= held && newer.is_none() && !newer_term {
            return;
        }
        let adopt = newer.and_then(|t| self.adoptable(from, t));
        let config = self.sources_by_datahost();
        // A new term must not come in the middle of a switch, whose
        // orders carry the old one.
        let _no_switch = if newer_term {
            Some(self.switching.lock().await)
        } else {
            None
        };
        let saved = self
            .persist(move |s| {
                s.epoch = s.epoch.max(reported);
                if let Some(t) = adopt.as_ref().filter(|t| t.epoch > s.topology.epoch) {
                    adopt_topology(&mut s.topology, t, &config);
                    s.membership_confirmed = false;
                }
                if reported_term > s.term {
                    // A term this keeper never handed out (etcd's data was
                    // lost): it leads under a newer one, and a fresh epoch.
                    s.term = reported_term.saturating_add(1);
                    s.epoch += 1;
                    s.topology.epoch = s.epoch;
                }
                s.topology.term = s.topology.term.max(s.term);
            })
            .await;
        match saved {
            Ok(state) => {
                metrics::gauge!("zerodb_keeper_epoch").set(state.epoch as f64);
                let confirmed = if state.membership_confirmed { 1.0 } else { 0.0 };
                metrics::gauge!("zerodb_keeper_membership_confirmed").set(confirmed);
                if state.term > held_term {
                    metrics::gauge!("zerodb_keeper_term").set(state.term as f64);
                    self.lead.lead_under(state.term);
                    if let Role::Leader { .. } = self.lead.role() {
                        self.lead.set(Role::Leader { term: state.term });
                    }
                    tracing::warn!(
                        from,
                        term = state.term,
                        epoch = state.epoch,
                        "a newer term was reported than this keeper's: leading under a newer one"
                    );
                }
                if state.topology.epoch > held_topology {
                    if !state.membership_confirmed {
                        tracing::warn!(from, epoch = state.topology.epoch,
                            "adopted a newer topology than the keeper's own; no automatic switch until an operator confirms the membership (zerodb-keeper bootstrap, POST /bootstrap)");
                    }
                    self.members.send_all(&FromKeeper::Topology {
                        topology: state.topology,
                    });
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

    /// `topology`, reported by `from`, if it fits the config.
    fn adoptable(&self, from: &str, topology: &ClusterTopology) -> Option<ClusterTopology> {
        let known: Vec<(&str, Vec<&str>)> = self
            .cfg
            .datahosts
            .iter()
            .map(|d| {
                let names = d.datasources.iter().map(|s| s.name.as_str()).collect();
                (d.name.as_str(), names)
            })
            .collect();
        match topology.fits(&known) {
            Ok(()) => Some(topology.clone()),
            Err(e) => {
                tracing::error!(from, epoch = topology.epoch, error = %e, "reported topology does not fit the config; not adopted");
                None
            }
        }
    }

    /// Each dataHost's datasources, as the config lists them.
    fn sources_by_datahost(&self) -> Vec<(String, Vec<String>)> {
        self.cfg
            .datahosts
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.datasources.iter().map(|s| s.name.clone()).collect(),
                )
            })
            .collect()
    }

    /// An operator confirms the membership after the keeper adopted a
    /// reported topology: the proxies registered now, plus `expected`
    /// (members from now on, lost until they register), are all there
    /// are. Returns the members.
    pub async fn bootstrap(&self, expected: &[String]) -> Result<Vec<String>, StoreError> {
        let names = expected.to_vec();
        let state = self
            .persist(move |s| {
                s.membership_confirmed = true;
                for name in &names {
                    if !s.proxies.contains(name) {
                        s.proxies.push(name.clone());
                    }
                }
            })
            .await?;
        self.members.expect(expected);
        metrics::gauge!("zerodb_keeper_membership_confirmed").set(1.0);
        tracing::warn!(proxies = ?state.proxies, "membership confirmed by an operator");
        Ok(state.proxies)
    }

    /// Waits, after a start without saved state, until every agent has
    /// reported (in-process ones included: they keep their epoch and
    /// topology under `state_dir/agents/`) or the discovery time is over.
    pub async fn discovered(&self) {
        let Some(until) = *lock(&self.discovery_until) else {
            return;
        };
        loop {
            let all_heard = {
                let reports = lock(&self.reports);
                self.cfg
                    .datahosts
                    .iter()
                    .flat_map(|d| &d.datasources)
                    .all(|ds| reports.contains_key(&ds.name))
            };
            if all_heard || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- proxies' sessions -------------------------------------------

    /// A proxy (re)registers on connection `conn`; returns the topology.
    /// Refused while another process (`instance`, 0: unknown) holds a live
    /// session under the same name.
    pub async fn register(
        &self,
        name: &str,
        instance: u64,
        conn: u64,
        tx: mpsc::UnboundedSender<FromKeeper>,
    ) -> Result<ClusterTopology, KeeperError> {
        if self.members.is_live_elsewhere(name, instance) {
            metrics::counter!("zerodb_keeper_duplicate_names_total").increment(1);
            return Err(KeeperError::NameTaken(name.to_string()));
        }
        let known = self.store.cached().proxies.iter().any(|p| p == name);
        if !known {
            let name = name.to_string();
            self.persist(move |s| {
                if !s.proxies.contains(&name) {
                    s.proxies.push(name.clone());
                }
            })
            .await?;
        }
        match self.members.connect(name, instance, conn, tx) {
            Ok(Some(old_id)) => {
                tracing::info!(proxy = %name, old_id, conn, "proxy reconnected; its closed or expired session is replaced")
            }
            Ok(None) => tracing::info!(proxy = %name, conn, "proxy registered"),
            Err(_) => return Err(KeeperError::NameTaken(name.to_string())),
        }
        Ok(self.topology())
    }

    /// Records a sign of life on `conn`; `false` when that connection no
    /// longer stands for a member (it was removed, or replaced).
    pub fn heartbeat(&self, name: &str, conn: u64) -> bool {
        self.members.heartbeat(name, conn)
    }

    /// The connection closed: the proxy stays a member until its session
    /// times out, as in ZooKeeper.
    pub fn disconnected(&self, name: &str, conn: u64) {
        self.members.disconnected(name, conn);
    }

    /// A proxy answered request `id`.
    pub fn answered(&self, id: u64, answer: Answer) {
        self.members.answered(id, answer);
    }

    /// The proxy leaves (it asked, or an operator removed it); whether it
    /// was a member.
    pub async fn unregister(&self, name: &str, why: &str) -> Result<bool, StoreError> {
        let known = self.store.cached().proxies.iter().any(|p| p == name);
        if known {
            let gone = name.to_string();
            self.persist(move |s| s.proxies.retain(|p| *p != gone))
                .await?;
        }
        let removed = self.members.remove(name);
        tracing::warn!(proxy = %name, reason = %why, "proxy unregistered");
        Ok(known || removed)
    }

    /// The members, after dropping those lost for longer than
    /// `drop_lost_proxy_after` (when set).
    pub(crate) async fn members(&self) -> Vec<Member> {
        if let Some(after) = self.cfg.timings.drop_lost_proxy_after {
            let gone = self.members.lost_longer_than(after);
            if !gone.is_empty() {
                let dropped = gone.clone();
                match self
                    .persist(move |s| s.proxies.retain(|p| !dropped.contains(p)))
                    .await
                {
                    Ok(_) => {
                        for n in gone {
                            tracing::warn!(proxy = %n, "lost proxy dropped (drop_lost_proxy_after)");
                            self.members.remove(&n);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot persist dropping lost proxies"),
                }
            }
        }
        self.members.list()
    }

    // ----- agents --------------------------------------------------------

    /// An agent's heartbeat: remember its report, tell it the topology and
    /// which source it should follow if it is not the active datasource.
    pub async fn agent_heartbeat(&self, hb: AgentHeartbeat) -> AgentHeartbeatReply {
        self.observe(
            &hb.datasource,
            hb.report.epoch,
            hb.report.term,
            hb.topology.as_ref(),
        )
        .await;
        let mut reports = lock(&self.reports);
        reports.insert(hb.datasource.clone(), (Instant::now(), hb.report));
        let topology = self.topology();
        let follow = topology
            .datahosts
            .iter()
            .find(|d| d.standbys.contains(&hb.datasource))
            .and_then(|d| {
                let cfg = self.datahost_config(&d.name)?;
                let (user, password) = cfg.replication_credentials();
                let fresh = self.cfg.timings.session_timeout;
                let state = reports
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
        for (name, core) in &self.local_agents {
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
                    // Only the leader's topology may move a server.
                    if !keeper.lead.serving() {
                        continue;
                    }
                    let report = core.report().await;
                    let reply = keeper
                        .agent_heartbeat(AgentHeartbeat {
                            datasource: name.clone(),
                            listen: "in-process".into(),
                            report: report.clone(),
                            topology: core.topology(),
                        })
                        .await;
                    core.on_heartbeat_reply(&reply, &report).await;
                }
            });
        }
    }

    // ----- operators -------------------------------------------------------

    /// The last decisions, oldest first.
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        self.decisions.recent()
    }

    /// Maintenance on or off for a dataHost (persisted).
    pub async fn set_maintenance(&self, datahost: &str, on: bool) -> Result<(), KeeperError> {
        if self.datahost_config(datahost).is_none() {
            return Err(KeeperError::UnknownDataHost(datahost.to_string()));
        }
        let dh = datahost.to_string();
        self.persist(move |s| {
            s.maintenance.retain(|d| *d != dh);
            if on {
                s.maintenance.push(dh.clone());
            }
        })
        .await?;
        tracing::warn!(datahost, on, "maintenance");
        Ok(())
    }

    /// Waits for the orders still running in the background.
    pub async fn finish_background(&self) {
        self.background.finish().await;
    }

    /// A snapshot for `/status`.
    pub async fn status(&self) -> serde_json::Value {
        self.members().await;
        let proxies = self.members.status();
        let agents: BTreeMap<_, _> = lock(&self.reports)
            .iter()
            .map(|(n, (at, r))| {
                (
                    n.clone(),
                    serde_json::json!({"age_ms": at.elapsed().as_millis() as u64, "report": r}),
                )
            })
            .collect();
        let state = self.state();
        let maintenance: BTreeSet<_> = state.maintenance.iter().cloned().collect();
        serde_json::json!({
            "epoch": state.epoch,
            "membership_confirmed": state.membership_confirmed,
            "topology": state.topology,
            "switch": state.switch,
            "maintenance": maintenance,
            "proxies": proxies,
            "agents": agents,
            "uptime_s": self.started.elapsed().as_secs(),
            "term": state.term,
            "leadership": self.lead.status(),
        })
    }
}

#[cfg(test)]
mod tests;
