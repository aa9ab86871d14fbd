//! Binding a backend connection: keeping the one the session holds while it
//! still leads to the active datasource, moving to the new active one
//! (with the state replayed) after a swap, waiting for a switch while the
//! active datasource is down, and letting a connection go.

use super::state::ReplayError;
use super::{Bound, BusyOnDrop, Session};
use crate::backend::BackendError;
use crate::errors::ClientError;
use crate::pool::{PoolError, PooledConn};
use crate::topology::{Active, Datasource};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors a server answers a login with that are about the account (access
/// denied, to a database, its connection limit, locked, password expired):
/// under `auth: backend` the client's own, passed on as they are.
const ACCOUNT_REFUSALS: [u16; 6] = [1044, 1045, 1226, 4151, 1820, 1862];

impl Session {
    /// Makes sure the session holds a connection to its dataHost's active
    /// datasource, moving it (with its state) when the active one changed.
    pub(super) async fn ensure_backend(&mut self) -> Result<(), ClientError> {
        if self.backend_is_current() {
            Ok(())
        } else {
            Box::pin(self.rebind()).await
        }
    }

    /// The common case of [`Self::ensure_backend`], decided without
    /// waiting and without cloning the active datasource's `Arc` (a cache
    /// line all sessions share): the session's connection leads to the
    /// active datasource, which is up and not held, and the server has not
    /// closed it.
    pub(super) fn backend_is_current(&mut self) -> bool {
        self.notice_switch_in_transaction();
        if self.st.doomed.is_some() {
            return false;
        }
        let held = self.datahost.is_held() && !self.st.in_transaction();
        self.backend.as_mut().is_some_and(|b| {
            !held
                && b.ds.health.is_up()
                && b.still_active(&self.datahost)
                && !b.conn.conn.peer_gone()
        })
    }

    /// [`Self::ensure_backend`] when the connection the session holds (if
    /// any) will not do as it is. Callers box it: it is rare, and its
    /// future (a pool connect and the state replay, 1.4 KiB) would
    /// otherwise sit in every session's state, between the fields every
    /// statement touches.
    pub(super) async fn rebind(&mut self) -> Result<(), ClientError> {
        if let Some(why) = &self.st.doomed {
            return Err(ClientError::transaction_lost(why));
        }
        let held = self.datahost.is_held() && !self.st.in_transaction();
        let generation = self.datahost.generation();
        let mut active = self.datahost.active();
        // A datasource the probes marked down gets no new statement: it may
        // be paused rather than dead, and what it would run when it resumes
        // could be lost to a switch. Outside a transaction the statement
        // waits for the switch instead (buffering).
        if held || !active.datasource.health.is_up() {
            if self.backend.is_some() && !held {
                self.lose_backend(format!(
                    "datasource '{}' was marked down by health probes",
                    active.datasource.name
                ));
                if let Some(why) = &self.st.doomed {
                    return Err(ClientError::transaction_lost(why));
                }
            }
            active = self.await_usable_active().await?;
        }
        if let Some(b) = self.backend.as_mut() {
            if Arc::ptr_eq(&b.ds, &active.datasource) {
                if !b.conn.conn.peer_gone() {
                    return Ok(());
                }
                // The server closed this connection while the session sat
                // between statements (it died, or the connection was
                // killed): nothing was sent, so the statement goes to a
                // fresh connection, which also waits for the probes'
                // verdict if the server is gone.
                let why = format!("datasource '{}' closed the session's connection", b.ds.name);
                tracing::info!(session = self.id(), %why, "rebinding");
                metrics::counter!("zerodb_backend_closed_between_statements_total").increment(1);
                self.lose_backend(why);
                if let Some(why) = &self.st.doomed {
                    return Err(ClientError::transaction_lost(why));
                }
            }
        }
        if let Some(b) = &self.backend {
            let why = self.switch_reason(&b.ds, &active);
            if self.st.pinned() {
                self.lose_backend(why.clone());
                return Err(ClientError::state_lost(&format!(
                    "{why}; open cursors and unexecuted long data were lost"
                )));
            }
            tracing::info!(session = self.id(), from = %b.ds.name, to = %active.datasource.name, epoch = active.epoch, "session moves");
            self.release_backend();
        }
        let (ds, mut conn) = self.acquire(active).await?;
        let no_ds = |why: String| ClientError::no_datasource(&self.datahost.name, &ds.name, &why);
        let limit = ds.pool.command_timeout();
        match tokio::time::timeout(limit, self.st.replay(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(ReplayError::Server(e))) => return Err(e),
            Ok(Err(ReplayError::Backend(e))) => {
                conn.broken = true;
                return Err(no_ds(e.to_string()));
            }
            Err(_) => {
                conn.broken = true;
                return Err(no_ds(format!(
                    "replaying the session's state took longer than pool.command_timeout ({limit:?})"
                )));
            }
        }
        self.handle.set_backend(Some((ds.clone(), conn.thread_id)));
        metrics::counter!("zerodb_session_binds_total", "datasource" => ds.name.clone())
            .increment(1);
        self.backend = Some(Bound {
            conn,
            ds,
            generation,
        });
        Ok(())
    }

    /// A connection to the active datasource. In a cluster, a datasource
    /// that refuses connections may be dying: rather than fail at once,
    /// wait as long as the probes need to decide, and if they mark it down,
    /// wait for the switch like any buffered statement.
    pub(super) async fn acquire(
        &mut self,
        mut active: Arc<Active>,
    ) -> Result<(Arc<Datasource>, PooledConn), ClientError> {
        let h = self.shared.config.health.clone();
        let verdict = (h.interval + h.timeout) * h.fall + h.interval;
        let started = Instant::now();
        loop {
            let ds = active.datasource.clone();
            match ds
                .pool
                .acquire_as(self.key, self.backend_login.as_ref())
                .await
            {
                Ok(c) => return Ok((ds, c)),
                // The server refused the client's own account (`auth:
                // backend`): its error, as logging in directly.
                Err(PoolError::Backend(BackendError::Login { code, message, .. }))
                    if self.backend_login.is_some() && ACCOUNT_REFUSALS.contains(&code) =>
                {
                    let state = if code == 1045 { "28000" } else { "42000" };
                    return Err(ClientError::new(code, state, message));
                }
                // The server refused the client's own handshake character
                // set (a backend login carries it): the client's error, as
                // it would be logging in directly.
                Err(PoolError::Backend(BackendError::Login {
                    code: code @ (1115 | 1231),
                    message,
                    ..
                })) => return Err(ClientError::new(code, "42000", message)),
                Err(e) => {
                    let waiting = self.shared.cluster.get().is_some()
                        && !self.shared.config.buffer.window.is_zero()
                        && started.elapsed() < verdict;
                    if !waiting {
                        return Err(ClientError::no_datasource(
                            &self.datahost.name,
                            &ds.name,
                            &e.to_string(),
                        ));
                    }
                }
            }
            tokio::time::sleep(h.interval.min(Duration::from_millis(50))).await;
            active = self.datahost.active();
            if !active.datasource.health.is_up() {
                active = self.await_usable_active().await?;
            }
        }
    }

    /// Waits (bounded by `buffer.window`, at most `buffer.max_queue`
    /// statements per dataHost) until the dataHost's active datasource
    /// answers again or a new one is pushed. Only a proxy in a cluster
    /// waits: elsewhere no switch can come.
    pub(super) async fn await_usable_active(&mut self) -> Result<Arc<Active>, ClientError> {
        let dh = self.datahost.clone();
        let cfg = &self.shared.config.buffer;
        let down =
            |why: &str| ClientError::no_datasource(&dh.name, &dh.active().datasource.name, why);
        let Some(cluster) = self.shared.cluster.get().cloned() else {
            return Err(down("it is marked down by health probes"));
        };
        if cfg.window.is_zero() {
            return Err(down(
                "it is marked down by health probes; a switch may follow",
            ));
        }
        let Some(_slot) = dh.buffer_slot(cfg.max_queue) else {
            metrics::counter!("zerodb_buffer_overflows_total", "datahost" => dh.name.clone())
                .increment(1);
            return Err(down("it is marked down and the statement buffer is full"));
        };
        let started = Instant::now();
        metrics::counter!("zerodb_buffered_statements_total", "datahost" => dh.name.clone())
            .increment(1);
        // Waiting here is not running: a planned switchover need not wait
        // for this session.
        self.handle.set_busy(false);
        let _running_again = BusyOnDrop(&self.handle);
        let mut swaps = dh.watch_swaps();
        let handle = self.handle.clone();
        loop {
            let active = dh.active();
            if active.datasource.health.is_up() && !dh.is_held() {
                metrics::histogram!("zerodb_buffer_wait_seconds", "datahost" => dh.name.clone())
                    .record(started.elapsed().as_secs_f64());
                return Ok(active);
            }
            let left = cfg.window.saturating_sub(started.elapsed());
            if left.is_zero() || !self.shared.is_online() {
                metrics::counter!("zerodb_buffer_timeouts_total", "datahost" => dh.name.clone())
                    .increment(1);
                let why = cluster
                    .last_outcome(&dh.name)
                    .unwrap_or_else(|| "no answer from the keeper yet".into());
                return Err(ClientError::switch_timeout(
                    &dh.name,
                    &active.datasource.name,
                    cfg.window,
                    &why,
                ));
            }
            tokio::select! {
                _ = swaps.changed() => {}
                _ = tokio::time::sleep(left.min(Duration::from_millis(20))) => {}
                _ = handle.killed() => return Err(down("the session was killed while waiting")),
            }
        }
    }

    pub(super) fn switch_reason(&self, from: &Datasource, active: &Active) -> String {
        format!(
            "dataHost '{}' switched from datasource '{}' to '{}' (epoch {})",
            self.datahost.name, from.name, active.datasource.name, active.epoch
        )
    }

    /// If the active datasource changed while the session is inside a
    /// transaction, that transaction is lost: drop the old connection (no
    /// statement may reach the old source after a switch) and refuse
    /// statements until the client ends the transaction.
    pub(super) fn notice_switch_in_transaction(&mut self) {
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        if !self.st.in_transaction() || b.still_active(&self.datahost) {
            return;
        }
        let from = b.ds.clone();
        let why = self.switch_reason(&from, &self.datahost.active());
        tracing::info!(session = self.id(), %why, "transaction lost to a switch");
        metrics::counter!("zerodb_transactions_lost_total").increment(1);
        self.lose_backend(why);
    }

    /// The status flags a fresh session on the dataHost's active server
    /// starts with (its global `autocommit` and NO_BACKSLASH_ESCAPES), as
    /// its pool last saw them: what a login OK says before any server is
    /// bound. Clients read them there (PyMySQL's autocommit, how
    /// Connector/C escapes strings); the session's first bind makes the
    /// server agree with what was said.
    pub(super) fn fresh_status(&self) -> u16 {
        self.datahost.active().datasource.pool.fresh_status()
    }

    /// Gives the backend connection back to its pool (it is reset there),
    /// or closes it when it must not serve another session.
    pub(super) fn release_backend(&mut self) {
        if let Some(b) = self.backend.take() {
            if !self.st.connection_reusable() {
                b.conn.close();
            }
        }
        self.handle.set_backend(None);
    }

    /// Drops a backend connection whose state is unknown. A transaction that
    /// was open on it is lost: the session refuses statements until the
    /// client ends it.
    pub(super) fn lose_backend(&mut self, why: String) {
        if let Some(mut b) = self.backend.take() {
            b.conn.broken = true;
        }
        self.handle.set_backend(None);
        if self.st.in_transaction() {
            self.st.doomed = Some(why);
        }
        self.st.forget_server_side();
    }
}
