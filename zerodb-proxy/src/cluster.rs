//! A proxy's part in a cluster (SPEC §4): one WebSocket to the keeper
//! (registration, heartbeats, votes, pushed topologies, switch requests),
//! to the leader when several keepers share state in etcd (SPEC §8),
//! switch requests while an active datasource stays down, and the actions
//! of the proxy's own rules ([`zerodb_core::governance`]): alert, unregister,
//! offline, back online.

use crate::config::ClusterConfig;
use crate::shared::{ClusterLink, Shared};
use crate::topology::DataHost;
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use zerodb_core::control::{
    bearer, ClusterTopology, DataHostState, FromKeeper, SwitchAnswer, ToKeeper,
};
use zerodb_core::governance::{Action, Mode, Outcome, Rules};
use zerodb_core::keepers::{unacknowledged, KeeperCursor, NewestTerm, Retry};

/// The WebSocket to the keeper.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long an acknowledged switch request waits for its answer: longer
/// than any decision with the keeper's default timings (votes, reports,
/// fence, promotion), so that only a decision stuck in the keeper ends
/// here, as `Interrupted`; the next request asks again.
const ACKED_ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// Why a connection to a keeper ended.
#[derive(Debug)]
enum SessionError {
    /// It failed, or the keeper could not be reached.
    Failed(String),
    /// The keeper does not lead; it names the leader (`None`: an election
    /// is under way).
    NotLeader(Option<String>),
}

impl From<String> for SessionError {
    fn from(e: String) -> Self {
        SessionError::Failed(e)
    }
}

/// What the keeper says to one switch request.
enum Reply {
    /// It arrived and is being decided.
    Ack,
    /// The decision.
    Answer(SwitchAnswer),
}

/// This proxy's part in a cluster: its connection to the keeper, its
/// switch requests and its own rules (SPEC §4).
pub struct Cluster {
    shared: Arc<Shared>,
    /// Which keeper to dial: the leader, found among the configured ones.
    cursor: Mutex<KeeperCursor>,
    /// The keeper registered with now.
    connected_to: Mutex<Option<String>>,
    /// Every listed keeper failed in turn and none has answered since:
    /// a switch request need not wait for a connection.
    lost: watch::Sender<bool>,
    /// `NotLeader` answers heard from followers: keepers that answered.
    keeper_answers: AtomicU64,
    /// The newest keeper term seen; a topology under it is refused.
    term: NewestTerm,
    token: String,
    cfg: ClusterConfig,
    rules: Mutex<Rules>,
    outbox: Mutex<Option<mpsc::UnboundedSender<ToKeeper>>>,
    /// Switch requests sent, by id: where their acknowledgement and
    /// answer go. Cleared when the connection ends.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>,
    next_id: AtomicU64,
    /// Registered on a live connection.
    connected: watch::Sender<bool>,
    /// Whether the connection loop should keep a connection (not while
    /// unregistered by the rules).
    want_connected: watch::Sender<bool>,
    /// DataHosts with a switch request flow running.
    in_flight: Mutex<HashSet<String>>,
    back_online_running: AtomicBool,
    /// The last switch request's outcome per dataHost, for errors.
    last_outcome: Mutex<HashMap<String, String>>,
    /// This process among proxies of the same name (see
    /// [`ToKeeper::Register`]).
    instance: u64,
    /// DataHosts held since start, until the keeper's topology arrives
    /// (or, past `cluster.start_timeout`, their active is writable).
    held_at_start: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("keepers", &lock(&self.cursor).keepers())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An id for this process, different from any other proxy's in practice:
/// the process id and the start time, never 0.
fn instance_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (u64::from(std::process::id()) << 40 ^ nanos) | 1
}

impl Cluster {
    /// Joins the keepers at `keepers` (host:port each; the leader among
    /// them when there are several) with `token`; call [`Cluster::spawn`]
    /// to start.
    pub fn join(shared: Arc<Shared>, keepers: Vec<String>, token: String) -> Arc<Self> {
        let rules = Rules::new(
            shared.config.policy.clone(),
            shared.topology.datahosts().len(),
        );
        let c = Arc::new(Self {
            cfg: shared.config.cluster.clone(),
            shared: shared.clone(),
            cursor: Mutex::new(KeeperCursor::new(keepers)),
            connected_to: Mutex::new(None),
            lost: watch::channel(false).0,
            keeper_answers: AtomicU64::new(0),
            term: NewestTerm::default(),
            token,
            rules: Mutex::new(rules),
            outbox: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connected: watch::channel(false).0,
            want_connected: watch::channel(true).0,
            in_flight: Mutex::new(HashSet::new()),
            back_online_running: AtomicBool::new(false),
            last_outcome: Mutex::new(HashMap::new()),
            held_at_start: Mutex::new(HashSet::new()),
            instance: instance_id(),
        });
        let link: Arc<dyn ClusterLink> = c.clone();
        let _ = shared.cluster.set(link);
        c
    }

    /// Starts the connection to the keeper and the switch logic. Until
    /// the keeper's topology arrives, every dataHost is held (SPEC §7:
    /// after a failover, the config's `active` may be a fenced old source).
    pub fn spawn(self: &Arc<Self>, stop: watch::Receiver<bool>) {
        self.hold_until_topology();
        tokio::spawn(self.clone().connection_loop(stop.clone()));
        tokio::spawn(self.clone().start_deadline(stop.clone()));
        tokio::spawn(self.clone().watch_loop(stop));
    }

    // ----- start: no topology older than the keeper's ---------------------

    fn hold_until_topology(&self) {
        let mut held = lock(&self.held_at_start);
        for dh in self.shared.topology.datahosts() {
            dh.hold_until_released();
            held.insert(dh.name.clone());
        }
        self.shared.set_starting(!held.is_empty());
    }

    /// Serves `datahost` again if the start holds it; once none is held,
    /// the proxy is no longer starting.
    fn release_start_hold(&self, datahost: &str, why: &str) {
        let mut held = lock(&self.held_at_start);
        if !held.remove(datahost) {
            return;
        }
        if let Some(dh) = self.shared.topology.datahost(datahost) {
            dh.hold(None);
        }
        tracing::info!(datahost, why, "serving");
        if held.is_empty() {
            self.shared.set_starting(false);
        }
    }

    /// The keeper's topology is applied: every dataHost may be served.
    fn topology_arrived(&self) {
        let held: Vec<String> = lock(&self.held_at_start).iter().cloned().collect();
        for dh in held {
            self.release_start_hold(&dh, "the keeper's topology arrived");
        }
    }

    /// Past `cluster.start_timeout` without the keeper's topology, serves
    /// each dataHost whose active datasource is writable (so never a
    /// fenced former source), checking the others again until the
    /// topology arrives.
    async fn start_deadline(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.cfg.start_timeout) => {}
            _ = stop.changed() => return,
        }
        let mut warned = false;
        loop {
            let held: Vec<String> = lock(&self.held_at_start).iter().cloned().collect();
            if held.is_empty() {
                return;
            }
            if !warned {
                tracing::warn!(timeout = ?self.cfg.start_timeout, "no topology from the keeper: serving only dataHosts whose active datasource is writable");
                warned = true;
            }
            for name in held {
                let writable = match self.shared.topology.datahost(&name) {
                    Some(dh) => self.active_writable(dh).await,
                    None => true,
                };
                if writable {
                    self.release_start_hold(&name, "its active datasource is writable");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.switch_retry_interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// What the proxy's rules have made of it: online, offline for a lost
    /// keeper, or unregistered.
    pub fn mode(&self) -> Mode {
        lock(&self.rules).mode()
    }

    /// Whether the proxy is registered with the keeper over a live
    /// connection.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// The newest keeper term seen (0: a sole keeper).
    pub fn term(&self) -> u64 {
        self.term.get()
    }

    /// The keeper connection and the rules' counters: `keepers` (the
    /// list), `keeper` (the one dialled now), `connected_to` (the one
    /// registered with, or null), `term`.
    pub fn status(&self) -> serde_json::Value {
        let (keepers, keeper) = {
            let c = lock(&self.cursor);
            (c.keepers().to_vec(), c.current().to_string())
        };
        let rules = lock(&self.rules);
        serde_json::json!({
            "keepers": keepers,
            "keeper": keeper,
            "connected_to": *lock(&self.connected_to),
            "term": self.term.get(),
            "connected": self.is_connected(),
            "mode": rules.mode(),
            "counters": rules.counters(),
        })
    }

    /// Leaves the cluster on a clean stop, so this proxy no longer counts
    /// as a member that could be writing.
    pub async fn leave(&self, reason: &str) {
        let sent = lock(&self.outbox).as_ref().is_some_and(|tx| {
            tx.send(ToKeeper::Unregister {
                reason: reason.to_string(),
            })
            .is_ok()
        });
        if sent {
            let mut rx = self.connected.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|c| !*c)).await;
        }
    }

    // ----- the connection to the keeper ----------------------------------

    async fn connection_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut want = self.want_connected.subscribe();
        let mut reported = false;
        // The last leader a follower named: logged once, not at every
        // attempt while an election runs.
        let mut followed: Option<Option<String>> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if !*want.borrow_and_update() {
                tokio::select! {
                    _ = want.changed() => continue,
                    _ = stop.changed() => return,
                }
            }
            let keeper = lock(&self.cursor).current().to_string();
            let result = self.session(&keeper, &mut stop, &mut want).await;
            let was = self.connected.send_replace(false);
            *lock(&self.outbox) = None;
            *lock(&self.connected_to) = None;
            lock(&self.pending).clear();
            metrics::gauge!("zerodb_keeper_connected").set(0.0);
            if result.is_ok() {
                followed = None;
            }
            let retry = match result {
                Ok(()) => {
                    reported = false;
                    Retry::AfterRound
                }
                Err(SessionError::NotLeader(leader)) => {
                    self.keeper_answers.fetch_add(1, Ordering::AcqRel);
                    if followed.as_ref() != Some(&leader) {
                        tracing::info!(keeper = %keeper, leader = ?leader, "this keeper does not lead: following the leader");
                    } else {
                        tracing::debug!(keeper = %keeper, leader = ?leader, "this keeper does not lead");
                    }
                    let retry = lock(&self.cursor).on_not_leader(leader.as_deref());
                    followed = Some(leader);
                    retry
                }
                Err(SessionError::Failed(e)) => {
                    if was || !reported {
                        tracing::warn!(keeper = %keeper, error = %e, "keeper unreachable; holding the current topology");
                        reported = true;
                    }
                    lock(&self.cursor).on_failure()
                }
            };
            self.lost.send_replace(lock(&self.cursor).is_lost());
            let pause = retry.delay(self.cfg.reconnect_interval);
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Dials `keeper`, registers with the topology this proxy holds, and
    /// applies the keeper's.
    async fn register(&self, keeper: &str) -> Result<Ws, SessionError> {
        let t = self.cfg.request_timeout;
        let tls = zerodb_core::control_tls::client_config(&self.shared.config.control_tls)
            .map_err(|e| e.to_string())?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let mut req = format!("{scheme}://{keeper}/v1/proxy")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let auth = bearer(&self.token)
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        req.headers_mut().insert("authorization", auth);
        let connector = tls.map(tokio_tungstenite::Connector::Rustls);
        let dial = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
        let (mut ws, _) = tokio::time::timeout(t, dial)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let epoch = self.shared.topology.epoch();
        let register = ToKeeper::Register {
            instance: self.instance,
            name: self.shared.config.name.clone(),
            epoch,
            // Epoch 0 is the config's: nothing a keeper should adopt.
            topology: (epoch > 0).then(|| self.held_topology()),
        };
        send(&mut ws, &register).await?;
        let first = tokio::time::timeout(t, ws.next())
            .await
            .map_err(|_| "no answer to register".to_string())?;
        match parse(first) {
            Some(FromKeeper::Registered { topology, .. }) => {
                // A keeper whose term is under the newest seen was deposed
                // and does not know it yet: not a session to keep (it
                // would answer nothing the proxy could use). The next
                // keeper, or the leader it names once it steps down.
                if self.is_from_deposed_leader(&topology) {
                    let _ = ws.close(None).await;
                    return Err("registered by a deposed keeper (an older term)"
                        .to_string()
                        .into());
                }
                // A topology this proxy cannot apply (a datasource its
                // config lacks) does not end the start's hold.
                if self.apply(&topology) {
                    self.topology_arrived();
                }
                Ok(ws)
            }
            Some(FromKeeper::NotLeader(n)) => {
                let _ = ws.close(None).await;
                Err(SessionError::NotLeader(n.leader))
            }
            Some(FromKeeper::Refused { reason }) => Err(format!("refused: {reason}").into()),
            _ => Err("unexpected answer to register".to_string().into()),
        }
    }

    /// One connection: register, apply the keeper's topology, then serve
    /// messages until it breaks.
    async fn session(
        &self,
        keeper: &str,
        stop: &mut watch::Receiver<bool>,
        want: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let (mut sink, mut stream) = self.register(keeper).await?.split();
        lock(&self.cursor).on_answered();
        self.lost.send_replace(false);
        *lock(&self.connected_to) = Some(keeper.to_string());
        let (tx, mut rx) = mpsc::unbounded_channel();
        *lock(&self.outbox) = Some(tx.clone());
        self.connected.send_replace(true);
        metrics::gauge!("zerodb_keeper_connected").set(1.0);
        tracing::info!(keeper = %keeper, epoch = self.shared.topology.epoch(), term = self.term.get(), "registered with the keeper");
        let mut hb = tokio::time::interval(self.cfg.heartbeat_interval);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A keeper that stops answering (paused, cut off) is noticed by
        // silence: pings go out with every heartbeat and pongs come back.
        let silence = (self.cfg.heartbeat_interval * 4).max(Duration::from_secs(2));
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = hb.tick() => {
                    if heard.elapsed() > silence {
                        return Err(format!("keeper silent for {silence:?}").into());
                    }
                    send(&mut sink, &ToKeeper::Heartbeat).await?;
                    sink.send(Message::Ping(Default::default())).await.map_err(|e| e.to_string())?;
                }
                Some(m) = rx.recv() => {
                    let leaving = matches!(m, ToKeeper::Unregister { .. });
                    send(&mut sink, &m).await?;
                    if leaving {
                        let _ = sink.close().await;
                        return Ok(());
                    }
                }
                msg = stream.next() => {
                    heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(_))) => {
                            if let Some(m) = parse(msg) {
                                self.on_message(m, &tx)?;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return Err("connection closed".to_string().into()),
                        Some(Err(e)) => return Err(e.to_string().into()),
                        Some(Ok(_)) => {}
                    }
                }
                _ = stop.changed() => return Ok(()),
                _ = want.changed() => {
                    if !*want.borrow() {
                        let _ = sink.close().await;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn on_message(
        &self,
        m: FromKeeper,
        tx: &mpsc::UnboundedSender<ToKeeper>,
    ) -> Result<(), SessionError> {
        match m {
            FromKeeper::Registered { topology, .. } | FromKeeper::Topology { topology } => {
                self.apply(&topology);
            }
            FromKeeper::SwitchAck { id } => {
                if let Some(waiter) = lock(&self.pending).get(&id) {
                    let _ = waiter.send(Reply::Ack);
                }
            }
            FromKeeper::SwitchAnswer { id, answer } => {
                if let Some(waiter) = lock(&self.pending).remove(&id) {
                    let _ = waiter.send(Reply::Answer(answer));
                }
            }
            FromKeeper::VoteRequest {
                id,
                datahost,
                datasource,
            } => {
                let ds = self
                    .shared
                    .topology
                    .datahost(&datahost)
                    .and_then(|d| d.datasource(&datasource))
                    .cloned();
                let (tx, timeout) = (tx.clone(), self.shared.config.health.timeout);
                tokio::spawn(async move {
                    // A datasource this proxy does not serve cannot be
                    // reached by it: it does not stand in the way.
                    let down = match ds {
                        Some(ds) => crate::health::probe_once(ds.pool.params(), timeout)
                            .await
                            .failed(),
                        None => true,
                    };
                    tracing::info!(datahost = %datahost, datasource = %datasource, down, "vote");
                    let _ = tx.send(ToKeeper::Vote { id, down });
                });
            }
            FromKeeper::Hold {
                id,
                datahost,
                grace_ms,
                max_ms,
            } => self.on_hold(id, &datahost, grace_ms, max_ms, tx),
            FromKeeper::Release { datahost } => {
                if let Some(dh) = self.shared.topology.datahost(&datahost) {
                    dh.hold(None);
                    tracing::warn!(datahost = %datahost, "released: the switchover did not happen");
                }
            }
            FromKeeper::Refused { reason } => return Err(format!("refused: {reason}").into()),
            // The keeper stepped down: the session ends, and the cursor
            // goes to the leader it names.
            FromKeeper::NotLeader(n) => return Err(SessionError::NotLeader(n.leader)),
        }
        Ok(())
    }

    /// A planned switchover holds `datahost`: new statements wait; the
    /// keeper hears how many sessions were still open after `grace_ms`.
    fn on_hold(
        &self,
        id: u64,
        datahost: &str,
        grace_ms: u64,
        max_ms: u64,
        tx: &mpsc::UnboundedSender<ToKeeper>,
    ) {
        let Some(dh) = self.shared.topology.datahost(datahost).cloned() else {
            let _ = tx.send(ToKeeper::Held { id, open: 0 });
            return;
        };
        dh.hold(Some(Duration::from_millis(max_ms)));
        tracing::warn!(datahost = %datahost, grace_ms, "held for a planned switchover");
        let (shared, tx) = (self.shared.clone(), tx.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(grace_ms);
            let open = loop {
                let open = shared
                    .registry
                    .all()
                    .iter()
                    .filter(|s| {
                        s.is_busy()
                            && s.backend().is_some_and(|(ds, _)| {
                                dh.datasources.iter().any(|d| Arc::ptr_eq(d, &ds))
                            })
                    })
                    .count() as u32;
                if open == 0 || Instant::now() >= deadline {
                    break open;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let _ = tx.send(ToKeeper::Held { id, open });
        });
    }

    /// The topology this proxy serves, as the keeper would send it.
    fn held_topology(&self) -> ClusterTopology {
        let topo = &self.shared.topology;
        ClusterTopology {
            epoch: topo.epoch(),
            term: self.term.get(),
            datahosts: topo
                .datahosts()
                .iter()
                .map(|dh| {
                    let active = dh.active();
                    let names = dh.datasources.iter().map(|d| d.name.as_str());
                    DataHostState::new(&dh.name, &active.datasource.name, names)
                })
                .collect(),
        }
    }

    /// Applies a topology from the keeper if it is newer than the one held.
    /// Returns whether the proxy now holds `t` or a newer topology (not
    /// when `t` was refused).
    ///
    /// A topology under the newest term seen comes from a deposed leader:
    /// it is refused (SPEC §8); one under a newer term raises it.
    fn apply(&self, t: &ClusterTopology) -> bool {
        if self.is_from_deposed_leader(t) {
            return false;
        }
        let topo = &self.shared.topology;
        if t.epoch <= topo.epoch() {
            return true;
        }
        let changes: Vec<(&str, &str)> = t
            .changes()
            .into_iter()
            .filter(|(dh, _)| topo.datahost(dh).is_some())
            .collect();
        match topo.apply(t.epoch, &changes) {
            Ok(_) => {
                tracing::info!(epoch = t.epoch, "topology applied");
                true
            }
            Err(e) => {
                tracing::error!(epoch = t.epoch, error = %e, "topology from the keeper refused");
                false
            }
        }
    }

    /// Whether `t` is under the newest term seen (warned and counted);
    /// otherwise its term is now the newest seen.
    fn is_from_deposed_leader(&self, t: &ClusterTopology) -> bool {
        match self.term.admit(t.term) {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(
                    epoch = t.epoch,
                    term = t.term,
                    newest_term = e.seen,
                    "topology from a deposed keeper refused"
                );
                metrics::counter!("zerodb_proxy_stale_term_total").increment(1);
                true
            }
        }
    }

    // ----- switch requests and the rules --------------------------------

    async fn watch_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut events = self.shared.health_events.subscribe();
        let mut tick = tokio::time::interval(self.cfg.switch_retry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = events.recv() => {}
                _ = stop.changed() => return,
            }
            self.evaluate();
        }
    }

    fn evaluate(self: &Arc<Self>) {
        let may_request = self.may_request();
        let mut all_up = true;
        for dh in self.shared.topology.datahosts() {
            let active = dh.active();
            if active.datasource.health.is_up() {
                lock(&self.rules).on_source_answering(&dh.name);
                continue;
            }
            all_up = false;
            if may_request && lock(&self.in_flight).insert(dh.name.clone()) {
                tokio::spawn(
                    self.clone()
                        .switch_flow(dh.name.clone(), active.datasource.name.clone()),
                );
            }
        }
        let come_back = lock(&self.rules).may_come_back(all_up, self.is_connected());
        if come_back && !self.back_online_running.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                me.try_back_online().await;
                me.back_online_running.store(false, Ordering::Release);
            });
        }
    }

    /// Requests a switch of `datahost` away from `source` until it is
    /// switched, the source answers again, or the rules take the proxy
    /// offline.
    async fn switch_flow(self: Arc<Self>, datahost: String, source: String) {
        let started = Instant::now();
        loop {
            let asked = Instant::now();
            let outcome = self.request(&datahost, &source).await;
            let label = match &outcome {
                Outcome::Switched => "switched",
                Outcome::Rejected(r) => r.kind(),
                Outcome::KeeperUnreachable => "KeeperUnreachable",
                Outcome::Interrupted => "Interrupted",
            };
            metrics::counter!("zerodb_switch_requests_total", "datahost" => datahost.clone(), "outcome" => label)
                .increment(1);
            let text = match &outcome {
                Outcome::Rejected(r) => format!("the keeper rejected the switch: {r:?}"),
                Outcome::KeeperUnreachable => "the keeper cannot be reached".to_string(),
                Outcome::Interrupted => {
                    "the keeper's connection ended while it decided".to_string()
                }
                Outcome::Switched => "switched".to_string(),
            };
            lock(&self.last_outcome).insert(datahost.clone(), text);
            metrics::histogram!("zerodb_switch_request_seconds", "outcome" => label)
                .record(asked.elapsed().as_secs_f64());
            if outcome == Outcome::Switched {
                // From this proxy marking the source down to its new topology.
                metrics::histogram!("zerodb_failover_seconds", "datahost" => datahost.clone())
                    .record(started.elapsed().as_secs_f64());
            }
            let action = lock(&self.rules).on_outcome(&datahost, &outcome);
            self.act(action).await;
            if outcome == Outcome::Switched || !self.may_request() {
                break;
            }
            tokio::time::sleep(self.cfg.switch_retry_interval).await;
            let still = self.shared.topology.datahost(&datahost).is_some_and(|d| {
                let a = d.active();
                a.datasource.name == source && !a.datasource.health.is_up()
            });
            if !still {
                break;
            }
        }
        lock(&self.in_flight).remove(&datahost);
    }

    /// Asks the keeper to switch `datahost` away from `source`.
    ///
    /// Only a request that no keeper answered within `request_timeout` is
    /// `KeeperUnreachable` (SPEC §8): while the proxy dials the next
    /// keeper, or follows a follower's `NotLeader` to the leader, the
    /// request waits, and is sent (again) once registered. If that takes
    /// too long after a follower answered, the request is `Interrupted`.
    /// Once every listed keeper failed in turn, it does not wait. Once
    /// acknowledged, the answer is awaited as long as the connection
    /// lives (a silent keeper ends it).
    async fn request(&self, datahost: &str, source: &str) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        let answers = self.keeper_answers.load(Ordering::Acquire);
        let mut warned = false;
        let reply = loop {
            if !self.wait_for_keeper(deadline).await {
                break None;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::unbounded_channel();
            lock(&self.pending).insert(id, tx);
            let sent = lock(&self.outbox).as_ref().is_some_and(|o| {
                o.send(ToKeeper::SwitchRequest {
                    id,
                    datahost: datahost.to_string(),
                    source: source.to_string(),
                })
                .is_ok()
            });
            if !sent {
                // The connection ended meanwhile: wait for the next.
                lock(&self.pending).remove(&id);
                tokio::task::yield_now().await;
                continue;
            }
            if !warned {
                tracing::warn!(datahost, source, "switch requested");
                warned = true;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => break Some((id, r, rx)),
                // The connection ended before the keeper acknowledged:
                // ask the next keeper it reaches, within the same time.
                Ok(None) => continue,
                Err(_) => {
                    lock(&self.pending).remove(&id);
                    break None;
                }
            }
        };
        let answer = match reply {
            None => {
                let answered = self.keeper_answers.load(Ordering::Acquire) != answers
                    || lock(&self.cursor).is_seeking_leader();
                return unacknowledged(answered);
            }
            Some((_, Reply::Answer(a), _)) => a,
            Some((id, Reply::Ack, mut rx)) => {
                match tokio::time::timeout(ACKED_ANSWER_LIMIT, rx.recv()).await {
                    Ok(Some(Reply::Answer(a))) => a,
                    _ => {
                        tracing::warn!(datahost, "the keeper acknowledged the request, and its answer did not come (the connection ended, or a stuck decision)");
                        lock(&self.pending).remove(&id);
                        return Outcome::Interrupted;
                    }
                }
            }
        };
        match answer {
            SwitchAnswer::Switched { topology } | SwitchAnswer::Stale { topology } => {
                if self.is_from_deposed_leader(&topology) {
                    // A deposed leader's decision: it counts for nothing.
                    return Outcome::Interrupted;
                }
                self.apply(&topology);
                Outcome::Switched
            }
            SwitchAnswer::Rejected { rejection } => Outcome::Rejected(rejection),
        }
    }

    /// Waits until the proxy is registered with a keeper (`true`), or
    /// every listed keeper has failed in turn, or `deadline` passes
    /// (`false`).
    async fn wait_for_keeper(&self, deadline: tokio::time::Instant) -> bool {
        let mut connected = self.connected.subscribe();
        let mut lost = self.lost.subscribe();
        loop {
            if *connected.borrow_and_update() {
                return true;
            }
            if *lost.borrow_and_update() {
                return false;
            }
            tokio::select! {
                _ = connected.changed() => {}
                _ = lost.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Whether switch requests go out now (online, or offline for a lost
    /// keeper that answers again).
    fn may_request(&self) -> bool {
        lock(&self.rules).may_request_switch(self.is_connected())
    }

    async fn act(&self, action: Action) {
        match action {
            Action::Nothing => {}
            Action::Alert { datahost, reason } => {
                tracing::warn!(datahost = %datahost, reason = %reason, counters = ?lock(&self.rules).counters().get(&datahost), "switch not done: alert");
                metrics::counter!("zerodb_switch_alerts_total", "datahost" => datahost, "reason" => reason)
                    .increment(1);
            }
            Action::GoOffline => {
                tracing::error!("lost the keeper and too many dataHosts: going offline");
                self.shared.set_online(false);
            }
            Action::GoOfflineAndUnregister => {
                tracing::error!("outvoted on too many dataHosts: going offline and unregistering");
                self.shared.set_online(false);
                self.leave("outvoted: this proxy's view of the network is the odd one")
                    .await;
                self.want_connected.send_replace(false);
            }
            Action::ReRegisterAndServe | Action::ServeWithoutKeeper => {
                self.shared.set_online(true);
            }
        }
    }

    /// Every active datasource answers again, or the lost keeper does
    /// ([`Rules::may_come_back`]): come back, through the keeper if it
    /// answers (registered, newest topology first), or else only where
    /// every active datasource is writable.
    async fn try_back_online(&self) {
        self.want_connected.send_replace(true);
        let mut rx = self.connected.subscribe();
        let reachable = tokio::time::timeout(self.cfg.request_timeout, rx.wait_for(|c| *c))
            .await
            .is_ok();
        let writable = if reachable {
            true
        } else {
            self.all_active_writable().await
        };
        let action = lock(&self.rules).on_all_answering(reachable, writable);
        if action != Action::Nothing {
            tracing::warn!(?action, "back online");
        }
        self.act(action).await;
    }

    async fn all_active_writable(&self) -> bool {
        for dh in self.shared.topology.datahosts() {
            if !self.active_writable(dh).await {
                tracing::warn!(datahost = %dh.name, "active datasource is read-only (or unreadable): staying offline");
                return false;
            }
        }
        true
    }

    /// Whether `dh`'s active datasource answers with `read_only=OFF`.
    async fn active_writable(&self, dh: &DataHost) -> bool {
        let ds = dh.active().datasource.clone();
        crate::health::writable(ds.pool.params(), self.shared.config.health.timeout * 2).await
    }
}

async fn send<S>(sink: &mut S, m: &ToKeeper) -> Result<(), String>
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    let text = serde_json::to_string(m).map_err(|e| e.to_string())?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

fn parse(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Option<FromKeeper> {
    match msg {
        Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "malformed message from the keeper");
                None
            }
        },
        _ => None,
    }
}

impl ClusterLink for Cluster {
    fn last_outcome(&self, datahost: &str) -> Option<String> {
        lock(&self.last_outcome).get(datahost).cloned()
    }

    fn status(&self) -> serde_json::Value {
        Cluster::status(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyConfig;

    /// A cluster member that dials nobody: the tests play the keeper's
    /// part on its channels.
    fn member(request_timeout: &str) -> Arc<Cluster> {
        let yaml = format!(
            "users: [{{name: app}}]\n\
             datahosts: [{{name: dh1, user: u, datasources: [{{name: mysql_1, addr: \"127.0.0.1:1\"}}, {{name: mysql_11, addr: \"127.0.0.1:2\"}}]}}]\n\
             keeper: [\"127.0.0.1:3\", \"127.0.0.1:4\"]\ntoken: t\n\
             cluster: {{request_timeout: {request_timeout}}}\n"
        );
        let config = ProxyConfig::from_yaml(&yaml).unwrap();
        let shared = crate::server::Proxy::new(config).shared().clone();
        Cluster::join(
            shared,
            vec!["127.0.0.1:3".into(), "127.0.0.1:4".into()],
            "t".into(),
        )
    }

    fn topology(epoch: u64, term: u64, active: &str) -> ClusterTopology {
        ClusterTopology {
            epoch,
            term,
            datahosts: vec![DataHostState::new("dh1", active, ["mysql_1", "mysql_11"])],
        }
    }

    /// Registers the member on a connection whose messages the test reads.
    fn connect(c: &Cluster) -> mpsc::UnboundedReceiver<ToKeeper> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&c.outbox) = Some(tx);
        lock(&c.cursor).on_answered();
        c.lost.send_replace(false);
        c.connected.send_replace(true);
        rx
    }

    /// The connection ends, as `connection_loop` ends it.
    fn disconnect(c: &Cluster) {
        c.connected.send_replace(false);
        *lock(&c.outbox) = None;
        lock(&c.pending).clear();
    }

    #[tokio::test]
    async fn a_topology_under_an_older_term_is_refused() {
        let c = member("1s");
        assert!(c.apply(&topology(2, 3, "mysql_1")));
        assert_eq!(c.term(), 3);
        assert_eq!(c.held_topology().term, 3);
        // A deposed leader's newer epoch: refused, nothing changes.
        assert!(!c.apply(&topology(5, 2, "mysql_11")));
        assert_eq!(c.shared.topology.epoch(), 2);
        assert_eq!(c.held_topology().datahosts[0].active, "mysql_1");
        assert_eq!(c.term(), 3);
        // The new leader's: applied, and its term is the newest.
        assert!(c.apply(&topology(6, 4, "mysql_11")));
        assert_eq!(c.held_topology().datahosts[0].active, "mysql_11");
        assert_eq!((c.held_topology().epoch, c.term()), (6, 4));
    }

    /// A keeper that registers the proxy with a topology under an older
    /// term (deposed, and not aware of it yet) is left at once: its
    /// topology refused, the session not kept.
    #[tokio::test]
    async fn a_keeper_registering_under_an_older_term_is_left() {
        let c = member("1s");
        assert!(c.apply(&topology(2, 3, "mysql_1")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let keeper = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
            let register = ws.next().await;
            assert!(matches!(register, Some(Ok(Message::Text(_)))));
            let hello = FromKeeper::Registered {
                topology: topology(5, 2, "mysql_11"),
                session_timeout_ms: 3000,
            };
            let hello = serde_json::to_string(&hello).unwrap();
            ws.send(Message::Text(hello.into())).await.unwrap();
            // The proxy closes the connection.
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    return true;
                }
            }
            true
        });
        let r = c.register(&addr).await;
        assert!(matches!(r, Err(SessionError::Failed(_))), "{r:?}");
        assert_eq!(c.shared.topology.epoch(), 2);
        assert_eq!(c.term(), 3);
        assert!(keeper.await.unwrap());
    }

    #[tokio::test]
    async fn a_request_waits_for_the_next_keeper_within_the_timeout() {
        let c = member("2s");
        let mut first = connect(&c);
        let keeper = {
            let c = c.clone();
            tokio::spawn(async move {
                // The leader dies before it acknowledges the request.
                let Some(ToKeeper::SwitchRequest { .. }) = first.recv().await else {
                    panic!("no request");
                };
                disconnect(&c);
                lock(&c.cursor).on_failure();
                tokio::time::sleep(Duration::from_millis(100)).await;
                // The next keeper registers the proxy; it gets the request
                // again and answers it.
                let mut next = connect(&c);
                let Some(ToKeeper::SwitchRequest { id, .. }) = next.recv().await else {
                    panic!("the request was not sent again");
                };
                let answer = SwitchAnswer::Stale {
                    topology: topology(3, 1, "mysql_11"),
                };
                let (tx, _) = mpsc::unbounded_channel();
                c.on_message(FromKeeper::SwitchAnswer { id, answer }, &tx)
                    .unwrap();
            })
        };
        assert_eq!(c.request("dh1", "mysql_1").await, Outcome::Switched);
        keeper.await.unwrap();
        assert_eq!(c.term(), 1);
    }

    #[tokio::test]
    async fn a_follower_answer_is_no_lost_keeper() {
        let c = member("200ms");
        // Dialling keepers, one answers NotLeader naming a leader that
        // does not register the proxy in time.
        let bump = {
            let c = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                c.keeper_answers.fetch_add(1, Ordering::AcqRel);
                lock(&c.cursor).on_not_leader(Some("10.0.0.9:7700"));
            })
        };
        assert_eq!(c.request("dh1", "mysql_1").await, Outcome::Interrupted);
        bump.await.unwrap();
        // Still following it when the next request starts: an answer.
        assert_eq!(c.request("dh1", "mysql_1").await, Outcome::Interrupted);
    }

    #[tokio::test]
    async fn silence_is_a_lost_keeper_and_a_failed_round_does_not_wait() {
        let c = member("200ms");
        let t = Instant::now();
        assert_eq!(
            c.request("dh1", "mysql_1").await,
            Outcome::KeeperUnreachable
        );
        assert!(t.elapsed() >= Duration::from_millis(200), "it waited");
        // Every listed keeper failed in turn: no wait.
        lock(&c.cursor).on_failure();
        lock(&c.cursor).on_failure();
        c.lost.send_replace(lock(&c.cursor).is_lost());
        let t = Instant::now();
        assert_eq!(
            c.request("dh1", "mysql_1").await,
            Outcome::KeeperUnreachable
        );
        assert!(t.elapsed() < Duration::from_millis(100));
        // Registered, and no acknowledgement in time: unreachable too.
        let _rx = connect(&c);
        assert_eq!(
            c.request("dh1", "mysql_1").await,
            Outcome::KeeperUnreachable
        );
    }
}
