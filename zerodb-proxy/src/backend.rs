//! Connections from the proxy to a datasource (MySQL/MariaDB), built on
//! mysql_common's handshake packets and authentication plugins.

use crate::conn::Conn;
use crate::conn::ReadError;
use crate::protocol::packets::{self, parse_err};
use crate::protocol::{caps, status, ResponseKind, ResponseParser, Step};
use mysql_common::auth::plugins::{AuthProc, ChallengeResponsePlugin, Context};
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::TcpStream;

/// Largest packet the proxy reads from a backend as one piece (handshake and
/// internal queries; relayed results stream frame by frame).
const MAX_INTERNAL_PACKET: usize = 64 << 20;

/// The capability flags and collation a backend session must share with its
/// client so that responses can be relayed as bytes. Pools keep idle
/// connections per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// The client's `caps::SESSION_SHAPING` flags.
    pub caps: u32,
    /// The client's handshake collation id.
    pub collation: u8,
    /// The MariaDB flags agreed with the client (`caps::mariadb`).
    pub mariadb_caps: u32,
}

impl BackendKey {
    /// The key of a client session: its capability flags cut to `caps::SESSION_SHAPING`,
    /// its collation, and its MariaDB flags cut to those the proxy offers.
    pub fn new(client_caps: u32, collation: u8, mariadb_caps: u32) -> Self {
        Self {
            caps: client_caps & caps::SESSION_SHAPING,
            collation,
            mariadb_caps: mariadb_caps & caps::mariadb::OFFERED,
        }
    }
}

impl Default for BackendKey {
    /// What current MySQL and MariaDB connectors ask for: utf8mb4, multi
    /// results, deprecated EOF, session tracking off.
    fn default() -> Self {
        Self {
            caps: caps::LONG_FLAG
                | caps::LOCAL_FILES
                | caps::MULTI_RESULTS
                | caps::PS_MULTI_RESULTS
                | caps::DEPRECATE_EOF,
            collation: 45,
            mariadb_caps: 0,
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ConnectParams {
    /// The datasource's address, `host:port`.
    pub addr: String,
    /// The login the proxy uses (its dataHost's `user`).
    pub user: String,
    /// The password of `user` (empty for none).
    pub password: String,
    /// Limit on the TCP connect (`pool.connect_timeout`); the login gets
    /// twice this.
    pub connect_timeout: Duration,
    /// TLS to the datasource (`datahosts[].tls`); `None`: in clear.
    pub tls: Option<Arc<crate::tls::BackendTls>>,
}

impl ConnectParams {
    /// The dataHost's own login (`datahosts[].user`).
    pub fn login(&self) -> BackendLogin {
        BackendLogin {
            user: self.user.clone(),
            credential: Credential::Password(self.password.clone()),
        }
    }
}

/// As whom a connection logs in. The dataHost's `user` for the proxy's own
/// work and under `auth: static`; under `auth: backend`, each client's own
/// account, so the server applies that account's grants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendLogin {
    /// The account's name.
    pub user: String,
    /// What answers the server's challenge.
    pub credential: Credential,
}

/// What the proxy answers a server's authentication challenge with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// The password itself (any plugin the server asks for).
    Password(String),
    /// SHA1(password), recovered from the client's own
    /// `mysql_native_password` login ([`crate::auth::native_stage1`]):
    /// enough to answer `mysql_native_password` challenges, and nothing
    /// else — the proxy never learns the password.
    NativeStage1([u8; 20]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(<redacted>)",
            Credential::NativeStage1(_) => "Credential::NativeStage1(<redacted>)",
        })
    }
}

/// A failure talking to a backend. `retryable` says whether the statement
/// that met it can safely be sent elsewhere (nothing reached the server).
#[derive(Debug, Error)]
pub enum BackendError {
    /// The TCP connect failed, or the connect or login did not finish in
    /// time: no statement was sent.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The datasource's address, `host:port`.
        addr: String,
        /// Why (the I/O error, or which step timed out).
        reason: String,
    },
    /// The server answered the login with an ERR packet (wrong password,
    /// host blocked, too many connections, …).
    #[error("{addr} refused the proxy's login: {code} {message}")]
    Login {
        /// The datasource's address, `host:port`.
        addr: String,
        /// The MySQL error code (e.g. 1045).
        code: u16,
        /// The server's error message.
        message: String,
    },
    /// The connection closed or failed mid-exchange; the server may have
    /// run part of the command.
    #[error("connection to {addr} lost: {reason}")]
    Lost {
        /// The datasource's address, `host:port`.
        addr: String,
        /// The I/O error or how the connection ended.
        reason: String,
    },
    /// The server sent a packet the proxy cannot parse or did not expect;
    /// the connection is unusable.
    #[error("{addr} broke the protocol: {what}")]
    Protocol {
        /// The datasource's address, `host:port`.
        addr: String,
        /// What was wrong.
        what: String,
    },
    /// The server answered a command of the proxy's own with an ERR packet
    /// (the connection stays usable).
    #[error("{addr} answered {code}: {message}")]
    Server {
        /// The datasource's address, `host:port`.
        addr: String,
        /// The MySQL error code.
        code: u16,
        /// The SQLSTATE (five characters).
        state: String,
        /// The server's error message.
        message: String,
    },
}

impl BackendError {
    /// Whether nothing of the statement can have reached the server.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Login { .. })
    }
}

struct AuthCtx<'a> {
    pass: &'a [u8],
    scramble: &'a [u8],
    tls: bool,
}

impl Context for AuthCtx<'_> {
    fn pass(&self) -> &[u8] {
        self.pass
    }
    fn is_ipc_transport(&self) -> bool {
        false
    }
    fn is_tls_transport(&self) -> bool {
        self.tls
    }
    fn scramble(&self) -> &[u8] {
        self.scramble
    }
    fn server_key_pem(&self) -> Option<&[u8]> {
        None
    }
}

/// What the proxy learned from a backend's greeting.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// The server's version string (e.g. `10.11.6-MariaDB-log`).
    pub version: String,
    /// The capability flags the server offers.
    pub capabilities: u32,
    /// MariaDB's extended flags (`caps::mariadb`); 0 from MySQL.
    pub mariadb_capabilities: u32,
}

/// One authenticated connection to a datasource.
#[derive(Debug)]
pub struct BackendConn {
    /// The packet stream to the server.
    pub conn: Conn,
    /// The datasource's address, `host:port`.
    pub addr: String,
    /// The server's thread id for this connection (for KILL).
    pub thread_id: u32,
    /// The session shape the connection was opened with; the pool lends it
    /// only to sessions with the same key.
    pub key: BackendKey,
    /// Capability flags in force on this connection.
    pub caps: u32,
    /// What the server's greeting said.
    pub server: ServerInfo,
    /// When the last exchange (login, command, COM_CHANGE_USER) finished;
    /// the pool closes connections idle longer than `pool.max_idle_time`.
    pub last_used: Instant,
    /// Set when the connection is mid-response or its state is unknown: it
    /// must be closed, never reused.
    pub broken: bool,
    /// Status flags (`SERVER_STATUS_*`) of the last OK the proxy read
    /// itself: the login's, a reset's or COM_CHANGE_USER's (what a fresh
    /// session on this server starts with, `autocommit` above all), or of
    /// its own commands. Relayed responses do not change it.
    pub status: u16,
    /// As whom it is logged in (a pool lends it only to sessions of that
    /// login); COM_CHANGE_USER logs in again as the same.
    pub login: Arc<BackendLogin>,
    /// The greeting's nonce and the server's auth method, for COM_CHANGE_USER.
    nonce: Vec<u8>,
    plugin: AuthPlugin<'static>,
}

impl Drop for BackendConn {
    /// Says goodbye (COM_QUIT) on a connection in a known state, without
    /// waiting: a dropped connection would otherwise count in the server's
    /// `Aborted_clients` and log "Aborted connection … Got an error reading
    /// communication packets" each time the pool trims, a probe ends or a
    /// KILL is sent.
    fn drop(&mut self) {
        if !self.broken && self.conn.wbuf.is_empty() {
            let _ = self
                .conn
                .stream
                .try_write(&[1, 0, 0, 0, crate::protocol::cmd::QUIT]);
        }
    }
}

impl BackendConn {
    /// Connects and logs in, with the flags and collation of `key`.
    pub async fn connect(p: &ConnectParams, key: BackendKey) -> Result<Self, BackendError> {
        Self::connect_as(p, key, Arc::new(p.login())).await
    }

    /// [`BackendConn::connect`], logging in as `login`.
    pub async fn connect_as(
        p: &ConnectParams,
        key: BackendKey,
        login: Arc<BackendLogin>,
    ) -> Result<Self, BackendError> {
        let connect_err = |reason: String| BackendError::Connect {
            addr: p.addr.clone(),
            reason,
        };
        let stream = tokio::time::timeout(p.connect_timeout, TcpStream::connect(&p.addr))
            .await
            .map_err(|_| connect_err(format!("timed out after {:?}", p.connect_timeout)))?
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::time::timeout(
            p.connect_timeout * 2,
            Self::login(Conn::new(stream), p, key, login),
        )
        .await
        .map_err(|_| connect_err("login timed out".into()))?
    }

    /// The login on a fresh connection: the server's greeting, the
    /// handshake response, and the authentication exchange.
    async fn login(
        mut conn: Conn,
        p: &ConnectParams,
        key: BackendKey,
        login: Arc<BackendLogin>,
    ) -> Result<Self, BackendError> {
        let greeting = read(&mut conn, &p.addr).await?;
        if let Some(e) = parse_err(&greeting.payload) {
            return Err(BackendError::Login {
                addr: p.addr.clone(),
                code: e.code,
                message: e.message,
            });
        }
        let hs = ParseBuf(&greeting.payload)
            .parse::<HandshakePacket<'_>>(())
            .map_err(|e| protocol(&p.addr, format!("bad handshake: {e}")))?;
        let (server_caps, server_mariadb_caps) = server_capabilities(&hs, key, &p.addr)?;
        let tls = tls_for(p, server_caps)?;
        let nonce = hs.nonce();
        let plugin = hs
            .auth_plugin()
            .map(|x| x.into_owned())
            .unwrap_or(AuthPlugin::MysqlNativePassword);
        let mut negotiated =
            (caps::REQUIRED | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA | key.caps) & server_caps;
        if tls.is_some() {
            negotiated |= caps::SSL;
        }
        let mut seq = greeting.last_seq.wrapping_add(1);
        if let Some(t) = &tls {
            // The SSL request is the response's first 32 bytes: flags,
            // packet size, collation, filler, MariaDB's flags.
            let request = Self::response(&hs, &login.user, key, &plugin, negotiated, Vec::new());
            seq = start_tls(&mut conn, seq, &request[..32], t, &p.addr).await?;
        }
        let (plugin, first, proc) =
            first_answer(&login.credential, plugin, &nonce, conn.is_tls(), &p.addr)?;
        let buf = Self::response(
            &hs,
            &login.user,
            key,
            &plugin,
            negotiated,
            first.unwrap_or_default(),
        );
        conn.send(seq, &buf)
            .await
            .map_err(|e| lost(&p.addr, e.to_string()))?;
        let status =
            finish_auth(&mut conn, &p.addr, &login.credential, proc, nonce.clone()).await?;
        Ok(Self {
            conn,
            addr: p.addr.clone(),
            thread_id: hs.connection_id(),
            key,
            caps: negotiated,
            server: ServerInfo {
                version: hs.server_version_str().into_owned(),
                capabilities: server_caps,
                mariadb_capabilities: server_mariadb_caps,
            },
            last_used: Instant::now(),
            broken: false,
            status,
            login,
            nonce,
            plugin,
        })
    }

    /// The handshake response: `negotiated` flags, the proxy's login,
    /// `auth` (the plugin's first answer), the session's collation and
    /// MariaDB flags.
    fn response(
        hs: &HandshakePacket<'_>,
        user: &str,
        key: BackendKey,
        plugin: &AuthPlugin<'static>,
        negotiated: u32,
        auth: Vec<u8>,
    ) -> Vec<u8> {
        let response = HandshakeResponse::new(
            Some(auth),
            hs.server_version_parsed().unwrap_or((5, 7, 0)),
            Some(user.as_bytes()),
            None::<&[u8]>,
            Some(plugin.clone()),
            CapabilityFlags::from_bits_retain(negotiated),
            None,
            16 << 20,
        )
        .with_mariadb_ext_capabilities(MariadbCapabilities::from_bits_truncate(key.mariadb_caps));
        let mut buf = Vec::new();
        response.serialize(&mut buf);
        // HandshakeResponse always asks for utf8mb4: put the client's
        // collation in its place (byte 8: after flags and max packet).
        if let Some(b) = buf.get_mut(8) {
            *b = key.collation;
        }
        buf
    }

    /// COM_CHANGE_USER as the same login: the server rolls back what is open,
    /// releases locks, drops temporary tables and prepared statements,
    /// clears the current database and sets every session variable to the
    /// current global value — a fresh session without a new connection.
    pub async fn change_user(&mut self) -> Result<(), BackendError> {
        self.broken = true;
        let login = self.login.clone();
        let (plugin, data, proc) = first_answer(
            &login.credential,
            self.plugin.clone(),
            &self.nonce,
            self.conn.is_tls(),
            &self.addr,
        )?;
        let data = data.unwrap_or_default();
        let mut p = Vec::with_capacity(64 + login.user.len());
        p.push(crate::protocol::cmd::CHANGE_USER);
        p.extend_from_slice(login.user.as_bytes());
        p.push(0);
        p.push(
            u8::try_from(data.len())
                .map_err(|_| protocol(&self.addr, "scramble too long".into()))?,
        );
        p.extend_from_slice(&data);
        p.push(0); // no database
        p.extend_from_slice(&u16::from(self.key.collation).to_le_bytes());
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        self.conn
            .send(0, &p)
            .await
            .map_err(|e| lost(&self.addr, e.to_string()))?;
        self.status = finish_auth(
            &mut self.conn,
            &self.addr,
            &login.credential,
            proc,
            self.nonce.clone(),
        )
        .await?;
        self.broken = false;
        self.last_used = Instant::now();
        Ok(())
    }

    /// Whether the client deprecated EOF packets on this connection.
    pub fn deprecate_eof(&self) -> bool {
        self.caps & caps::DEPRECATE_EOF != 0
    }

    /// A parser for the response to a `kind` command on this connection,
    /// in the shape its capabilities give responses.
    pub fn response_parser(&self, kind: ResponseKind) -> ResponseParser {
        ResponseParser::new(kind, self.deprecate_eof())
            .with_cache_metadata(self.key.mariadb_caps & caps::mariadb::CACHE_METADATA != 0)
            .with_progress(self.key.mariadb_caps & caps::mariadb::PROGRESS != 0)
    }

    /// Sends one command and reads its whole response, keeping only the
    /// final status and any error. For the proxy's own statements (session
    /// replay, reset, ping), never for relayed ones.
    pub async fn command(
        &mut self,
        kind: ResponseKind,
        payload: &[u8],
    ) -> Result<Outcome, BackendError> {
        self.broken = true;
        self.conn
            .send(0, payload)
            .await
            .map_err(|e| lost(&self.addr, e.to_string()))?;
        let mut parser = self.response_parser(kind);
        let mut error = None;
        let mut first_row = None;
        let mut columns = Vec::new();
        loop {
            let pkt = read(&mut self.conn, &self.addr).await?;
            if let Some(e) = parse_err(&pkt.payload) {
                error = Some(e);
            }
            if parser.expects_column_def() && first_row.is_none() {
                columns.extend(packets::column_type(&pkt.payload));
            }
            let row = parser.expects_row();
            let step = parser
                .feed(&pkt.payload)
                .map_err(|e| protocol(&self.addr, e.to_string()))?;
            // A packet that leaves the parser among the rows was a row.
            if row && parser.expects_row() && first_row.is_none() {
                first_row = Some(pkt.payload.to_vec());
            }
            match step {
                Step::More => {}
                Step::Done => break,
                Step::LocalInfile => {
                    // The proxy never sends LOAD DATA LOCAL itself; refuse.
                    self.conn
                        .send(pkt.last_seq.wrapping_add(1), &[])
                        .await
                        .map_err(|e| lost(&self.addr, e.to_string()))?;
                }
            }
        }
        self.broken = false;
        self.last_used = Instant::now();
        if let Some(status) = parser.status() {
            self.status = status;
        }
        Ok(Outcome {
            status: parser.status(),
            error,
            prepare: parser.prepare_ok(),
            first_row,
            columns,
        })
    }

    /// Runs a statement of the proxy's own; a server error becomes `Err`.
    pub async fn execute(&mut self, sql: &str) -> Result<Outcome, BackendError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(crate::protocol::cmd::QUERY);
        p.extend_from_slice(sql.as_bytes());
        let out = self.command(ResponseKind::Query, &p).await?;
        out.into_result(&self.addr)
    }

    /// COM_PING: `Ok` when the server answers OK.
    pub async fn ping(&mut self) -> Result<(), BackendError> {
        let out = self
            .command(ResponseKind::Single, &[crate::protocol::cmd::PING])
            .await?;
        out.into_result(&self.addr).map(|_| ())
    }

    /// COM_RESET_CONNECTION: a clean session, as if newly logged in.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        let out = self
            .command(
                ResponseKind::Single,
                &[crate::protocol::cmd::RESET_CONNECTION],
            )
            .await?;
        out.into_result(&self.addr).map(|_| ())
    }

    /// COM_INIT_DB: makes `schema` the current database. A server error
    /// (unknown database, access denied) is in the `Outcome`, not `Err`.
    pub async fn init_db(&mut self, schema: &[u8]) -> Result<Outcome, BackendError> {
        let mut p = vec![crate::protocol::cmd::INIT_DB];
        p.extend_from_slice(schema);
        self.command(ResponseKind::Single, &p).await
    }
}

/// The end of a response the proxy read for itself.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Status flags (`SERVER_STATUS_*`) of the last OK or EOF packet; `None`
    /// if none came.
    pub status: Option<u16>,
    /// The ERR packet in the response, if any.
    pub error: Option<packets::ErrPacket>,
    /// The PREPARE_OK header of a COM_STMT_PREPARE response (statement id,
    /// column and parameter counts).
    pub prepare: Option<crate::protocol::response::PrepareOk>,
    /// The first result set row, as the server sent it.
    pub first_row: Option<Vec<u8>>,
    /// The types of the first result set's columns.
    pub columns: Vec<packets::ColumnType>,
}

impl Outcome {
    /// The first column of the first row, as text (`None` for no row or
    /// NULL).
    pub fn first_value(&self) -> Option<&[u8]> {
        let row = self.first_row.as_deref()?;
        // A text row: each column a length-encoded string, 0xfb NULL.
        if row.first() == Some(&0xfb) {
            return None;
        }
        let (len, at) = packets::read_lenenc(row)?;
        row.get(at..at.checked_add(usize::try_from(len).ok()?)?)
    }

    /// Every column of the first (text) row: `None` for NULL. `None` for
    /// no row, or one that does not parse.
    pub fn first_row_values(&self) -> Option<Vec<Option<&[u8]>>> {
        let mut row = self.first_row.as_deref()?;
        let mut values = Vec::new();
        while !row.is_empty() {
            if row[0] == 0xfb {
                values.push(None);
                row = &row[1..];
            } else {
                let (v, rest) = packets::read_lenenc_str(row)?;
                values.push(Some(v));
                row = rest;
            }
        }
        Some(values)
    }

    fn into_result(self, addr: &str) -> Result<Outcome, BackendError> {
        match self.error {
            Some(e) => Err(BackendError::Server {
                addr: addr.to_string(),
                code: e.code,
                state: e.state,
                message: e.message,
            }),
            None => Ok(self),
        }
    }
}

/// The server's capability flags and MariaDB's extended ones, checked:
/// responses are relayed as bytes, so the server must speak exactly as the
/// client was told it would.
fn server_capabilities(
    hs: &HandshakePacket<'_>,
    key: BackendKey,
    addr: &str,
) -> Result<(u32, u32), BackendError> {
    let server_caps = hs.capabilities().bits();
    if server_caps & caps::PROTOCOL_41 == 0 {
        return Err(protocol(addr, "server predates protocol 4.1".into()));
    }
    let server_mariadb_caps = if server_caps & caps::LONG_PASSWORD == 0 {
        hs.mariadb_ext_capabilities().bits()
    } else {
        0
    };
    if key.mariadb_caps & !server_mariadb_caps != 0 {
        return Err(protocol(
            addr,
            format!(
                "the server lacks MariaDB capabilities {:#x} the client agreed with the proxy",
                key.mariadb_caps & !server_mariadb_caps
            ),
        ));
    }
    Ok((server_caps, server_mariadb_caps))
}

/// The plugin named, its data (if any) and the exchange to go on with.
type FirstAnswer = (AuthPlugin<'static>, Option<Vec<u8>>, Option<AuthProc>);

/// The first answer to a server's challenge (`nonce`, by `plugin`), and
/// the plugin to name with it: for a password, what the plugin computes
/// (refusing those that would send it in clear); for a stage-1 hash, a
/// `mysql_native_password` scramble whatever the server proposed. `None`
/// for data when the plugin has nothing to send.
fn first_answer(
    credential: &Credential,
    plugin: AuthPlugin<'static>,
    nonce: &[u8],
    tls: bool,
    addr: &str,
) -> Result<FirstAnswer, BackendError> {
    match credential {
        Credential::NativeStage1(stage1) => Ok((
            AuthPlugin::MysqlNativePassword,
            Some(native_from_stage1(nonce, stage1)),
            None,
        )),
        Credential::Password(password) => {
            refuse_in_clear(&plugin, tls, addr)?;
            let mut proc = AuthProc::init(&plugin).map_err(|e| protocol(addr, e.to_string()))?;
            let first = proc
                .run(
                    AuthCtx {
                        pass: password.as_bytes(),
                        scramble: nonce,
                        tls,
                    },
                    nonce,
                )
                .map_err(|e| protocol(addr, format!("auth: {e}")))?;
            let data = first.data().map(<[u8]>::to_vec);
            Ok((plugin, data, Some(proc)))
        }
    }
}

/// The native scramble of `nonce` (its first 20 bytes: the salt) for
/// whoever holds `stage1`.
fn native_from_stage1(nonce: &[u8], stage1: &[u8; 20]) -> Vec<u8> {
    let salt = nonce.get(..20).unwrap_or(nonce);
    crate::auth::native_scramble_from_stage1(salt, stage1).to_vec()
}

/// The error for a challenge a stage-1 hash cannot answer.
fn needs_password(addr: &str, what: &str) -> BackendError {
    protocol(
        addr,
        format!(
            "the account asks for {what}, which cannot be answered without its password \
             (auth: backend logs in with mysql_native_password)"
        ),
    )
}

/// The rest of an authentication exchange after the first response was
/// sent: auth switches, more data (caching_sha2), then OK or ERR. Returns
/// the OK's status flags.
async fn finish_auth(
    conn: &mut Conn,
    addr: &str,
    credential: &Credential,
    mut proc: Option<AuthProc>,
    mut scramble: Vec<u8>,
) -> Result<u16, BackendError> {
    loop {
        let pkt = read(conn, addr).await?;
        let seq = pkt.last_seq.wrapping_add(1);
        let reply: Option<Vec<u8>> = match (pkt.payload.first(), credential) {
            (Some(0x00), _) => {
                return Ok(packets::ok_status(&pkt.payload).unwrap_or(status::AUTOCOMMIT))
            }
            (Some(0xff), _) => {
                let e = parse_err(&pkt.payload).unwrap_or_default();
                return Err(BackendError::Login {
                    addr: addr.to_string(),
                    code: e.code,
                    message: e.message,
                });
            }
            (Some(0xfe), _) => {
                // Auth switch: plugin name, NUL, new scramble.
                let (name, data) = packets::take_cstr(&pkt.payload[1..])
                    .ok_or_else(|| protocol(addr, "bad auth switch".into()))?;
                let data = data.strip_suffix(&[0]).unwrap_or(data);
                scramble = data.to_vec();
                let plugin = AuthPlugin::from_bytes(name).into_owned();
                if matches!(credential, Credential::NativeStage1(_))
                    && plugin != AuthPlugin::MysqlNativePassword
                {
                    return Err(needs_password(addr, &String::from_utf8_lossy(name)));
                }
                // The switch starts the exchange again, as the first answer.
                let (_, data, p) =
                    first_answer(credential, plugin, &scramble, conn.is_tls(), addr)?;
                proc = p;
                data
            }
            (Some(0x01), Credential::Password(password)) => {
                if pkt.payload.get(1..) == Some(&[PERFORM_FULL_AUTHENTICATION][..])
                    && !conn.is_tls()
                {
                    return Err(in_clear(
                        addr,
                        "caching_sha2_password full authentication (its password would go under an RSA key fetched in clear)",
                    ));
                }
                let p = proc
                    .as_mut()
                    .ok_or_else(|| protocol(addr, "unexpected packet during login".into()))?;
                let ctx = AuthCtx {
                    pass: password.as_bytes(),
                    scramble: &scramble,
                    tls: conn.is_tls(),
                };
                p.run(ctx, &pkt.payload[1..])
                    .map_err(|e| protocol(addr, format!("auth: {e}")))?
                    .data()
                    .map(<[u8]>::to_vec)
            }
            (Some(0x01), Credential::NativeStage1(_)) => {
                return Err(needs_password(addr, "more authentication data"))
            }
            _ => return Err(protocol(addr, "unexpected packet during login".into())),
        };
        if let Some(data) = reply {
            conn.send(seq, &data)
                .await
                .map_err(|e| lost(addr, e.to_string()))?;
        }
    }
}

/// Whether to start TLS with a server offering `server_caps`: `None` for
/// clear; an error when the dataHost's mode needs TLS and the server
/// offers none.
fn tls_for(
    p: &ConnectParams,
    server_caps: u32,
) -> Result<Option<Arc<crate::tls::BackendTls>>, BackendError> {
    match &p.tls {
        Some(t) if server_caps & caps::SSL != 0 => Ok(Some(t.clone())),
        Some(t) if t.mode != crate::tls::BackendTlsMode::Preferred => Err(protocol(
            &p.addr,
            format!(
                "the server offers no TLS, and datahosts[].tls.mode is {:?}",
                t.mode
            ),
        )),
        _ => Ok(None),
    }
}

/// Sends the SSL request (sequence id `seq`) and runs the TLS handshake;
/// returns the next sequence id.
async fn start_tls(
    conn: &mut Conn,
    seq: u8,
    request: &[u8],
    tls: &crate::tls::BackendTls,
    addr: &str,
) -> Result<u8, BackendError> {
    let next = conn
        .send(seq, request)
        .await
        .map_err(|e| lost(addr, e.to_string()))?;
    let name = crate::tls::server_name(addr).map_err(|e| protocol(addr, e.to_string()))?;
    conn.connect_tls(tls.config.clone(), name)
        .await
        .map_err(|e| protocol(addr, format!("TLS: {e}")))?;
    Ok(next)
}

/// caching_sha2_password's "no cached entry: send the password".
const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

/// The error for a login step that would expose the password on a
/// connection in clear.
fn in_clear(addr: &str, what: &str) -> BackendError {
    protocol(
        addr,
        format!("refused {what} on a connection in clear: set datahosts[].tls"),
    )
}

/// Refuses the methods that send the password itself (or under a key the
/// server sends) when the connection is not encrypted.
fn refuse_in_clear(plugin: &AuthPlugin<'_>, tls: bool, addr: &str) -> Result<(), BackendError> {
    match plugin {
        AuthPlugin::MysqlClearPassword if !tls => Err(in_clear(addr, "mysql_clear_password")),
        AuthPlugin::Sha256Password if !tls => Err(in_clear(addr, "sha256_password")),
        _ => Ok(()),
    }
}

async fn read(conn: &mut Conn, addr: &str) -> Result<crate::conn::Packet, BackendError> {
    conn.read_packet(MAX_INTERNAL_PACKET)
        .await
        .map_err(|e| match e {
            ReadError::Closed | ReadError::Io(_) => lost(addr, e.to_string()),
            other => protocol(addr, other.to_string()),
        })
}

fn protocol(addr: &str, what: String) -> BackendError {
    BackendError::Protocol {
        addr: addr.to_string(),
        what,
    }
}

fn lost(addr: &str, reason: String) -> BackendError {
    BackendError::Lost {
        addr: addr.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_of_a_text_row() {
        let outcome = |row: &[u8]| Outcome {
            first_row: Some(row.to_vec()),
            ..Outcome::default()
        };
        assert_eq!(outcome(b"\x0212\x01x").first_value(), Some(&b"12"[..]));
        assert_eq!(outcome(b"\xfb\x01x").first_value(), None);
        assert_eq!(outcome(b"\x05ab").first_value(), None, "truncated");
        assert_eq!(outcome(b"").first_value(), None);
        assert_eq!(Outcome::default().first_value(), None);
    }

    /// A fake server (a real one would need a PAM or sha256 setup to ask
    /// this): greets with native password, answers the login with
    /// `then`, and returns every byte it got after the handshake response.
    async fn fake_server(then: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let caps = caps::REQUIRED | caps::CONNECT_WITH_DB;
            let mut g = vec![10];
            g.extend_from_slice(b"10.11.0-fake\0");
            g.extend_from_slice(&7u32.to_le_bytes());
            g.extend_from_slice(b"abcdefgh\0");
            g.extend_from_slice(&(caps as u16).to_le_bytes());
            g.push(45);
            g.extend_from_slice(&2u16.to_le_bytes());
            g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
            g.push(21);
            g.extend_from_slice(&[0; 10]);
            g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
            let mut out = bytes::BytesMut::new();
            crate::protocol::frame::put_packet(&mut out, 0, &g);
            s.write_all(&out).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 4, "a handshake response");
            let mut out = bytes::BytesMut::new();
            crate::protocol::frame::put_packet(&mut out, 2, &then);
            s.write_all(&out).await.unwrap();
            let mut after = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut after)).await;
            after
        });
        (addr, task)
    }

    fn params(addr: String) -> ConnectParams {
        ConnectParams {
            addr,
            user: "u".into(),
            password: "the-secret".into(),
            connect_timeout: Duration::from_secs(2),
            tls: None,
        }
    }

    #[tokio::test]
    async fn no_password_goes_out_in_clear() {
        // An auth switch to mysql_clear_password, and caching_sha2's
        // "send the full password" (it would fetch an RSA key in clear).
        let mut clear = vec![0xfe];
        clear.extend_from_slice(b"mysql_clear_password\0\0");
        for then in [clear, vec![0x01, PERFORM_FULL_AUTHENTICATION]] {
            let (addr, server) = fake_server(then.clone()).await;
            let e = BackendConn::connect(&params(addr), BackendKey::default())
                .await
                .expect_err("refused");
            assert!(e.to_string().contains("in clear"), "{e}");
            let after = server.await.unwrap();
            assert!(
                !after.windows(10).any(|w| w == b"the-secret"),
                "{then:?}: the password went out: {after:?}"
            );
        }
    }
}
