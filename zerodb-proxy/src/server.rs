//! The proxy process: building the topology from config, the accept loop,
//! background probes and upkeep, and graceful shutdown.

use crate::backend::{BackendConn, BackendKey, ConnectParams};
use crate::config::ProxyConfig;
use crate::health;
use crate::hooks::StatementHook;
use crate::protocol::caps;
use crate::registry::{Registry, TICK};
use crate::shared::Shared;
use crate::topology::{DataHost, Datasource, Topology};
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Semaphore};

/// Errors building or starting a proxy.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The client listener (`listen`) could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from `listen`.
        addr: String,
        /// The OS error (address in use, permission denied, …).
        source: std::io::Error,
    },
}

/// The dataHosts of `config` and their datasources (each with its pool),
/// the configured active ones active under epoch 0.
fn topology_of(config: &ProxyConfig) -> Topology {
    let mut datahosts = Vec::new();
    let mut default = 0;
    for (i, dh) in config.datahosts.iter().enumerate() {
        if dh.default {
            default = i;
        }
        let tls = dh.tls.client_or_refusing();
        let sources: Vec<Arc<Datasource>> = dh
            .datasources
            .iter()
            .map(|d| {
                let params = ConnectParams {
                    addr: d.addr.clone(),
                    user: dh.user.clone(),
                    password: dh.password.clone(),
                    connect_timeout: config.pool.connect_timeout,
                    tls: tls.clone(),
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
        if let Some(h) = DataHost::new(dh.name.clone(), dh.schemas.clone(), sources, active, 0) {
            datahosts.push(Arc::new(h));
        }
    }
    Topology::new(datahosts, default, 0)
}

/// A configured proxy, not yet listening.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// Builds the topology from config. The datasource that starts active is
    /// `active` (or the first), under epoch 0.
    pub fn new(config: ProxyConfig) -> Self {
        let topology = Arc::new(topology_of(&config));
        // `ProxyConfig::validate` resolved them already; a file or
        // variable gone since leaves no account rather than a wrong one.
        let users = crate::users::Users::resolve(&config.users).unwrap_or_else(|e| {
            tracing::error!(error = %e, "users: none can log in");
            crate::users::Users::default()
        });
        let version = config
            .server_version
            .clone()
            .unwrap_or_else(|| "5.5.5-10.11.0-MariaDB-zeroDB".to_string());
        let limits = config.limits.clone();
        // `ProxyConfig::validate` read them already; files gone since
        // leave TLS off (and `tls.require` refusing every client).
        let tls = config.tls.server_config().unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS is not offered");
            None
        });
        let operators = match &config.admin_token_file {
            Some(f) => zerodb_core::tokens::read_token_file(f).unwrap_or_else(|e| {
                tracing::error!(error = %e, "admin_token_file: no operator call will be accepted");
                Vec::new()
            }),
            None => Vec::new(),
        };
        Self {
            shared: Arc::new(Shared {
                in_force: ArcSwap::from_pointee(config.clone()),
                config_path: std::sync::OnceLock::new(),
                operators: zerodb_core::tokens::Tokens::new(operators),
                config,
                topology,
                users: ArcSwap::from_pointee(users),
                logins: Arc::default(),
                accounts: Default::default(),
                limits: ArcSwap::from_pointee(limits),
                host_blocks: Default::default(),
                tls: arc_swap::ArcSwapOption::new(tls),
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

    /// The state its sessions will share (config, topology, registry).
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
        check_fencing(&self.shared).await;
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

/// The proxy's background work until `stop` changes: a probe loop and pool
/// upkeep per datasource, nudging sessions when a datasource goes down,
/// and reclaiming idle sessions' buffers.
fn spawn_background(shared: &Arc<Shared>, stop: &watch::Receiver<bool>) {
    if shared.config.auth == crate::config::AuthMode::Backend {
        for dh in shared.topology.datahosts() {
            for ds in &dh.datasources {
                ds.pool.without_prewarming();
            }
        }
        let s = shared.clone();
        let every = shared.config.auth_refresh;
        spawn_every(every, stop.clone(), move || {
            let s = s.clone();
            async move {
                let timeout = s.config.pool.command_timeout;
                match s
                    .accounts
                    .refresh(&s.topology, &s.users, timeout, Duration::ZERO)
                    .await
                {
                    Ok(_) => tracing::debug!(
                        accounts = s.users.load().len(),
                        "accounts read from the datasource"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "auth: backend: accounts not read; the last ones stay")
                    }
                }
            }
        });
    }
    for dh in shared.topology.datahosts() {
        for ds in &dh.datasources {
            tokio::spawn(crate::probe::probe_loop(
                ds.clone(),
                shared.config.health.clone(),
                shared.health_events.clone(),
                stop.clone(),
            ));
            let pool = ds.pool.clone();
            spawn_every(Duration::from_secs(1), stop.clone(), move || {
                let pool = pool.clone();
                async move { pool.maintain().await }
            });
        }
    }
    // A statement waiting on a datasource the probes mark down gives up
    // at once (its session is nudged, and sees the verdict).
    let mut events = shared.health_events.subscribe();
    let mut rx = stop.clone();
    let nudged = shared.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = rx.changed() => return,
            };
            match event {
                Ok(e) if e.up => {}
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => nudged.registry.nudge_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let reclaiming = shared.clone();
    spawn_every(TICK, stop.clone(), move || {
        let wait = reclaiming.limits.load().wait_timeout;
        let wait_ticks = (wait.as_millis() / TICK.as_millis()).max(1);
        let closed = reclaiming
            .registry
            .tick(u64::try_from(wait_ticks).unwrap_or(u64::MAX));
        if closed > 0 {
            metrics::counter!("zerodb_limit_hits_total", "limit" => "wait_timeout")
                .increment(closed as u64);
        }
        std::future::ready(())
    });
}

/// A client connected: its session runs (on a session thread, if any)
/// while it holds one of `max_connections` permits; without one it is
/// refused with error 1040.
fn admit(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    workers: Option<&Workers>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    metrics::counter!("zerodb_client_connections_total").increment(1);
    if shared.host_blocks.is_blocked(peer.ip(), Instant::now()) {
        metrics::counter!("zerodb_limit_hits_total", "limit" => "max_connect_errors").increment(1);
        let e = crate::errors::ClientError::host_blocked(&peer.ip().to_string());
        tokio::spawn(crate::session::refuse(stream, e));
        return;
    }
    crate::limits::set_keepalive(
        socket2::SockRef::from(&stream),
        shared.limits.load().tcp_keepalive,
    );
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        metrics::counter!("zerodb_client_refused_total").increment(1);
        let e = crate::errors::ClientError::too_many_connections();
        tokio::spawn(crate::session::refuse(stream, e));
        return;
    };
    let shared = shared.clone();
    // The session's own future, with no async block around it: each poll
    // of a session task goes one frame less deep.
    let session = move |stream| crate::session::run(shared, stream, peer, permit);
    match workers {
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

/// Reports each dataHost whose login can write despite `read_only`: a
/// fenced former source would take its sessions' writes (SPEC §7).
async fn check_fencing(shared: &Shared) {
    for dh in shared.topology.datahosts() {
        let active = dh.active();
        let params = active.datasource.pool.params();
        let timeout = params.connect_timeout * 2;
        let Some(bypasses) = health::bypasses_read_only(params, timeout).await else {
            continue;
        };
        dh.set_login_bypasses_read_only(bypasses);
        metrics::gauge!("zerodb_login_bypasses_read_only", "datahost" => dh.name.clone())
            .set(if bypasses { 1.0 } else { 0.0 });
        if bypasses {
            tracing::warn!(datahost = %dh.name, user = %params.user,
                "this login holds SUPER or READ_ONLY ADMIN: its writes pass read_only, so fencing a former source cannot stop them; revoke them (REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM ...)");
        }
    }
}

/// A proxy with its listener open.
pub struct BoundProxy {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl BoundProxy {
    /// The address the client listener is bound to (the real port when
    /// `listen` asks for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state its sessions share (config, topology, registry).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `stop` resolves, then drains: the listener closes, the
    /// health endpoint answers 503, sessions finish the statement they are
    /// running and close, and after `shutdown_timeout` the rest are cut.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let shared = self.shared;
        let (stop_bg, bg_rx) = watch::channel(false);
        spawn_background(&shared, &bg_rx);
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
                    admit(&shared, &permits, workers.as_ref(), stream, peer);
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
