//! The proxy process: building the topology from config, the accept loop,
//! the session registry, background probes, and graceful shutdown.

use crate::backend::{BackendConn, BackendKey, ConnectParams};
use crate::config::ProxyConfig;
use crate::health::{self, HealthEvent};
use crate::hooks::StatementHook;
use crate::protocol::caps;
use crate::topology::{DataHost, Datasource, Topology};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify, Semaphore};

/// One live client session, as other sessions and the admin API see it.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u32,
    pub peer: SocketAddr,
    pub started: Instant,
    user: Mutex<String>,
    backend: Mutex<Option<(Arc<Datasource>, u32)>>,
    killed: AtomicBool,
    kill: Notify,
    /// Running a statement, or inside a transaction.
    busy: AtomicBool,
}

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
        self.kill.notify_one();
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

    pub(crate) async fn killed(&self) {
        if !self.is_killed() {
            self.kill.notified().await;
        }
    }
}

/// Live sessions by proxy connection id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Arc<SessionHandle>>>,
    next_id: AtomicU32,
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
            kill: Notify::new(),
            busy: AtomicBool::new(false),
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
}

/// Whether the proxy takes clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Serving {
    Serving,
    Draining,
    /// Offline by the proxy's own rules (SPEC §4): the listener is closed.
    Offline,
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
    serving: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Whether the client listener is open (SPEC §4 offline / online).
    online: watch::Sender<bool>,
    /// This proxy's part in a cluster, once it has joined one.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
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
        } else {
            Serving::Serving
        }
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

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
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
                shutdown: watch::channel(false).0,
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
                let mut rx = bg_rx.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            _ = tick.tick() => pool.maintain().await,
                            _ = rx.changed() => return,
                        }
                    }
                });
            }
        }
        let limit = shared.config.max_connections;
        let permits = Arc::new(Semaphore::new(limit));
        tracing::info!(listen = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "accepting clients");
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
                            tokio::spawn(async move {
                                crate::session::run(shared, stream, peer).await;
                                drop(permit);
                            });
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
        let _ = shared.shutdown.send(true);
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
        let _ = stop_bg.send(true);
        tracing::info!("stopped");
    }
}
