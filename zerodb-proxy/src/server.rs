//! The proxy process: building the topology from config, the accept loop,
//! the session registry, background probes, and graceful shutdown.

use crate::backend::{BackendConn, BackendKey, ConnectParams};
use crate::config::ProxyConfig;
use crate::health::{self, HealthEvent};
use crate::hooks::StatementHook;
use crate::protocol::caps;
use crate::topology::{DataHost, Datasource, Topology};
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Semaphore};

/// One live client session, as other sessions and the admin API see it.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u32,
    pub peer: SocketAddr,
    pub started: Instant,
    user: Mutex<String>,
    backend: Mutex<Option<(Arc<Datasource>, u32)>>,
    killed: AtomicBool,
    /// Wakes the session's own waits: it was killed, the proxy is shutting
    /// down, a datasource was marked down, or its buffers are due back.
    attention: Attention,
    /// Running a statement, or inside a transaction.
    busy: AtomicBool,
    /// The registry's tick (see [`Registry::ticks`]) at which the session
    /// last finished a command, or [`RUNNING`] / [`RELEASE`] / [`EMPTY`]:
    /// lets the registry ask a session idle for long to give its buffers
    /// back.
    last_done: AtomicU64,
}

/// A flag with one waiter: the session's task. Waiting on it costs a
/// couple of atomic operations and no lock, so every statement can afford
/// it (a `Notify` would take its mutex twice per wait).
#[derive(Debug, Default)]
struct Attention {
    raised: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Attention {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // Looked at before it is taken: the flag is almost never raised,
        // and a plain load keeps the common wait free of a locked
        // instruction.
        let take =
            || self.raised.load(Ordering::Acquire) && self.raised.swap(false, Ordering::AcqRel);
        if take() {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Raised between the first look and the registration.
        if take() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// How often the registry looks for idle sessions: one tick of its coarse
/// clock. A session idle for two ticks (200 to 400 ms) gives its buffers
/// back.
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// `last_done` while a command runs.
const RUNNING: u64 = u64::MAX;
/// `last_done` once the session should give its buffers back (a new
/// session starts so: its login's buffers go at its first wait).
const RELEASE: u64 = u64::MAX - 1;
/// `last_done` once it has, until its next command.
const EMPTY: u64 = u64::MAX - 2;

impl SessionHandle {
    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_user(&self, u: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = u.to_string();
    }

    /// The datasource and server thread id the session is bound to.
    pub fn backend(&self) -> Option<(Arc<Datasource>, u32)> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_backend(&self, b: Option<(Arc<Datasource>, u32)>) {
        *self.backend.lock().unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Asks the session to close at its next chance.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.attention.raise();
    }

    /// Wakes the session to look again at what it waits for (kept if it
    /// is not waiting, so nothing is missed).
    pub(crate) fn nudge(&self) {
        self.attention.raise();
    }

    /// Resolves at the next kill or nudge (or at once, if one came since
    /// the last wait). Callers check the reason themselves.
    pub(crate) async fn attention(&self) {
        std::future::poll_fn(|cx| self.attention.poll(cx)).await;
    }

    /// Whether the session is running a statement or is inside a
    /// transaction (a planned switchover waits for it).
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// A command starts (`None`) or ended at the registry tick `done`.
    pub(crate) fn mark_command(&self, done: Option<u64>) {
        self.last_done
            .store(done.unwrap_or(RUNNING), Ordering::Relaxed);
    }

    /// Whether the registry found the session idle for long: it should
    /// give its buffers back before it waits again.
    pub(crate) fn buffers_due_back(&self) -> bool {
        self.last_done.load(Ordering::Relaxed) == RELEASE
    }

    /// Buffers given back: nothing more to ask until the next command.
    pub(crate) fn buffers_given_back(&self) {
        let _ =
            self.last_done
                .compare_exchange(RELEASE, EMPTY, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) async fn killed(&self) {
        while !self.is_killed() {
            self.attention().await;
        }
    }
}

/// Live sessions by proxy connection id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Arc<SessionHandle>>>,
    next_id: AtomicU32,
    /// A coarse clock: how many times the registry looked for idle
    /// sessions, once a [`TICK`]. Reading it is one load where a clock read
    /// and the arithmetic on it would be a statement's largest cost.
    ticks: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, peer: SocketAddr) -> Arc<SessionHandle> {
        let mut map = self.lock();
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !map.contains_key(&id) {
                break id;
            }
        };
        let h = Arc::new(SessionHandle {
            id,
            peer,
            started: Instant::now(),
            user: Mutex::new(String::new()),
            backend: Mutex::new(None),
            killed: AtomicBool::new(false),
            attention: Attention::default(),
            busy: AtomicBool::new(false),
            last_done: AtomicU64::new(RELEASE),
        });
        map.insert(id, h.clone());
        h
    }

    pub(crate) fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    pub fn get(&self, id: u32) -> Option<Arc<SessionHandle>> {
        self.lock().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.lock().values().cloned().collect()
    }

    /// The registry's coarse clock, in [`TICK`]s.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Advances the coarse clock by a tick and asks every session idle for
    /// two ticks to give its buffers back (a busy client keeps its buffers
    /// from one statement to the next; an idle one holds none).
    pub(crate) fn reclaim_idle_buffers(&self) {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        for s in self.lock().values() {
            let done = s.last_done.load(Ordering::Relaxed);
            if done >= EMPTY {
                continue;
            }
            if now.saturating_sub(done) >= 2
                && s.last_done
                    .compare_exchange(done, RELEASE, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                s.nudge();
            }
        }
    }

    /// Wakes every session to look at what changed.
    pub(crate) fn nudge_all(&self) {
        for s in self.lock().values() {
            s.nudge();
        }
    }
}

/// Whether the proxy takes clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Serving {
    Serving,
    Draining,
    /// Offline by the proxy's own rules (SPEC §4): the listener is closed.
    Offline,
    /// Started in a cluster and not yet holding the keeper's topology
    /// (SPEC §7): clients are taken, their statements wait.
    Starting,
}

/// What sessions and the admin surface need of the proxy's part in a
/// cluster (implemented by `cluster::Cluster`, feature `cluster`).
pub trait ClusterLink: Send + Sync + std::fmt::Debug {
    /// What the last switch request for `datahost` came to, for the error
    /// a statement gets when no switch came in time.
    fn last_outcome(&self, datahost: &str) -> Option<String>;
    /// The keeper connection and the rules' counters, for `/status`.
    fn status(&self) -> serde_json::Value;
}

/// What every session shares.
pub struct Shared {
    pub config: ProxyConfig,
    pub topology: Arc<Topology>,
    pub users: HashMap<String, String>,
    pub registry: Registry,
    pub hooks: Vec<Arc<dyn StatementHook>>,
    /// Version string sent to clients.
    pub server_version: ArcSwap<String>,
    /// Capability flags the backends offer (learned at start).
    pub backend_caps: AtomicU32,
    /// MariaDB's extended flags the backends offer (learned at start).
    pub backend_mariadb_caps: AtomicU32,
    pub health_events: broadcast::Sender<HealthEvent>,
    /// False once the proxy drains for shutdown.
    serving: AtomicBool,
    /// True from joining a cluster until every dataHost may be served.
    starting: AtomicBool,
    /// Whether the client listener is open (SPEC §4 offline / online).
    online: watch::Sender<bool>,
    /// This proxy's part in a cluster, once it has joined one.
    pub cluster: std::sync::OnceLock<Arc<dyn ClusterLink>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn serving(&self) -> Serving {
        if !self.serving.load(Ordering::Acquire) {
            Serving::Draining
        } else if !*self.online.borrow() {
            Serving::Offline
        } else if self.starting.load(Ordering::Acquire) {
            Serving::Starting
        } else {
            Serving::Serving
        }
    }

    /// Marks the proxy as starting (waiting for the keeper's topology) or
    /// ready to serve every dataHost.
    pub fn set_starting(&self, starting: bool) {
        self.starting.store(starting, Ordering::Release);
    }

    /// Takes the proxy offline (closes the client listener, every client
    /// session and every idle backend connection) or back online.
    pub fn set_online(&self, online: bool) {
        let changed = self
            .online
            .send_if_modified(|v| std::mem::replace(v, online) != online);
        if !changed {
            return;
        }
        metrics::gauge!("zerodb_proxy_online").set(if online { 1.0 } else { 0.0 });
        if online {
            tracing::warn!("back online: client listener reopened");
            return;
        }
        let sessions = self.registry.all();
        for s in &sessions {
            s.kill();
        }
        for dh in self.topology.datahosts() {
            for ds in &dh.datasources {
                ds.pool.flush_idle();
            }
        }
        tracing::error!(
            sessions = sessions.len(),
            "offline: client listener closed, sessions and backend connections closed"
        );
    }

    pub fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    /// Whether the proxy is shutting down (sessions close between
    /// statements; they are nudged when it starts).
    pub(crate) fn draining(&self) -> bool {
        !self.serving.load(Ordering::Acquire)
    }

    /// Capability flags offered to clients.
    pub fn offered_caps(&self) -> u32 {
        caps::OFFERED
            & (self.backend_caps.load(Ordering::Relaxed) | caps::PLUGIN_AUTH | caps::CONNECT_ATTRS)
    }

    /// The MariaDB flags offered to clients: only when the proxy presents
    /// itself as MariaDB (`CLIENT_MYSQL` off, as its backends do).
    pub fn offered_mariadb_caps(&self) -> u32 {
        if self.offered_caps() & caps::LONG_PASSWORD != 0 {
            return 0;
        }
        caps::mariadb::OFFERED & self.backend_mariadb_caps.load(Ordering::Relaxed)
    }
}

/// Errors building or starting a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A configured proxy, not yet listening.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Builds the topology from config. The datasource that starts active is
    /// `active` (or the first), under epoch 0.
    pub fn new(config: ProxyConfig) -> Self {
        let mut datahosts = Vec::new();
        let mut default = 0;
        for (i, dh) in config.datahosts.iter().enumerate() {
            if dh.default {
                default = i;
            }
            let sources: Vec<Arc<Datasource>> = dh
                .datasources
                .iter()
                .map(|d| {
                    let params = ConnectParams {
                        addr: d.addr.clone(),
                        user: dh.user.clone(),
                        password: dh.password.clone(),
                        connect_timeout: config.pool.connect_timeout,
                    };
                    Arc::new(Datasource {
                        name: d.name.clone(),
                        addr: d.addr.clone(),
                        pool: crate::pool::Pool::new(d.name.clone(), params, config.pool.clone()),
                        health: Default::default(),
                    })
                })
                .collect();
            let active = dh
                .active
                .as_ref()
                .and_then(|a| dh.datasources.iter().position(|d| &d.name == a))
                .unwrap_or(0);
            // `validate` guarantees a non-empty list and a known `active`.
            if let Some(h) = DataHost::new(dh.name.clone(), dh.schemas.clone(), sources, active, 0)
            {
                datahosts.push(Arc::new(h));
            }
        }
        let topology = Arc::new(Topology::new(datahosts, default, 0));
        let users = config
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect();
        let version = config
            .server_version
            .clone()
            .unwrap_or_else(|| "5.5.5-10.11.0-MariaDB-zeroDB".to_string());
        Self {
            shared: Arc::new(Shared {
                config,
                topology,
                users,
                registry: Registry::default(),
                hooks: Vec::new(),
                server_version: ArcSwap::from_pointee(version),
                backend_caps: AtomicU32::new(caps::OFFERED),
                backend_mariadb_caps: AtomicU32::new(0),
                health_events: broadcast::channel(256).0,
                serving: AtomicBool::new(true),
                starting: AtomicBool::new(false),
                online: watch::channel(true).0,
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Adds a statement hook (before `bind`).
    pub fn with_hook(mut self, hook: Arc<dyn StatementHook>) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.hooks.push(hook);
        }
        self
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Opens the client listener and learns the backends' version and
    /// capabilities from the default dataHost's active datasource.
    pub async fn bind(self) -> Result<BoundProxy, ServerError> {
        let listener = TcpListener::bind(&self.shared.config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: self.shared.config.listen.clone(),
                source,
            })?;
        learn_backend(&self.shared).await;
        Ok(BoundProxy {
            shared: self.shared,
            listener,
        })
    }
}

/// Runs `work` every `period` until `stop` changes or its sender is
/// dropped (the background tasks of [`BoundProxy::run`] end with it).
fn spawn_every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => work().await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// The session threads `config` asks for (`None`: sessions run on the
/// caller's runtime, as asked or because threads could not start).
fn start_workers(config: &ProxyConfig) -> Option<Workers> {
    let n = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if n == 0 {
        return None;
    }
    match Workers::start(n) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, threads = n, "cannot start session threads; sessions run on the main runtime");
            None
        }
    }
}

async fn learn_backend(shared: &Shared) {
    let active = shared.topology.default_datahost().active();
    let params = active.datasource.pool.params();
    match BackendConn::connect(params, BackendKey::default()).await {
        Ok(c) => {
            shared
                .backend_caps
                .store(c.server.capabilities, Ordering::Relaxed);
            shared
                .backend_mariadb_caps
                .store(c.server.mariadb_capabilities, Ordering::Relaxed);
            if shared.config.server_version.is_none() {
                shared
                    .server_version
                    .store(Arc::new(c.server.version.clone()));
            }
            tracing::info!(datasource = %active.datasource.name, version = %c.server.version, "backend reached");
        }
        Err(e) => {
            tracing::warn!(datasource = %active.datasource.name, error = %e, "backend not reachable at start; offering default capabilities")
        }
    }
}

/// A proxy with its listener open.
pub struct BoundProxy {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl BoundProxy {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `stop` resolves, then drains: the listener closes, the
    /// health endpoint answers 503, sessions finish the statement they are
    /// running and close, and after `shutdown_timeout` the rest are cut.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let (stop_bg, bg_rx) = watch::channel(false);
        for dh in shared.topology.datahosts() {
            for ds in &dh.datasources {
                tokio::spawn(health::probe_loop(
                    ds.clone(),
                    shared.config.health.clone(),
                    shared.health_events.clone(),
                    bg_rx.clone(),
                ));
                let pool = ds.pool.clone();
                spawn_every(Duration::from_secs(1), bg_rx.clone(), move || {
                    let pool = pool.clone();
                    async move { pool.maintain().await }
                });
            }
        }
        // A statement waiting on a datasource the probes mark down gives up
        // at once (its session is nudged, and sees the verdict).
        let mut events = shared.health_events.subscribe();
        let mut rx = bg_rx.clone();
        let nudged = shared.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = rx.changed() => return,
                };
                match event {
                    Ok(e) if e.up => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        nudged.registry.nudge_all()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let reclaiming = shared.clone();
        spawn_every(TICK, bg_rx.clone(), move || {
            reclaiming.registry.reclaim_idle_buffers();
            std::future::ready(())
        });
        let workers = start_workers(&shared.config);
        let limit = shared.config.max_connections;
        let permits = Arc::new(Semaphore::new(limit));
        tracing::info!(
            listen = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            session_threads = workers.as_ref().map_or(0, Workers::len),
            "accepting clients"
        );
        tokio::pin!(stop);
        let mut online = shared.online.subscribe();
        let mut listener = Some(self.listener);
        loop {
            let accept = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                Ok(()) = online.changed() => {
                    let on = *online.borrow_and_update();
                    if !on {
                        listener = None;
                    } else if listener.is_none() {
                        match TcpListener::bind(&shared.config.listen).await {
                            Ok(l) => listener = Some(l),
                            Err(e) => tracing::error!(listen = %shared.config.listen, error = %e, "cannot reopen the client listener"),
                        }
                    }
                }
                accepted = accept => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    metrics::counter!("zerodb_client_connections_total").increment(1);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let shared = shared.clone();
                            let session = move |stream| async move {
                                crate::session::run(shared, stream, peer).await;
                                drop(permit);
                            };
                            match &workers {
                                Some(w) => {
                                    if let Err(e) = w.spawn(stream, session) {
                                        tracing::warn!(%peer, error = %e, "cannot hand a client to a session thread");
                                    }
                                }
                                None => {
                                    tokio::spawn(session(stream));
                                }
                            }
                        }
                        Err(_) => {
                            metrics::counter!("zerodb_client_refused_total").increment(1);
                            tokio::spawn(crate::session::refuse(stream, crate::errors::ClientError::too_many_connections()));
                        }
                    }
                }
            }
        }
        drop(listener);
        shared.serving.store(false, Ordering::Release);
        shared.registry.nudge_all();
        tracing::info!(sessions = shared.registry.len(), "draining");
        let deadline = Instant::now() + shared.config.shutdown_timeout;
        while permits.available_permits() < limit && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = limit - permits.available_permits();
        if left > 0 {
            tracing::warn!(
                sessions = left,
                "shutdown timeout: cutting remaining sessions"
            );
        }
        if let Some(w) = workers {
            w.stop().await;
        }
        let _ = stop_bg.send(true);
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn attention_raised_before_the_wait_is_kept_and_taken_once() {
        let r = Registry::default();
        let h = r.register(peer());
        h.nudge();
        tokio::time::timeout(Duration::from_secs(1), h.attention())
            .await
            .expect("a nudge before the wait is not lost");
        let again = tokio::time::timeout(Duration::from_millis(50), h.attention()).await;
        assert!(again.is_err(), "one nudge wakes one wait");
    }

    #[tokio::test]
    async fn attention_wakes_a_waiting_session() {
        let r = Registry::default();
        let h = r.register(peer());
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.killed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A nudge alone does not end `killed`; a kill does.
        h.nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.kill();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("kill wakes the waiter")
            .expect("no panic");
    }

    #[test]
    fn idle_sessions_are_asked_for_their_buffers_busy_ones_are_not() {
        let r = Registry::default();
        let fresh = r.register(peer());
        let idle = r.register(peer());
        let running = r.register(peer());
        let recent = r.register(peer());
        // A new session gives its login's buffers back at its first wait.
        assert!(fresh.buffers_due_back());
        fresh.buffers_given_back();
        assert!(!fresh.buffers_due_back());

        idle.mark_command(Some(r.ticks()));
        running.mark_command(None);
        r.reclaim_idle_buffers();
        assert!(!idle.buffers_due_back(), "idle for less than two ticks");
        recent.mark_command(Some(r.ticks()));
        r.reclaim_idle_buffers();
        assert!(idle.buffers_due_back(), "idle for two ticks");
        assert!(!running.buffers_due_back(), "a command is running");
        assert!(!recent.buffers_due_back(), "finished a command just now");
        assert!(!fresh.buffers_due_back(), "holds nothing");
    }
}
