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
//! * `handshake` — greeting, authentication, COM_CHANGE_USER;
//! * `binding` — holding, moving and letting go of a backend connection;
//! * `forward`, `relay` — sending a command and relaying its response;
//! * `commands` — COM_QUERY and the other text commands it looks at;
//! * `prepared` — prepared statements under the proxy's own ids;
//! * `kill` — KILL in proxy connection ids;
//! * `state` — what is replayed after a move;
//! * `stats` — statement counts and latencies, batched per thread;
//! * this file — the session, its command loop and dispatch.

mod binding;
mod commands;
mod forward;
mod handshake;
mod kill;
mod login;
mod prepared;
mod relay;
mod state;
mod stats;

use crate::backend::BackendKey;
use crate::conn::Conn;
use crate::conn::{Packet, ReadError};
use crate::errors::ClientError;
use crate::hooks::StatementContext;
use crate::pool::PooledConn;
use crate::protocol::packets::{self, u32_at};
use crate::protocol::{cmd, ResponseKind};
use crate::registry::SessionHandle;
use crate::shared::Shared;
use crate::topology::{DataHost, Datasource};
pub(crate) use login::{refused_client_charset, ChangeUser, Login41};
use state::SessionState;
pub(crate) use state::{value_literal, Stmt};
use stats::StatementMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Runs a session to its end; `slot` (its place under `max_connections`)
/// is given back when it ends.
pub async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let handle = shared.registry.register(peer);
    let id = handle.id;
    metrics::gauge!("zerodb_client_sessions").increment(1.0);
    let limits = shared.limits.load_full();
    let mut client = Conn::new(stream);
    client.write_timeout = Some(limits.net_write_timeout);
    let mut s = Session {
        datahost: shared.topology.default_datahost().clone(),
        shared: shared.clone(),
        handle,
        client,
        peer,
        salt: crate::auth::new_salt(),
        client_caps: 0,
        key: BackendKey::default(),
        user: String::new(),
        seq: 0,
        backend: None,
        st: SessionState::default(),
        failed_change_users: 0,
        login: None,
        backend_login: None,
    };
    match tokio::time::timeout(limits.connect_timeout, s.handshake()).await {
        Ok(Ok(())) => s.serve().await,
        Ok(Err(())) => {}
        Err(_) => {
            tracing::debug!(session = id, %peer, "login timed out");
            metrics::counter!("zerodb_limit_hits_total", "limit" => "connect_timeout").increment(1);
            s.login_failed();
        }
    }
    if s.handle.timed_out() {
        tracing::debug!(session = id, %peer, user = %s.user, "closed after limits.wait_timeout");
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            s.client.send(0, &ClientError::idle_timeout().packet()),
        )
        .await;
    }
    s.release_backend();
    s.client.shutdown().await;
    tracing::debug!(
        session = id,
        killed = s.handle.is_killed(),
        "session closed"
    );
    shared.registry.remove(id);
    drop(slot);
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
    /// The session counted against its account's `max_connections`.
    login: Option<crate::users::Login>,
    /// Under `auth: backend`: the client's own account, as the session
    /// logs in to datasources (`None`: the dataHost's `user`).
    backend_login: Option<Arc<crate::backend::BackendLogin>>,
}

impl Session {
    pub(super) fn id(&self) -> u32 {
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
                Err(ReadError::Closed) => return,
                Err(e) => {
                    tracing::debug!(session = self.id(), error = %e, "client connection failed");
                    return;
                }
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
            cmd::STMT_EXECUTE | cmd::STMT_FETCH | cmd::STMT_RESET | cmd::STMT_BULK_EXECUTE => {
                match u32_at(&payload, 1) {
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
                }
            }
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

    pub(super) async fn reply(&mut self, payload: &[u8]) -> Flow {
        match self.client.send(self.seq, payload).await {
            Ok(next) => {
                self.seq = next;
                Flow::Continue
            }
            Err(_) => Flow::Close,
        }
    }

    pub(super) async fn reply_err(&mut self, e: ClientError) -> Flow {
        self.reply(&e.packet()).await
    }

    /// Sends one packet of the proxy's own as a command's whole answer.
    pub(super) async fn answer(&mut self, payload: &[u8]) -> Result<(), Fail> {
        match self.reply(payload).await {
            Flow::Continue => Ok(()),
            Flow::Close => Err(Fail::Close),
        }
    }

    pub(super) async fn reply_ok(&mut self) -> Result<(), Fail> {
        let ok = packets::ok(0, 0, self.st.status, 0);
        self.answer(&ok).await
    }

    pub(super) fn check_hooks(&self, sql: &[u8]) -> Result<(), ClientError> {
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
}
