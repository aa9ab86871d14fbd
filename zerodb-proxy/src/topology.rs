//! Which datasource is active for each dataHost, swapped atomically.
//!
//! Readers (every statement of every session) load the active datasource of
//! their dataHost from an [`ArcSwap`]: a few nanoseconds, no lock. Writers
//! (the keeper's pushes, an operator, tests) go through [`Topology::apply`],
//! which refuses any epoch not newer than the one in force, so a stale or
//! replayed topology can never win.

use crate::health::Health;
use crate::pool::Pool;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One MySQL/MariaDB server.
#[derive(Debug)]
pub struct Datasource {
    /// Its name in config (`mysql_1`).
    pub name: String,
    /// Its address, `host:port`.
    pub addr: String,
    /// The pool sessions borrow connections from; in service only while
    /// the datasource is its dataHost's active one.
    pub pool: Arc<Pool>,
    /// What the prober knows of it.
    pub health: Health,
}

/// The active datasource of a dataHost and the epoch that made it so.
#[derive(Debug, Clone)]
pub struct Active {
    /// The datasource that takes the dataHost's statements.
    pub datasource: Arc<Datasource>,
    /// The epoch that made it active (0: the config's, before any
    /// topology from a keeper or operator).
    pub epoch: u64,
}

/// A logical database: one active datasource and its standbys.
#[derive(Debug)]
pub struct DataHost {
    /// Its name in config (`datahosts[].name`).
    pub name: String,
    /// The schemas routed to it (`datahosts[].schemas`; a reload may
    /// change them, see [`Topology::reroute`]).
    schemas: ArcSwap<Vec<String>>,
    /// Every datasource of it, active and standbys, in config order.
    pub datasources: Vec<Arc<Datasource>>,
    active: ArcSwap<Active>,
    /// Bumped after every store of `active`: a session that reads the
    /// number it read when it bound still has the active datasource,
    /// without loading the `ArcSwap` (see [`DataHost::generation`]).
    generation: std::sync::atomic::AtomicU64,
    /// Bumped on every swap (buffered statements wait on it).
    swaps: tokio::sync::watch::Sender<u64>,
    /// Statements waiting for a usable active datasource.
    buffered: std::sync::atomic::AtomicUsize,
    /// Held for a planned switchover until this instant (see [`DataHost::hold`]).
    held_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// Whether `held_until` is set: every statement asks, and almost always
    /// the answer is no, without a lock or a clock read.
    held: std::sync::atomic::AtomicBool,
    /// The proxy's login here may write despite `read_only` (see
    /// [`DataHost::set_login_bypasses_read_only`]).
    login_bypasses_read_only: std::sync::atomic::AtomicBool,
}

/// A place in a dataHost's statement buffer, given back on drop.
pub struct BufferSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for BufferSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl DataHost {
    /// A dataHost whose datasource at index `active` is active under
    /// `epoch`; only that one's pool is left in service. `None` when `active`
    /// is out of range.
    pub fn new(
        name: String,
        schemas: Vec<String>,
        datasources: Vec<Arc<Datasource>>,
        active: usize,
        epoch: u64,
    ) -> Option<Self> {
        let first = datasources.get(active)?.clone();
        for (i, ds) in datasources.iter().enumerate() {
            ds.pool.set_enabled(i == active);
        }
        Some(Self {
            name,
            schemas: ArcSwap::from_pointee(schemas),
            datasources,
            active: ArcSwap::from_pointee(Active {
                datasource: first,
                epoch,
            }),
            generation: Default::default(),
            swaps: tokio::sync::watch::channel(0).0,
            buffered: Default::default(),
            held_until: std::sync::Mutex::new(None),
            held: Default::default(),
            login_bypasses_read_only: Default::default(),
        })
    }

    /// Holds new statements (outside transactions) for up to `max`, or
    /// releases them (`None`); a swap releases them too.
    pub fn hold(&self, max: Option<std::time::Duration>) {
        self.set_held_until(max.map(|m| std::time::Instant::now() + m));
        self.swaps.send_modify(|n| *n += 1);
    }

    /// Holds new statements until [`DataHost::hold`]`(None)` releases them.
    pub fn hold_until_released(&self) {
        // A year stands for "until released": an `Instant` this far ahead
        // cannot overflow.
        self.hold(Some(std::time::Duration::from_secs(365 * 24 * 3600)));
    }

    fn set_held_until(&self, until: Option<std::time::Instant>) {
        let mut held = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        *held = until;
        self.held
            .store(until.is_some(), std::sync::atomic::Ordering::Release);
    }

    /// Whether new statements are held now (see [`DataHost::hold`]); a hold
    /// that has run out ends here.
    pub fn is_held(&self) -> bool {
        if !self.held.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let mut until = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|t| std::time::Instant::now() < t) {
            return true;
        }
        // A hold that ran out is over: later statements skip the lock again.
        *until = None;
        self.held.store(false, std::sync::atomic::Ordering::Release);
        false
    }

    /// Records whether the proxy's login to this dataHost holds `SUPER` or
    /// `READ_ONLY ADMIN`: its sessions could then write to a fenced former
    /// source (SPEC §7: fencing that cannot hold is reported).
    pub fn set_login_bypasses_read_only(&self, bypasses: bool) {
        self.login_bypasses_read_only
            .store(bypasses, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`DataHost::set_login_bypasses_read_only`].
    pub fn login_bypasses_read_only(&self) -> bool {
        self.login_bypasses_read_only
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that changes on every swap of the active datasource.
    pub fn watch_swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    /// A place among at most `max` statements waiting on this dataHost.
    pub fn buffer_slot(&self, max: usize) -> Option<BufferSlot<'_>> {
        use std::sync::atomic::Ordering;
        let n = self.buffered.fetch_add(1, Ordering::AcqRel);
        let slot = BufferSlot(&self.buffered);
        (n < max).then_some(slot)
    }

    /// The active datasource now.
    #[inline]
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// A number that changes whenever the active datasource may have. Read
    /// it before looking at the active datasource: while it reads the same
    /// later, that datasource is still the active one.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `ds` is the active datasource now (cheap: no refcount).
    #[inline]
    pub fn is_active(&self, ds: &Arc<Datasource>) -> bool {
        Arc::ptr_eq(&self.active.load().datasource, ds)
    }

    /// The schemas routed to it now.
    pub fn schemas(&self) -> Arc<Vec<String>> {
        self.schemas.load_full()
    }

    /// Its datasource named `name`, if any.
    pub fn datasource(&self, name: &str) -> Option<&Arc<Datasource>> {
        self.datasources.iter().find(|d| d.name == name)
    }
}

/// Why a topology change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// The change's epoch is not newer than the one in force (a stale or
    /// replayed topology).
    #[error("epoch {offered} is not newer than the epoch in force, {current}")]
    StaleEpoch {
        /// The epoch in force.
        current: u64,
        /// The epoch the change carried.
        offered: u64,
    },
    /// The change names a dataHost this proxy does not serve.
    #[error("no dataHost named {0}")]
    UnknownDataHost(String),
    /// The change names a datasource its dataHost does not have.
    #[error("dataHost {datahost} has no datasource named {datasource}")]
    UnknownDatasource {
        /// The dataHost's name.
        datahost: String,
        /// The unknown datasource's name.
        datasource: String,
    },
}

/// One datasource swap that took effect.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Swap {
    /// The dataHost's name.
    pub datahost: String,
    /// The datasource active before (the same as `to` when the change
    /// only stamped a new epoch).
    pub from: String,
    /// The datasource active now.
    pub to: String,
    /// The epoch the swap took effect under.
    pub epoch: u64,
}

/// Every dataHost of a proxy, and how schemas route to them.
#[derive(Debug)]
pub struct Topology {
    datahosts: Vec<Arc<DataHost>>,
    routes: ArcSwap<Routes>,
    /// The epoch in force; the mutex also serialises writers.
    epoch: Mutex<u64>,
}

/// Which dataHost serves each schema.
#[derive(Debug)]
struct Routes {
    by_schema: HashMap<String, usize>,
    /// The dataHost of unmapped schemas.
    default: usize,
}

impl Routes {
    fn of(datahosts: &[Arc<DataHost>], default: usize) -> Self {
        let mut by_schema = HashMap::new();
        for (i, dh) in datahosts.iter().enumerate() {
            for s in dh.schemas.load().iter() {
                by_schema.entry(s.clone()).or_insert(i);
            }
        }
        Self { by_schema, default }
    }
}

impl Topology {
    /// `default` is the index of the dataHost for unmapped schemas.
    pub fn new(datahosts: Vec<Arc<DataHost>>, default: usize, epoch: u64) -> Self {
        let routes = Routes::of(&datahosts, default);
        Self {
            datahosts,
            routes: ArcSwap::from_pointee(routes),
            epoch: Mutex::new(epoch),
        }
    }

    /// Routes schemas anew: `schemas` gives each dataHost's list, in the
    /// order of [`Topology::datahosts`]; `default` is the index of the one
    /// serving unmapped schemas. Sessions route by it from their next
    /// `USE` or login; a session stays where it is until then.
    pub fn reroute(&self, schemas: Vec<Vec<String>>, default: usize) -> Result<(), TopologyError> {
        if schemas.len() != self.datahosts.len() || default >= self.datahosts.len() {
            return Err(TopologyError::UnknownDataHost(format!(
                "routes for {} dataHosts (default {default}) given to {}",
                schemas.len(),
                self.datahosts.len()
            )));
        }
        for (dh, list) in self.datahosts.iter().zip(schemas) {
            dh.schemas.store(Arc::new(list));
        }
        self.routes
            .store(Arc::new(Routes::of(&self.datahosts, default)));
        Ok(())
    }

    /// Every dataHost, in config order.
    pub fn datahosts(&self) -> &[Arc<DataHost>] {
        &self.datahosts
    }

    /// The dataHost named `name`, if any.
    pub fn datahost(&self, name: &str) -> Option<&Arc<DataHost>> {
        self.datahosts.iter().find(|d| d.name == name)
    }

    /// The dataHost serving `schema` (the default one when unmapped).
    pub fn route(&self, schema: Option<&[u8]>) -> &Arc<DataHost> {
        let routes = self.routes.load();
        let i = schema
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| routes.by_schema.get(s).copied())
            .unwrap_or(routes.default);
        &self.datahosts[i]
    }

    /// The dataHost serving unmapped schemas and sessions without one
    /// (`datahosts[].default`, else the first).
    pub fn default_datahost(&self) -> &Arc<DataHost> {
        &self.datahosts[self.routes.load().default]
    }

    /// The epoch in force.
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes each named datasource the active one of its dataHost, all under
    /// `epoch`, which must be newer than the epoch in force. Either every
    /// change is valid and all take effect, or none does.
    pub fn apply(&self, epoch: u64, changes: &[(&str, &str)]) -> Result<Vec<Swap>, TopologyError> {
        let mut current = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        if epoch <= *current {
            return Err(TopologyError::StaleEpoch {
                current: *current,
                offered: epoch,
            });
        }
        let mut plan = Vec::with_capacity(changes.len());
        for (dh_name, ds_name) in changes {
            let dh = self
                .datahost(dh_name)
                .ok_or_else(|| TopologyError::UnknownDataHost(dh_name.to_string()))?;
            let ds = dh
                .datasource(ds_name)
                .ok_or_else(|| TopologyError::UnknownDatasource {
                    datahost: dh_name.to_string(),
                    datasource: ds_name.to_string(),
                })?;
            plan.push((dh, ds.clone()));
        }
        let mut swaps = Vec::with_capacity(plan.len());
        for (dh, ds) in plan {
            let old = dh.active();
            ds.pool.set_enabled(true);
            dh.active.store(Arc::new(Active {
                datasource: ds.clone(),
                epoch,
            }));
            dh.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            dh.set_held_until(None);
            dh.swaps.send_modify(|n| *n += 1);
            if !Arc::ptr_eq(&old.datasource, &ds) {
                old.datasource.pool.set_enabled(false);
                tracing::warn!(datahost = %dh.name, from = %old.datasource.name, to = %ds.name, epoch, "active datasource swapped");
                metrics::counter!("zerodb_swaps_total", "datahost" => dh.name.clone()).increment(1);
            }
            swaps.push(Swap {
                datahost: dh.name.clone(),
                from: old.datasource.name.clone(),
                to: ds.name.clone(),
                epoch,
            });
        }
        *current = epoch;
        metrics::gauge!("zerodb_topology_epoch").set(epoch as f64);
        Ok(swaps)
    }

    /// Swaps one dataHost's active datasource (see [`Topology::apply`]).
    pub fn swap_active(
        &self,
        datahost: &str,
        datasource: &str,
        epoch: u64,
    ) -> Result<Swap, TopologyError> {
        let mut v = self.apply(epoch, &[(datahost, datasource)])?;
        Ok(v.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConnectParams;
    use crate::pool::PoolConfig;
    use std::time::Duration;

    fn ds(name: &str) -> Arc<Datasource> {
        let params = ConnectParams {
            addr: "127.0.0.1:1".into(),
            user: "u".into(),
            password: String::new(),
            connect_timeout: Duration::from_millis(10),
            tls: None,
        };
        Arc::new(Datasource {
            name: name.into(),
            addr: params.addr.clone(),
            pool: Pool::new(name, params, PoolConfig::default()),
            health: Health::default(),
        })
    }

    fn topo() -> Topology {
        let a = DataHost::new(
            "dh1".into(),
            vec!["app".into()],
            vec![ds("m1"), ds("m11")],
            0,
            1,
        )
        .unwrap();
        let b = DataHost::new(
            "dh2".into(),
            vec!["logs".into()],
            vec![ds("m2"), ds("m22")],
            0,
            1,
        )
        .unwrap();
        Topology::new(vec![Arc::new(a), Arc::new(b)], 0, 1)
    }

    #[test]
    fn routes_by_schema_with_default() {
        let t = topo();
        assert_eq!(t.route(Some(b"logs")).name, "dh2");
        assert_eq!(t.route(Some(b"app")).name, "dh1");
        assert_eq!(t.route(Some(b"other")).name, "dh1");
        assert_eq!(t.route(None).name, "dh1");
        t.reroute(
            vec![vec!["app".into()], vec!["logs".into(), "other".into()]],
            1,
        )
        .unwrap();
        assert_eq!(t.route(Some(b"other")).name, "dh2");
        assert_eq!(t.route(Some(b"unmapped")).name, "dh2");
        assert_eq!(t.default_datahost().name, "dh2");
        assert_eq!(*t.datahost("dh2").unwrap().schemas(), ["logs", "other"]);
        assert!(t.reroute(vec![vec![]], 0).is_err(), "one list per dataHost");
        assert_eq!(
            t.route(Some(b"app")).name,
            "dh1",
            "unchanged by a refused one"
        );
    }

    #[test]
    fn swap_needs_a_newer_epoch() {
        let t = topo();
        let dh = t.datahost("dh1").unwrap().clone();
        let before = dh.active().datasource.clone();
        assert_eq!(
            t.swap_active("dh1", "m11", 1),
            Err(TopologyError::StaleEpoch {
                current: 1,
                offered: 1
            })
        );
        assert!(dh.is_active(&before));
        let s = t.swap_active("dh1", "m11", 5).unwrap();
        assert_eq!((s.from.as_str(), s.to.as_str(), s.epoch), ("m1", "m11", 5));
        assert_eq!(dh.active().datasource.name, "m11");
        assert_eq!(dh.active().epoch, 5);
        assert!(!before.pool.is_enabled());
        assert!(dh.active().datasource.pool.is_enabled());
        assert!(
            t.swap_active("dh1", "m1", 4).is_err(),
            "older epoch refused"
        );
        assert_eq!(t.epoch(), 5);
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let t = topo();
        let err = t.apply(9, &[("dh1", "m11"), ("dh2", "nope")]).unwrap_err();
        assert!(matches!(err, TopologyError::UnknownDatasource { .. }));
        assert_eq!(t.datahost("dh1").unwrap().active().datasource.name, "m1");
        assert_eq!(t.epoch(), 1);
        let swaps = t.apply(9, &[("dh1", "m11"), ("dh2", "m22")]).unwrap();
        assert_eq!(swaps.len(), 2);
        assert_eq!(t.datahost("dh2").unwrap().active().epoch, 9);
    }
}
