//! What every session of a proxy shares: its config, topology, users,
//! registry and hooks, and whether it serves.

use crate::config::ProxyConfig;
use crate::health::HealthEvent;
use crate::hooks::StatementHook;
use crate::limits::{HostBlocks, LimitsConfig};
use crate::protocol::caps;
use crate::registry::Registry;
use crate::topology::Topology;
use crate::users::{Logins, Users};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Whether the proxy takes clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Serving {
    /// Taking clients and serving every dataHost.
    Serving,
    /// Shutting down: the listener is closed and sessions end after their
    /// statement.
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
    /// The config the proxy started with. What a reload changes is read
    /// from the fields below (`users`, `limits`, the pools, the routes);
    /// [`Shared::config_in_force`] is the whole config in force.
    pub config: ProxyConfig,
    /// The config in force: the one it started with, or the last reload.
    pub(crate) in_force: ArcSwap<ProxyConfig>,
    /// The file the config came from (set by the binary; a proxy built in
    /// code has none and cannot reload).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Operators' tokens (`admin_token_file`; none: the admin calls that
    /// act are served only on a loopback listener).
    pub operators: zerodb_core::tokens::Tokens,
    /// Every dataHost and its active datasource.
    pub topology: Arc<Topology>,
    /// Client accounts (`users`), swapped whole by a reload.
    pub users: ArcSwap<Users>,
    /// How many sessions are logged in as each account.
    pub logins: Arc<Logins>,
    /// Reads of the datasources' accounts (`auth: backend`).
    pub accounts: crate::accounts::Refresher,
    /// Limits on each client (`limits`), swapped whole by a reload.
    pub limits: ArcSwap<LimitsConfig>,
    /// Client addresses refused after failed logins.
    pub host_blocks: HostBlocks,
    /// TLS offered to clients (`tls`; none: not offered), swapped whole by
    /// a reload.
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// Every live client session.
    pub registry: Registry,
    /// Hooks every statement text goes through, in order (see
    /// [`crate::server::Proxy::with_hook`]).
    pub hooks: Vec<Arc<dyn StatementHook>>,
    /// Version string sent to clients.
    pub server_version: ArcSwap<String>,
    /// Capability flags the backends offer (learned at start).
    pub backend_caps: AtomicU32,
    /// MariaDB's extended flags the backends offer (learned at start).
    pub backend_mariadb_caps: AtomicU32,
    /// Every state flip of a datasource, as the probes see it.
    pub health_events: broadcast::Sender<HealthEvent>,
    /// False once the proxy drains for shutdown.
    pub(crate) serving: AtomicBool,
    /// True from joining a cluster until every dataHost may be served.
    pub(crate) starting: AtomicBool,
    /// Whether the client listener is open (SPEC §4 offline / online).
    pub(crate) online: watch::Sender<bool>,
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
    /// The config in force (see [`crate::reload`]).
    pub fn config_in_force(&self) -> Arc<ProxyConfig> {
        self.in_force.load_full()
    }

    /// Whether the proxy takes clients now (what `/health` reports).
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

    /// Whether the client listener is open (see [`Shared::set_online`]).
    pub fn is_online(&self) -> bool {
        *self.online.borrow()
    }

    /// Whether the proxy is shutting down (sessions close between
    /// statements; they are nudged when it starts).
    pub(crate) fn draining(&self) -> bool {
        !self.serving.load(Ordering::Acquire)
    }

    /// Capability flags offered to clients: those of the backends, and
    /// those the proxy answers itself (authentication, connection
    /// attributes, compression unless `compression: false`).
    pub fn offered_caps(&self) -> u32 {
        let compress = if self.config.compression {
            caps::COMPRESS
        } else {
            0
        };
        // Compression is the proxy's alone, whatever the backends offer.
        let backends = self.backend_caps.load(Ordering::Relaxed) & !caps::COMPRESS;
        caps::OFFERED & (backends | caps::PLUGIN_AUTH | caps::CONNECT_ATTRS | compress)
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
