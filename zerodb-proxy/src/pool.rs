//! A bounded pool of backend connections for one datasource.
//!
//! Idle connections are kept per [`BackendKey`] (a client's session-shaping
//! flags and collation); the pool opens `min_idle` of the most-used key ahead
//! of demand and never holds more than `max_size` open.
//!
//! A connection coming back is reset at once (COM_RESET_CONNECTION: what its
//! session left open is rolled back and its locks released). A connection
//! lent from the idle list is cleaned first with COM_CHANGE_USER, which also
//! clears the current database and sets every session variable to the
//! global value in force *now*: a session starts as on a new connection,
//! even after a `SET GLOBAL`, and the exchange doubles as the health check.

use crate::backend::{BackendConn, BackendError, BackendKey, BackendLogin, ConnectParams};
use crate::protocol::status;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Pool settings (config keys under `pool:`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle connections kept open ahead of demand (for the most-used key).
    pub min_idle: usize,
    /// Most connections open to one datasource, idle and in use.
    pub max_size: usize,
    /// Close idle connections beyond `min_idle` after this long.
    #[serde(with = "zerodb_core::config::duration")]
    pub max_idle_time: Duration,
    /// How long a session waits for a connection when the pool is full.
    #[serde(with = "zerodb_core::config::duration")]
    pub acquire_timeout: Duration,
    /// `pool.connect_timeout`: limit on the TCP connect to a datasource
    /// (default 2s); the login gets twice this.
    #[serde(with = "zerodb_core::config::duration")]
    pub connect_timeout: Duration,
    /// `pool.command_timeout`: limit on each exchange the proxy has with a
    /// datasource outside a client's statement (cleaning a connection
    /// before it is lent, resetting it when it comes back, replaying a
    /// session's state, a KILL); past it the connection is dropped.
    #[serde(with = "zerodb_core::config::duration")]
    pub command_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_idle: 4,
            max_size: 1024,
            max_idle_time: Duration::from_secs(300),
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(10),
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed in use for `pool.acquire_timeout`.
    #[error("pool for {datasource} is exhausted ({max} connections) after waiting {waited:?}")]
    Exhausted {
        /// The datasource's name.
        datasource: String,
        /// Its `pool.max_size`.
        max: usize,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The named datasource is out of service: it is not its dataHost's
    /// active one.
    #[error("datasource {0} is not in service")]
    Disabled(String),
    /// Opening a new connection failed (connect or login).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

struct Idle {
    conn: BackendConn,
    permit: OwnedSemaphorePermit,
}

/// What idle connections are kept by: the session shape and the login
/// (connections of one account are never lent to another).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IdleKey {
    key: BackendKey,
    login: Arc<BackendLogin>,
}

/// Connection pool of one datasource.
pub struct Pool {
    name: String,
    params: ConnectParams,
    /// `pool:`; a reload swaps it (see [`Pool::reconfigure`]).
    cfg: arc_swap::ArcSwap<PoolConfig>,
    permits: Arc<Semaphore>,
    /// Permits the semaphore holds in all, lent or not: `max_size`, give
    /// or take permits a shrink has yet to take back.
    capacity: std::sync::atomic::AtomicUsize,
    idle: Mutex<HashMap<IdleKey, Vec<Idle>>>,
    /// The key most recently asked for with the dataHost's own login: what
    /// prewarming opens (`None`: no prewarming, see [`Pool::without_prewarming`]).
    hot_key: Mutex<Option<IdleKey>>,
    /// The dataHost's own login (`params`), for [`Pool::acquire`].
    own_login: Arc<BackendLogin>,
    enabled: AtomicBool,
    /// The status flags of a fresh session on this server, as the last
    /// login or reset here said ([`Pool::fresh_status`]).
    fresh_status: AtomicU16,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A connection lent by a pool; goes back (reset) when dropped, unless
/// marked broken.
pub struct PooledConn {
    conn: Option<BackendConn>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl PooledConn {
    /// Closes the connection (with COM_QUIT) instead of giving it back. For
    /// a session that ends inside a transaction: a reset rolls an ordinary
    /// transaction back, but an `XA PREPARE`d one stays attached to the
    /// connection and would hold the next session in its PREPARED state.
    /// Closing detaches it, as a client's disconnect does on a direct
    /// connection, so `XA RECOVER` and `XA COMMIT` elsewhere find it.
    pub fn close(mut self) {
        self.conn.take();
    }
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("conn", &self.conn)
            .finish()
    }
}

impl Deref for PooledConn {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if conn.broken || !self.pool.is_enabled() {
            return;
        }
        let pool = self.pool.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { pool.give_back(conn, permit).await });
        }
    }
}

impl Pool {
    /// An empty pool for the datasource `name`, in service; connections open
    /// on demand and in [`Pool::maintain`].
    pub fn new(name: impl Into<String>, params: ConnectParams, cfg: PoolConfig) -> Arc<Self> {
        let own_login = Arc::new(params.login());
        Arc::new(Self {
            name: name.into(),
            permits: Arc::new(Semaphore::new(cfg.max_size)),
            capacity: cfg.max_size.into(),
            params,
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            idle: Mutex::new(HashMap::new()),
            hot_key: Mutex::new(Some(IdleKey {
                key: BackendKey::default(),
                login: own_login.clone(),
            })),
            own_login,
            enabled: AtomicBool::new(true),
            fresh_status: AtomicU16::new(status::AUTOCOMMIT),
        })
    }

    /// The datasource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit on its exchanges outside statements (`pool.command_timeout`).
    pub fn command_timeout(&self) -> Duration {
        self.cfg.load().command_timeout
    }

    /// Where and as whom the pool connects.
    pub fn params(&self) -> &ConnectParams {
        &self.params
    }

    /// The pool's settings (`pool:`).
    pub fn config(&self) -> Arc<PoolConfig> {
        self.cfg.load_full()
    }

    /// Takes new settings. A larger `max_size` takes effect at once; a
    /// smaller one closes the idle connections and takes back the
    /// difference as lent connections come back (none is cut short).
    pub fn reconfigure(self: &Arc<Self>, cfg: PoolConfig) {
        let (new, old) = (cfg.max_size, self.cfg.load().max_size);
        self.cfg.store(Arc::new(cfg));
        if new > old {
            self.permits.add_permits(new - old);
            self.capacity.fetch_add(new - old, Ordering::AcqRel);
        } else if new < old {
            self.flush_idle();
            let pool = self.clone();
            tokio::spawn(async move {
                for _ in new..old {
                    let Ok(p) = pool.permits.acquire().await else {
                        return;
                    };
                    p.forget();
                    pool.capacity.fetch_sub(1, Ordering::AcqRel);
                }
            });
        }
    }

    /// Whether the datasource is in service (see [`Pool::set_enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Takes the datasource in or out of service. Out of service, idle
    /// connections are closed and returned ones are not kept.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
        if !on {
            self.lock_idle().clear();
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<IdleKey, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every idle connection; returns how many.
    pub fn flush_idle(&self) -> usize {
        let mut idle = self.lock_idle();
        let n = idle.values().map(Vec::len).sum();
        idle.clear();
        n
    }

    /// Connections open now (idle and lent).
    pub fn open(&self) -> usize {
        self.capacity
            .load(Ordering::Acquire)
            .saturating_sub(self.permits.available_permits())
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        self.lock_idle().values().map(Vec::len).sum()
    }

    fn pop_idle(&self, key: &IdleKey) -> Option<Idle> {
        self.lock_idle().get_mut(key).and_then(Vec::pop)
    }

    /// Closes one idle connection of another key to make room.
    fn evict_other(&self, key: &IdleKey) -> bool {
        let mut idle = self.lock_idle();
        for (k, v) in idle.iter_mut() {
            if k != key && v.pop().is_some() {
                return true;
            }
        }
        false
    }

    /// Lends a connection with the given key, logged in as the dataHost's
    /// own user.
    pub async fn acquire(self: &Arc<Self>, key: BackendKey) -> Result<PooledConn, PoolError> {
        self.acquire_as(key, None).await
    }

    /// Lends a connection with the given key, logged in as `login` (the
    /// dataHost's own user for `None`).
    pub async fn acquire_as(
        self: &Arc<Self>,
        key: BackendKey,
        login: Option<&Arc<BackendLogin>>,
    ) -> Result<PooledConn, PoolError> {
        if !self.is_enabled() {
            return Err(PoolError::Disabled(self.name.clone()));
        }
        let key = IdleKey {
            key,
            login: login.unwrap_or(&self.own_login).clone(),
        };
        if login.is_none() {
            let mut hot = self.hot_key.lock().unwrap_or_else(|e| e.into_inner());
            if hot.is_some() {
                *hot = Some(key.clone());
            }
        }
        let started = Instant::now();
        loop {
            if let Some(Idle { mut conn, permit }) = self.pop_idle(&key) {
                // Polled from here on by the borrower's own thread.
                if conn.conn.rehome().is_err()
                    || !matches!(
                        tokio::time::timeout(self.command_timeout(), conn.change_user(),).await,
                        Ok(Ok(_))
                    )
                {
                    metrics::counter!("zerodb_pool_stale_total", "datasource" => self.name.clone())
                        .increment(1);
                    continue;
                }
                return Ok(self.lend(conn, permit));
            }
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) if self.evict_other(&key) => continue,
                Err(_) => {
                    let left = self
                        .cfg
                        .load()
                        .acquire_timeout
                        .saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, self.permits.clone().acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        _ => {
                            return Err(PoolError::Exhausted {
                                datasource: self.name.clone(),
                                max: self.cfg.load().max_size,
                                waited: started.elapsed(),
                            })
                        }
                    }
                }
            };
            let conn = self.connect(&key).await?;
            return Ok(self.lend(conn, permit));
        }
    }

    async fn connect(&self, key: &IdleKey) -> Result<BackendConn, BackendError> {
        let r = BackendConn::connect_as(&self.params, key.key, key.login.clone()).await;
        if let Ok(c) = &r {
            self.saw_fresh(c.status);
        }
        let outcome = if r.is_ok() { "ok" } else { "error" };
        metrics::counter!("zerodb_pool_connects_total", "datasource" => self.name.clone(), "result" => outcome)
            .increment(1);
        r
    }

    fn saw_fresh(&self, flags: u16) {
        self.fresh_status
            .store(flags & status::OF_A_FRESH_SESSION, Ordering::Relaxed);
    }

    /// The flags of [`status::OF_A_FRESH_SESSION`] a new session on this
    /// server starts with (`autocommit`, NO_BACKSLASH_ESCAPES), as of the
    /// last connection this pool opened or reset: what the proxy's login
    /// OK says, before any server is bound. A `SET GLOBAL` shows from the
    /// next connection opened or given back.
    pub fn fresh_status(&self) -> u16 {
        self.fresh_status.load(Ordering::Relaxed)
    }

    fn lend(self: &Arc<Self>, conn: BackendConn, permit: OwnedSemaphorePermit) -> PooledConn {
        PooledConn {
            conn: Some(conn),
            permit: Some(permit),
            pool: self.clone(),
        }
    }

    /// Resets a returned connection (rolling back what its session left
    /// open) and keeps it idle.
    async fn give_back(&self, mut conn: BackendConn, permit: OwnedSemaphorePermit) {
        let reset = tokio::time::timeout(self.command_timeout(), conn.reset()).await;
        if !matches!(reset, Ok(Ok(_))) || !self.is_enabled() {
            return;
        }
        self.saw_fresh(conn.status);
        conn.conn.release_buffers();
        let key = IdleKey {
            key: conn.key,
            login: conn.login.clone(),
        };
        self.lock_idle()
            .entry(key)
            .or_default()
            .push(Idle { conn, permit });
    }

    /// One round of upkeep: close connections idle too long, then open
    /// connections of the hot key up to `min_idle`.
    pub async fn maintain(self: &Arc<Self>) {
        if !self.is_enabled() {
            return;
        }
        let cfg = self.config();
        {
            let mut idle = self.lock_idle();
            let max_idle = cfg.max_idle_time;
            for (k, v) in idle.iter_mut() {
                // Oldest first; keep at least `min_idle` of the dataHost's
                // own login, none of an account's (`auth: backend`).
                let min = if Arc::ptr_eq(&k.login, &self.own_login) {
                    cfg.min_idle
                } else {
                    0
                };
                while v.len() > min
                    && v.first()
                        .is_some_and(|x| x.conn.last_used.elapsed() > max_idle)
                {
                    v.remove(0);
                }
            }
            idle.retain(|_, v| !v.is_empty());
        }
        let Some(key) = self
            .hot_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return self.gauges();
        };
        let have = self.lock_idle().get(&key).map_or(0, Vec::len);
        for _ in have..cfg.min_idle {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match self.connect(&key).await {
                Ok(mut conn) => {
                    conn.conn.release_buffers();
                    if !self.is_enabled() {
                        break;
                    }
                    self.lock_idle()
                        .entry(key.clone())
                        .or_default()
                        .push(Idle { conn, permit });
                }
                Err(e) => {
                    tracing::debug!(datasource = %self.name, error = %e, "prewarm failed");
                    break;
                }
            }
        }
        self.gauges();
    }

    fn gauges(&self) {
        metrics::gauge!("zerodb_pool_open", "datasource" => self.name.clone())
            .set(self.open() as f64);
        metrics::gauge!("zerodb_pool_idle", "datasource" => self.name.clone())
            .set(self.idle_count() as f64);
    }

    /// Opens no connection ahead of demand. For `auth: backend`, where
    /// sessions log in as their own accounts: connections of the
    /// dataHost's login would serve none of them, and ones opened ahead as
    /// some account would count against its `MAX_USER_CONNECTIONS`.
    pub fn without_prewarming(&self) {
        *self.hot_key.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_size: usize) -> Arc<Pool> {
        let params = ConnectParams {
            addr: "127.0.0.1:1".into(),
            user: "u".into(),
            password: String::new(),
            connect_timeout: Duration::from_millis(10),
            tls: None,
        };
        let cfg = PoolConfig {
            max_size,
            ..PoolConfig::default()
        };
        Pool::new("m1", params, cfg)
    }

    /// Lets the shrinking task run until the pool's capacity is `want`.
    async fn settle(p: &Pool, want: usize) {
        for _ in 0..100 {
            if p.capacity.load(Ordering::Acquire) == want {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("capacity stayed {}", p.capacity.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_resize_grows_at_once_and_shrinks_as_connections_come_back() {
        let p = pool(4);
        // Three connections lent (their permits held).
        let lent: Vec<_> = (0..3)
            .map(|_| p.permits.clone().try_acquire_owned().unwrap())
            .collect();
        assert_eq!(p.open(), 3);
        p.reconfigure(PoolConfig {
            max_size: 2,
            ..PoolConfig::default()
        });
        settle(&p, 3).await;
        assert_eq!(p.open(), 3, "nothing lent is cut short");
        assert!(p.permits.clone().try_acquire_owned().is_err(), "full");
        drop(lent);
        settle(&p, 2).await;
        assert_eq!((p.open(), p.permits.available_permits()), (0, 2));
        p.reconfigure(PoolConfig {
            max_size: 5,
            ..PoolConfig::default()
        });
        assert_eq!(p.permits.available_permits(), 5);
        assert_eq!(p.config().max_size, 5);
        assert_eq!(p.open(), 0);
    }
}
