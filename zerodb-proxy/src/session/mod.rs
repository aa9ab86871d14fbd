//! One client session.
//!
//! The session authenticates the client itself, then binds a backend
//! connection from the active datasource's pool on the first statement and
//! relays each command's response to the client as raw frames. It keeps the
//! state a server connection would hold (schema, session variables set,
//! autocommit, prepared statements) so that when the active datasource of
//! its dataHost is swapped it can move to the new one between statements and
//! replay that state; clients keep their connection and their statement ids.
//!
//! * [`handshake`] — greeting, authentication, COM_CHANGE_USER;
//! * [`relay`] — moving a response from backend to client;
//! * [`state`] — what is replayed after a move;
//! * this file — the command loop and dispatch.

mod handshake;
mod relay;
mod state;

use crate::backend::{BackendConn, BackendError, BackendKey};
use crate::errors::ClientError;
use crate::hooks::StatementContext;
use crate::pool::{PoolError, PooledConn};
use crate::protocol::conn::{Packet, ReadError};
use crate::protocol::packets::{self, u32_at};
use crate::protocol::{cmd, status, Conn, ResponseKind};
use crate::registry::SessionHandle;
use crate::shared::Shared;
use crate::sql;
use crate::topology::{DataHost, Datasource};
use relay::{relay, RelayError, Relayed};
use state::{SessionState, Stmt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a new client may take to log in.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a session to its end.
pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let handle = shared.registry.register(peer);
    let id = handle.id;
    metrics::gauge!("zerodb_client_sessions").increment(1.0);
    let mut s = Session {
        datahost: shared.topology.default_datahost().clone(),
        shared: shared.clone(),
        handle,
        client: Conn::new(stream),
        peer,
        salt: crate::auth::new_salt(),
        client_caps: 0,
        key: BackendKey::default(),
        user: String::new(),
        seq: 0,
        backend: None,
        st: SessionState::default(),
        failed_change_users: 0,
    };
    match tokio::time::timeout(LOGIN_TIMEOUT, s.handshake()).await {
        Ok(Ok(())) => s.serve().await,
        Ok(Err(())) => {}
        Err(_) => tracing::debug!(session = id, %peer, "login timed out"),
    }
    s.release_backend();
    let _ = s.client.stream.shutdown().await;
    tracing::debug!(
        session = id,
        killed = s.handle.is_killed(),
        "session closed"
    );
    shared.registry.remove(id);
    metrics::gauge!("zerodb_client_sessions").decrement(1.0);
    // What this session and its thread's others counted goes out now.
    let tick = shared.registry.ticks();
    StatementMetrics::with(|m| m.flush(tick));
}

/// Answers a connection the proxy will not serve with an ERR packet (as the
/// greeting) and closes it.
pub async fn refuse(mut stream: TcpStream, e: ClientError) {
    let mut buf = bytes::BytesMut::new();
    crate::protocol::frame::put_packet(&mut buf, 0, &e.packet());
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
}

/// Marks the session busy again when dropped.
struct BusyOnDrop<'a>(&'a SessionHandle);

impl Drop for BusyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_busy(true);
    }
}

/// A backend connection bound to the session, and where it leads.
struct Bound {
    conn: PooledConn,
    ds: Arc<Datasource>,
    /// The dataHost's [`DataHost::generation`] when `ds` was last seen
    /// active.
    generation: u64,
}

impl Bound {
    /// Whether `ds` is still `dh`'s active datasource. While no swap
    /// happened this is one atomic load, not a load of the `ArcSwap`
    /// (whose debt slots every session on the thread shares).
    fn still_active(&mut self, dh: &DataHost) -> bool {
        let now = dh.generation();
        if now == self.generation {
            return true;
        }
        let active = dh.is_active(&self.ds);
        if active {
            self.generation = now;
        }
        active
    }
}

/// What a command handler tells the loop.
enum Flow {
    Continue,
    Close,
}

/// A failure while serving one command.
enum Fail {
    /// Answer the client with this error and go on.
    Client(ClientError),
    /// The backend was lost before any byte of its answer reached the
    /// client (a statement safe to run again may be retried); otherwise
    /// answered like `Client`.
    Unanswered(ClientError),
    /// Like `Unanswered`, and the server cannot have run the statement: it
    /// closed the connection with the command unread, or the command could
    /// not be sent whole. Any statement outside a transaction may be run
    /// again.
    NotReceived(ClientError),
    /// The client is gone or cannot be answered: end the session.
    Close,
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Fail::Client(e)
    }
}

struct Session {
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    client: Conn,
    peer: SocketAddr,
    salt: [u8; crate::auth::SALT_LEN],
    /// Capability flags agreed with the client.
    client_caps: u32,
    key: BackendKey,
    user: String,
    /// Sequence id of the next packet to the client.
    seq: u8,
    datahost: Arc<DataHost>,
    backend: Option<Bound>,
    st: SessionState,
    /// COM_CHANGE_USERs refused so far on this connection.
    failed_change_users: u8,
}

/// What every statement records, kept per thread for the sessions on it:
/// the handles are looked up once, and the counts and latencies are passed
/// on now and then (every [`StatementMetrics::BATCH`] commands, after a
/// second, when a session on the thread goes idle or ends), so statements
/// on different cores do not fight over the shared counters' cache lines.
/// (The Prometheus recorder appends every sample to one queue all threads
/// share; handing it a batch at once keeps that queue's line on one core
/// for the batch.) One per thread rather than per session: the batch stays
/// in the core's cache from one session's statement to the next, and a
/// session is 600 bytes smaller.
struct StatementMetrics {
    statements: metrics::Counter,
    backend_errors: metrics::Counter,
    seconds: metrics::Histogram,
    pending_statements: u64,
    pending_errors: u64,
    /// Latencies of the commands since the last flush, in seconds.
    pending_seconds: [f64; Self::BATCH],
    pending_latencies: usize,
    /// The registry tick of the last flush.
    flushed: u64,
}

impl StatementMetrics {
    const BATCH: usize = 64;
    /// Registry ticks after which a busy session passes its counts on even
    /// if its batch is not full: about a second.
    const FLUSH_TICKS: u64 =
        (Duration::from_secs(1).as_millis() / crate::registry::TICK.as_millis()) as u64;

    fn new() -> Self {
        Self {
            statements: metrics::counter!("zerodb_statements_total"),
            backend_errors: metrics::counter!("zerodb_backend_errors_total"),
            seconds: metrics::histogram!("zerodb_statement_seconds"),
            pending_statements: 0,
            pending_errors: 0,
            pending_seconds: [0.0; Self::BATCH],
            pending_latencies: 0,
            flushed: 0,
        }
    }

    fn statement(&mut self, error: bool) {
        self.pending_statements += 1;
        self.pending_errors += u64::from(error);
    }

    /// A command took from `started` to `done`, which was at the registry
    /// tick `tick`.
    fn command(&mut self, started: Instant, done: Instant, tick: u64) {
        self.pending_seconds[self.pending_latencies] =
            done.saturating_duration_since(started).as_secs_f64();
        self.pending_latencies += 1;
        if self.pending_latencies == Self::BATCH || tick >= self.flushed + Self::FLUSH_TICKS {
            self.flush(tick);
        }
    }

    fn flush(&mut self, tick: u64) {
        if self.pending_statements > 0 {
            self.statements.increment(self.pending_statements);
        }
        if self.pending_errors > 0 {
            self.backend_errors.increment(self.pending_errors);
        }
        for s in &self.pending_seconds[..self.pending_latencies] {
            self.seconds.record(*s);
        }
        self.pending_statements = 0;
        self.pending_errors = 0;
        self.pending_latencies = 0;
        self.flushed = tick;
    }
}

thread_local! {
    static STATEMENT_METRICS: std::cell::RefCell<Option<StatementMetrics>> =
        const { std::cell::RefCell::new(None) };
}

impl StatementMetrics {
    /// Runs `f` on this thread's counts (made at the first use, with the
    /// recorder installed by then).
    fn with<R>(f: impl FnOnce(&mut StatementMetrics) -> R) -> R {
        STATEMENT_METRICS.with(|m| f(m.borrow_mut().get_or_insert_with(StatementMetrics::new)))
    }
}

impl Drop for StatementMetrics {
    fn drop(&mut self) {
        self.flush(self.flushed);
    }
}

impl Session {
    fn id(&self) -> u32 {
        self.handle.id
    }

    async fn serve(&mut self) {
        let max = self.shared.config.max_allowed_packet;
        let handle = self.handle.clone();
        loop {
            if self.client.rbuf.is_empty() && handle.buffers_due_back() {
                // A session idle for a while holds no buffer memory, so
                // thousands of idle clients stay cheap; a busy one keeps
                // its buffers from one command to the next.
                self.client.release_buffers();
                if let Some(b) = self.backend.as_mut() {
                    b.conn.conn.release_buffers();
                }
                handle.buffers_given_back();
                let tick = self.shared.registry.ticks();
                StatementMetrics::with(|m| m.flush(tick));
            }
            if handle.is_killed() || self.shared.draining() {
                return;
            }
            let read = tokio::select! {
                biased;
                r = self.client.read_packet(max) => r,
                // Killed, shutting down, or a nudge this loop looks past.
                _ = handle.attention() => continue,
            };
            let pkt = match read {
                Ok(p) => p,
                Err(ReadError::TooLarge { len, max }) => {
                    let _ = self
                        .client
                        .send(1, &ClientError::packet_too_large(len, max).packet())
                        .await;
                    return;
                }
                Err(ReadError::BadSequence { .. }) => {
                    let _ = self
                        .client
                        .send(1, &ClientError::out_of_order().packet())
                        .await;
                    return;
                }
                Err(_) => return,
            };
            if pkt.first_seq != 0 {
                // Every command starts a new exchange at sequence id 0.
                let _ = self
                    .client
                    .send(
                        pkt.last_seq.wrapping_add(1),
                        &ClientError::out_of_order().packet(),
                    )
                    .await;
                return;
            }
            let started = Instant::now();
            handle.mark_command(None);
            let flow = self.command(pkt).await;
            let done = Instant::now();
            let tick = self.shared.registry.ticks();
            StatementMetrics::with(|m| m.command(started, done, tick));
            handle.mark_command(Some(tick));
            if let Flow::Close = flow {
                return;
            }
        }
    }

    async fn command(&mut self, pkt: Packet) -> Flow {
        self.seq = pkt.last_seq.wrapping_add(1);
        let payload = pkt.payload;
        let Some(&command) = payload.first() else {
            return self
                .reply_err(ClientError::malformed("empty command"))
                .await;
        };
        self.handle.set_busy(true);
        let result = match command {
            cmd::QUIT => return Flow::Close,
            cmd::QUERY => self.query(payload).await,
            cmd::PING => self.ping(payload).await,
            cmd::INIT_DB => {
                let db = payload[1..].to_vec();
                self.change_schema(db, ResponseKind::Single, &payload).await
            }
            cmd::FIELD_LIST => self
                .forward(ResponseKind::FieldList, &payload, None)
                .await
                .map(drop),
            // COM_STATISTICS, COM_REFRESH (mysql_refresh: FLUSH …) and
            // COM_DEBUG (mysql_dump_debug_info) act on the server as the
            // session's backend user; each answers one packet.
            cmd::STATISTICS | cmd::REFRESH | cmd::DEBUG => self
                .forward(ResponseKind::Single, &payload, None)
                .await
                .map(drop),
            cmd::SET_OPTION => self.set_option(payload).await,
            cmd::RESET_CONNECTION => self.reset_connection(payload).await,
            cmd::CHANGE_USER => return self.change_user(payload).await,
            cmd::PROCESS_KILL => match u32_at(&payload, 1) {
                Some(id) => Box::pin(self.kill(u64::from(id), false)).await,
                None => Err(ClientError::malformed("COM_PROCESS_KILL").into()),
            },
            cmd::STMT_PREPARE => self.prepare(payload).await,
            cmd::STMT_EXECUTE | cmd::STMT_FETCH | cmd::STMT_RESET => match u32_at(&payload, 1) {
                // The common case goes out from here: without a future of
                // its own, which would be state written at every statement
                // to memory it touches nowhere else.
                Some(id) if self.statement_is_plain(id) => {
                    match self.statement_for_backend(command, id, payload) {
                        Ok((kind, payload)) => self
                            .forward_bound(kind, &payload, None)
                            .await
                            .map(|r| self.statement_done(command, id, &r)),
                        Err(e) => Err(e),
                    }
                }
                _ => self.statement(command, payload).await,
            },
            cmd::STMT_SEND_LONG_DATA | cmd::STMT_CLOSE => {
                self.statement_no_reply(command, payload).await
            }
            other => Err(ClientError::unknown_command(other).into()),
        };
        self.handle
            .set_busy(self.st.in_transaction() && self.backend.is_some());
        match result {
            Ok(()) => Flow::Continue,
            Err(Fail::Close) => Flow::Close,
            Err(Fail::Client(e) | Fail::Unanswered(e) | Fail::NotReceived(e)) => {
                metrics::counter!("zerodb_proxy_errors_total", "code" => e.code.to_string())
                    .increment(1);
                self.reply_err(e).await
            }
        }
    }

    async fn reply(&mut self, payload: &[u8]) -> Flow {
        match self.client.send(self.seq, payload).await {
            Ok(next) => {
                self.seq = next;
                Flow::Continue
            }
            Err(_) => Flow::Close,
        }
    }

    async fn reply_err(&mut self, e: ClientError) -> Flow {
        self.reply(&e.packet()).await
    }

    /// Sends one packet of the proxy's own as a command's whole answer.
    async fn answer(&mut self, payload: &[u8]) -> Result<(), Fail> {
        match self.reply(payload).await {
            Flow::Continue => Ok(()),
            Flow::Close => Err(Fail::Close),
        }
    }

    async fn reply_ok(&mut self) -> Result<(), Fail> {
        let ok = packets::ok(0, 0, self.st.status, 0);
        self.answer(&ok).await
    }

    fn check_hooks(&self, sql: &[u8]) -> Result<(), ClientError> {
        if self.shared.hooks.is_empty() {
            return Ok(());
        }
        let ctx = StatementContext {
            connection_id: self.id(),
            user: &self.user,
            schema: self.st.schema.as_deref(),
            datahost: &self.datahost.name,
        };
        self.shared
            .hooks
            .iter()
            .try_for_each(|h| h.check(&ctx, sql))
    }

    // ----- backend binding -------------------------------------------------

    /// Makes sure the session holds a connection to its dataHost's active
    /// datasource, moving it (with its state) when the active one changed.
    async fn ensure_backend(&mut self) -> Result<(), ClientError> {
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
    fn backend_is_current(&mut self) -> bool {
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
    async fn rebind(&mut self) -> Result<(), ClientError> {
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
        match self.st.replay(&mut conn).await {
            Ok(()) => {}
            Err(state::ReplayError::Server(e)) => return Err(e),
            Err(state::ReplayError::Backend(e)) => {
                conn.broken = true;
                return Err(no_ds(e.to_string()));
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
    async fn acquire(
        &mut self,
        mut active: Arc<crate::topology::Active>,
    ) -> Result<(Arc<Datasource>, PooledConn), ClientError> {
        let h = self.shared.config.health.clone();
        let verdict = (h.interval + h.timeout) * h.fall + h.interval;
        let started = Instant::now();
        loop {
            let ds = active.datasource.clone();
            match ds.pool.acquire(self.key).await {
                Ok(c) => return Ok((ds, c)),
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
    async fn await_usable_active(&mut self) -> Result<Arc<crate::topology::Active>, ClientError> {
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

    fn switch_reason(&self, from: &Datasource, active: &crate::topology::Active) -> String {
        format!(
            "dataHost '{}' switched from datasource '{}' to '{}' (epoch {})",
            self.datahost.name, from.name, active.datasource.name, active.epoch
        )
    }

    /// If the active datasource changed while the session is inside a
    /// transaction, that transaction is lost: drop the old connection (no
    /// statement may reach the old source after a switch) and refuse
    /// statements until the client ends the transaction.
    fn notice_switch_in_transaction(&mut self) {
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

    /// Gives the backend connection back to its pool (it is reset there),
    /// or closes it when it must not serve another session.
    fn release_backend(&mut self) {
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
    fn lose_backend(&mut self, why: String) {
        if let Some(mut b) = self.backend.take() {
            b.conn.broken = true;
        }
        self.handle.set_backend(None);
        if self.st.in_transaction() {
            self.st.doomed = Some(why);
        }
        self.st.forget_server_side();
    }

    /// Sends one command to the backend (bound first, moved if need be)
    /// and relays the response.
    async fn forward(
        &mut self,
        kind: ResponseKind,
        payload: &[u8],
        prepare_id: Option<u32>,
    ) -> Result<Relayed, Fail> {
        // [`Self::ensure_backend`] spelled out: every text statement comes
        // this way, and awaiting that would set up one more future each.
        if !self.backend_is_current() {
            Box::pin(self.rebind()).await?;
        }
        self.forward_bound(kind, payload, prepare_id).await
    }

    /// [`Self::forward`] on the backend the session is bound to now (for a
    /// command whose payload names things of that backend's, such as a
    /// statement id: binding again could move it to another one).
    async fn forward_bound(
        &mut self,
        kind: ResponseKind,
        payload: &[u8],
        prepare_id: Option<u32>,
    ) -> Result<Relayed, Fail> {
        let seq_before = self.seq;
        let Some(b) = self.backend.as_mut() else {
            return Err(ClientError::no_datasource(&self.datahost.name, "?", "not bound").into());
        };
        // Sent without a future of its own when the socket takes it all.
        b.conn.conn.queue(0, payload);
        let sent = match b.conn.conn.try_flush() {
            Ok(true) => Ok(()),
            Ok(false) => b.conn.conn.flush().await,
            Err(e) => Err(e),
        };
        let out = match sent {
            Ok(_) => {
                relay(
                    &mut self.client,
                    &mut self.seq,
                    &mut b.conn,
                    (&self.handle, &b.ds.health),
                    kind,
                    prepare_id,
                    self.shared.config.max_allowed_packet,
                )
                .await
            }
            Err(e) => Err(RelayError::Backend {
                error: BackendError::Lost {
                    addr: b.conn.addr.clone(),
                    reason: e.to_string(),
                },
                mid_packet: false,
                // A command not sent whole cannot run.
                unread: true,
            }),
        };
        match out {
            Ok(r) => {
                if let Some(s) = r.status {
                    self.st.status = s;
                }
                StatementMetrics::with(|m| m.statement(r.error));
                Ok(r)
            }
            Err(RelayError::Client) => {
                if let Some(b) = self.backend.as_mut() {
                    b.conn.broken = true;
                }
                Err(Fail::Close)
            }
            Err(RelayError::Backend {
                error,
                mid_packet,
                unread,
            }) => {
                let name = self
                    .backend
                    .as_ref()
                    .map(|b| b.ds.name.clone())
                    .unwrap_or_default();
                let killed = self.handle.is_killed();
                if !killed {
                    tracing::warn!(session = self.id(), datasource = %name, error = %error, "backend lost mid-statement");
                }
                let in_trans = self.st.in_transaction();
                self.lose_backend(format!("the connection to datasource '{name}' was lost"));
                if mid_packet {
                    // The client holds half a packet: nothing valid can follow.
                    return Err(Fail::Close);
                }
                if killed {
                    // `KILL` of this session ended its backend connection
                    // first: the client learns why, as from MySQL.
                    let _ = self.reply_err(ClientError::connection_killed()).await;
                    return Err(Fail::Close);
                }
                if in_trans {
                    return Err(ClientError::transaction_lost(&format!(
                        "the connection to datasource '{name}' was lost ({error})"
                    ))
                    .into());
                }
                let e = ClientError::backend_lost(&name, &error.to_string());
                if self.seq == seq_before && unread {
                    Err(Fail::NotReceived(e))
                } else if self.seq == seq_before {
                    Err(Fail::Unanswered(e))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    // ----- commands --------------------------------------------------------

    async fn query(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let sql_text = &payload[1..];
        self.notice_switch_in_transaction();
        if self.st.doomed.is_some() {
            if sql::starts_with_keyword(sql_text, "ROLLBACK") {
                self.st.doomed = None;
                self.st.status &= !status::IN_TRANS;
                return self.reply_ok().await;
            }
            if sql::starts_with_keyword(sql_text, "COMMIT") {
                let why = self.st.doomed.take().unwrap_or_default();
                self.st.status &= !status::IN_TRANS;
                return Err(ClientError::transaction_lost(&why).into());
            }
        }
        self.check_hooks(sql_text)?;
        let kw = sql::first_keyword(sql_text);
        match &kw[..] {
            [b'K', b'I', b'L', b'L', 0, ..] => {
                if let Some(k) = sql::parse_kill(sql_text, self.id().into()) {
                    return Box::pin(self.kill_statement(k)).await;
                }
            }
            [b'U', b'S', b'E', 0, ..] => {
                if let Some(db) = sql::parse_use(sql_text) {
                    return self.change_schema(db, ResponseKind::Query, &payload).await;
                }
            }
            _ => {}
        }
        let rewritten = sql::rewrite_connection_id(sql_text, self.id()).map(|mut q| {
            q.insert(0, cmd::QUERY);
            q
        });
        let statement = rewritten.as_deref().unwrap_or(&payload);
        let mut r = self.forward(ResponseKind::Query, statement, None).await;
        let retry = match &r {
            // The server never read it (and the transaction, if any, is
            // gone anyway: `forward` answered that with 9103).
            Err(Fail::NotReceived(_)) => Some("statement never received"),
            Err(Fail::Unanswered(_)) if self.safe_to_retry(sql_text) => Some("read unanswered"),
            _ => None,
        };
        if let Some(why) = retry {
            // Run it again, on the new active datasource once there is one.
            metrics::counter!("zerodb_statements_retried_total").increment(1);
            tracing::info!(
                session = self.id(),
                why,
                "statement retried after its datasource was lost"
            );
            r = self.forward(ResponseKind::Query, statement, None).await;
        }
        let r = r?;
        if !r.error && (kw.starts_with(b"SET\0") || sql_text.contains(&b';')) {
            self.record_sets(sql_text).await;
        }
        Ok(())
    }

    /// Keeps what the `SET`s of a statement text did to the session, for
    /// replay, and reads back the values of user variables set from
    /// expressions (one `SELECT` on the same connection, only when there
    /// are some).
    async fn record_sets(&mut self, sql_text: &[u8]) {
        let mut captures: Vec<(String, Vec<u8>)> = Vec::new();
        for set in sql::session_sets(sql_text) {
            for c in self.st.record_set(sql::parse_set(set)) {
                captures.retain(|(k, _)| *k != c.0);
                captures.push(c);
            }
        }
        if captures.is_empty() {
            return;
        }
        let mut select = vec![cmd::QUERY];
        select.extend_from_slice(b"SELECT ");
        for (i, (_, var)) in captures.iter().enumerate() {
            if i > 0 {
                select.extend_from_slice(b", ");
            }
            select.extend_from_slice(var);
        }
        let read = match self.backend.as_mut() {
            Some(b) => b.conn.command(ResponseKind::Query, &select).await,
            None => {
                self.st.captured(&captures, None);
                return;
            }
        };
        match read {
            Ok(out) if out.error.is_none() => self.st.captured(&captures, Some(&out)),
            Ok(_) => self.st.captured(&captures, None),
            Err(e) => {
                self.st.captured(&captures, None);
                self.lose_backend(format!("reading back session variables failed: {e}"));
            }
        }
    }

    /// A statement that can run twice with the same effect: a read,
    /// outside a transaction, alone (no multi-statement text).
    fn safe_to_retry(&self, sql_text: &[u8]) -> bool {
        let kw = sql::first_keyword(sql_text);
        let read = ["SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"]
            .iter()
            .any(|k| kw.starts_with(k.as_bytes()) && kw.get(k.len()) == Some(&0));
        let locking = [
            "FOR",
            "INTO",
            "LOCK",
            "GET_LOCK",
            "RELEASE_LOCK",
            "NEXTVAL",
            "SETVAL",
        ]
        .iter()
        .any(|k| sql::contains_keyword(sql_text, k));
        read && !locking && !self.st.in_transaction() && !sql_text.contains(&b';')
    }

    async fn ping(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        if self.backend.is_some() && self.st.doomed.is_none() {
            self.forward(ResponseKind::Single, &payload, None)
                .await
                .map(drop)
        } else {
            self.reply_ok().await
        }
    }

    /// COM_INIT_DB or `USE db`: follows the schema to its dataHost.
    async fn change_schema(
        &mut self,
        db: Vec<u8>,
        kind: ResponseKind,
        payload: &[u8],
    ) -> Result<(), Fail> {
        let target = self.shared.topology.route(Some(&db)).clone();
        if !Arc::ptr_eq(&target, &self.datahost) {
            if self.st.in_transaction() {
                return Err(
                    ClientError::cross_datahost_in_transaction(&String::from_utf8_lossy(&db))
                        .into(),
                );
            }
            self.release_backend();
            self.st.schema = None;
            self.st.forget_server_side();
            self.datahost = target;
        }
        let r = self.forward(kind, payload, None).await?;
        if !r.error {
            self.st.schema = Some(db);
        }
        Ok(())
    }

    async fn set_option(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let r = self.forward(ResponseKind::Single, &payload, None).await?;
        if !r.error {
            if let Some(o) = packets::u16_at(&payload, 1) {
                self.st.multi_statements = Some(o == 0);
            }
        }
        Ok(())
    }

    async fn reset_connection(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        if self.backend.is_none() || self.st.doomed.is_some() {
            self.st.reset();
            return self.reply_ok().await;
        }
        let r = self.forward(ResponseKind::Single, &payload, None).await?;
        if !r.error {
            self.st.reset();
        }
        Ok(())
    }

    async fn prepare(&mut self, payload: Vec<u8>) -> Result<(), Fail> {
        let text = &payload[1..];
        self.check_hooks(text)?;
        if sql::first_keyword(text).starts_with(b"KILL\0") {
            return self.prepare_kill(text.to_vec()).await;
        }
        let sql_text = sql::rewrite_connection_id(text, self.id()).unwrap_or_else(|| text.to_vec());
        let mut req = Vec::with_capacity(sql_text.len() + 1);
        req.push(cmd::STMT_PREPARE);
        req.extend_from_slice(&sql_text);
        let client_id = self.st.next_statement_id();
        let r = self
            .forward(ResponseKind::Prepare, &req, Some(client_id))
            .await?;
        if let Some(ok) = r.prepare {
            self.st.stmts.insert(
                client_id,
                Stmt {
                    sql: sql_text,
                    backend_id: Some(ok.statement_id),
                    params: ok.params,
                    types: None,
                    types_needed: false,
                },
            );
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET.
    async fn statement(&mut self, command: u8, payload: Vec<u8>) -> Result<(), Fail> {
        let what = cmd::name(command);
        let id = u32_at(&payload, 1).ok_or_else(|| ClientError::malformed(what))?;
        if let Some(text) = self.st.kills.get(&id).cloned() {
            return match command {
                cmd::STMT_EXECUTE => match sql::parse_kill(&text, self.id().into()) {
                    Some(k) => Box::pin(self.kill_statement(k)).await,
                    None => Err(ClientError::unknown_statement(id, what).into()),
                },
                cmd::STMT_RESET => self.reply_ok().await,
                _ => Err(ClientError::new(
                    1421,
                    "HY000",
                    format!("The statement ({id}) has no open cursor."),
                )
                .into()),
            };
        }
        if !self.st.stmts.contains_key(&id) {
            return Err(ClientError::unknown_statement(id, what).into());
        }
        self.ensure_backend().await?;
        let (kind, payload) = self.statement_for_backend(command, id, payload)?;
        let r = self.forward_bound(kind, &payload, None).await?;
        self.statement_done(command, id, &r);
        Ok(())
    }

    /// Whether [`Self::statement`] for client statement `id` would go
    /// straight to the backend: a statement the session prepared (not a
    /// KILL the proxy runs itself), and a backend connection that is
    /// current.
    fn statement_is_plain(&mut self, id: u32) -> bool {
        !self.st.kills.contains_key(&id)
            && self.st.stmts.contains_key(&id)
            && self.backend_is_current()
    }

    /// The command a prepared statement's COM_STMT_EXECUTE, _FETCH or
    /// _RESET becomes on the bound backend: its statement id there, and for
    /// an execution the parameter types the backend has not seen yet.
    fn statement_for_backend(
        &mut self,
        command: u8,
        id: u32,
        mut payload: Vec<u8>,
    ) -> Result<(ResponseKind, Vec<u8>), Fail> {
        let what = cmd::name(command);
        let stmt = self
            .st
            .stmts
            .get_mut(&id)
            .ok_or_else(|| ClientError::unknown_statement(id, what))?;
        let backend_id = stmt.backend_id.ok_or_else(|| {
            ClientError::state_lost(&format!(
                "statement {id} could not be prepared again after a datasource switch"
            ))
        })?;
        payload[1..5].copy_from_slice(&backend_id.to_le_bytes());
        let kind = match command {
            cmd::STMT_EXECUTE => {
                payload = stmt
                    .bind_types(payload)
                    .ok_or_else(|| ClientError::malformed(what))?;
                // Flags byte: 0 is no cursor; any cursor type asks for one.
                ResponseKind::Execute {
                    cursor: payload.get(5).is_some_and(|f| *f != 0),
                }
            }
            cmd::STMT_FETCH => ResponseKind::Fetch,
            _ => ResponseKind::Single,
        };
        Ok((kind, payload))
    }

    /// What a relayed COM_STMT_EXECUTE, _FETCH or _RESET leaves behind: a
    /// cursor opened or closed, long data used up.
    fn statement_done(&mut self, command: u8, id: u32, r: &Relayed) {
        let cursor_open = r.status.is_some_and(|s| s & status::CURSOR_EXISTS != 0)
            && r.status.is_some_and(|s| s & status::LAST_ROW_SENT == 0);
        // (Most sessions never use either set: skip hashing the id.)
        if !self.st.long_data.is_empty() {
            self.st.long_data.remove(&id);
        }
        if command == cmd::STMT_RESET || !cursor_open || r.error {
            if !self.st.open_cursors.is_empty() {
                self.st.open_cursors.remove(&id);
            }
        } else if command == cmd::STMT_EXECUTE {
            self.st.open_cursors.insert(id);
        }
    }

    /// COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE: no response, ever.
    async fn statement_no_reply(&mut self, command: u8, mut payload: Vec<u8>) -> Result<(), Fail> {
        let Some(id) = u32_at(&payload, 1) else {
            return Ok(());
        };
        if command == cmd::STMT_CLOSE && self.st.kills.remove(&id).is_some() {
            return Ok(());
        }
        let Some(stmt) = self.st.stmts.get(&id) else {
            return Ok(());
        };
        let backend_id = stmt.backend_id;
        if command == cmd::STMT_CLOSE {
            self.st.stmts.remove(&id);
            self.st.open_cursors.remove(&id);
            self.st.long_data.remove(&id);
            if self.backend.is_none() {
                return Ok(());
            }
        } else {
            if self.ensure_backend().await.is_err() {
                // The EXECUTE that follows reports the problem.
                return Ok(());
            }
            self.st.long_data.insert(id);
        }
        let (Some(b), Some(backend_id)) = (self.backend.as_mut(), backend_id) else {
            return Ok(());
        };
        payload[1..5].copy_from_slice(&backend_id.to_le_bytes());
        if b.conn.conn.send(0, &payload).await.is_err() {
            self.lose_backend("the connection to the datasource was lost".into());
        }
        Ok(())
    }

    /// `KILL …` in the proxy's ids, from a query or a prepared statement.
    /// Boxed where it is called, like [`Self::rebind`] and for the same
    /// reason: its future is the largest of any command's (it may evaluate
    /// the target on the server and connect to send the KILL), so inline
    /// it made a session's state 800 bytes larger.
    async fn kill_statement(&mut self, k: Result<sql::Kill<'_>, ()>) -> Result<(), Fail> {
        let k = k.map_err(|()| {
            ClientError::new(
                1235,
                "42000",
                "zeroDB supports KILL [CONNECTION|QUERY] <connection id expression> only",
            )
        })?;
        let id = match k.target {
            sql::KillTarget::Id(id) => id,
            sql::KillTarget::Expr(e) => self.kill_target(e).await?,
        };
        self.kill(id, k.query_only).await
    }

    /// COM_STMT_PREPARE of a KILL: its ids are the proxy's, so the proxy
    /// keeps the statement and runs it itself at each execution, as it runs
    /// a KILL query; no server sees it. One with parameters (`KILL ?`) is
    /// refused with 1295, which clients take as "send it as a query".
    async fn prepare_kill(&mut self, text: Vec<u8>) -> Result<(), Fail> {
        if text.contains(&b'?') {
            return Err(ClientError::new(
                1295,
                "HY000",
                "This command is not supported in the prepared statement protocol yet",
            )
            .into());
        }
        let id = self.st.next_statement_id();
        self.st.kills.insert(id, text);
        // PREPARE_OK: no columns, no parameters, no warnings.
        let mut ok = vec![0x00];
        ok.extend_from_slice(&id.to_le_bytes());
        ok.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        self.answer(&ok).await
    }

    /// The connection id a `KILL <expression>` names: the server evaluates
    /// the expression in the session (its user variables, its
    /// `CONNECTION_ID()`) as an integer, as its own KILL would.
    async fn kill_target(&mut self, expr: &[u8]) -> Result<u64, Fail> {
        if sql::kill_target_uses_tables(expr) {
            return Err(ClientError::new(
                1970,
                "42000",
                "KILL does not support subqueries or stored functions",
            )
            .into());
        }
        let expr = sql::rewrite_connection_id(expr, self.id()).unwrap_or_else(|| expr.to_vec());
        let mut q = vec![cmd::QUERY];
        q.extend_from_slice(b"SELECT CAST((");
        q.extend_from_slice(&expr);
        q.extend_from_slice(b") AS UNSIGNED)");
        self.ensure_backend().await?;
        let Some(b) = self.backend.as_mut() else {
            return Err(ClientError::no_datasource(&self.datahost.name, "?", "not bound").into());
        };
        match b.conn.command(ResponseKind::Query, &q).await {
            Ok(out) => {
                // A SELECT can open a transaction (autocommit off).
                if let Some(s) = out.status {
                    self.st.status = s;
                }
                if let Some(e) = out.error {
                    return Err(ClientError::from_server(e).into());
                }
                // NULL, as on the server, is thread 0.
                Ok(out
                    .first_value()
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0))
            }
            Err(e) => {
                let name = b.ds.name.clone();
                self.lose_backend(e.to_string());
                Err(ClientError::backend_lost(&name, &e.to_string()).into())
            }
        }
    }

    /// `KILL [QUERY] id` and COM_PROCESS_KILL, in the proxy's ids.
    async fn kill(&mut self, target: u64, query_only: bool) -> Result<(), Fail> {
        let h = u32::try_from(target)
            .ok()
            .and_then(|t| self.shared.registry.get(t))
            .ok_or_else(|| ClientError::unknown_thread(target))?;
        if h.user() != self.user {
            return Err(ClientError::not_owner(target).into());
        }
        if !query_only {
            // Marked first: the session's statement, ended by the backend
            // KILL below, must end in "killed", not in "datasource lost".
            h.kill();
        }
        if let Some((ds, thread)) = h.backend() {
            let stmt = if query_only {
                format!("KILL QUERY {thread}")
            } else {
                format!("KILL {thread}")
            };
            match BackendConn::connect(ds.pool.params(), self.key).await {
                Ok(mut c) => match c.execute(&stmt).await {
                    Ok(_) | Err(BackendError::Server { code: 1094, .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "KILL on the backend failed"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot reach the backend to KILL"),
            }
        }
        if !query_only && h.id == self.id() {
            let _ = self.reply_err(ClientError::connection_killed()).await;
            return Err(Fail::Close);
        }
        self.reply_ok().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Every latency reaches the recorder, in batches, and nothing is lost
    /// when the session ends between batches.
    #[test]
    fn statement_latencies_reach_the_histogram_in_batches() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01])
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let count = || -> Option<u64> {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with("zerodb_statement_seconds_count"))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let mut m = metrics::with_local_recorder(&recorder, StatementMetrics::new);
        let t0 = Instant::now();
        for i in 0..StatementMetrics::BATCH + 6 {
            // 2 to 5 ms, between 1 and 10 ms: all in the second bucket.
            let took = Duration::from_millis(2 + (i % 4) as u64);
            m.statement(false);
            m.command(t0, t0 + took, 0);
        }
        assert_eq!(
            count(),
            Some(StatementMetrics::BATCH as u64),
            "a full batch is passed on"
        );
        m.statement(false);
        m.command(
            t0,
            t0 + Duration::from_millis(2),
            StatementMetrics::FLUSH_TICKS,
        );
        assert_eq!(
            count(),
            Some(StatementMetrics::BATCH as u64 + 7),
            "a second later, a batch that is not full is passed on too"
        );
        m.statement(false);
        m.command(
            t0,
            t0 + Duration::from_millis(2),
            StatementMetrics::FLUSH_TICKS,
        );
        drop(m);
        let text = handle.render();
        assert_eq!(count(), Some(StatementMetrics::BATCH as u64 + 8), "{text}");
        assert!(
            text.contains("zerodb_statement_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("zerodb_statement_seconds_bucket{le=\"0.01\"} 72"),
            "{text}"
        );
        assert!(text.contains("zerodb_statements_total 72"), "{text}");
    }
}
