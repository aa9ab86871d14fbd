//! Greeting and authenticating clients; COM_CHANGE_USER.

use super::login::{refused_client_charset, ChangeUser, Login41};
use super::{Fail, Flow, Session};
use crate::accounts;
use crate::auth::{self, Method};
use crate::backend::BackendKey;
use crate::backend::{BackendLogin, Credential};
use crate::config::AuthMode;
use crate::errors::ClientError;
use crate::protocol::caps;
use crate::protocol::packets;
use crate::users::{Login, Refusal, TooMany, User};
use std::sync::Arc;

/// AuthMoreData byte telling a caching_sha2_password client its fast
/// authentication succeeded.
const FAST_AUTH_SUCCESS: u8 = 0x03;

/// An account a client proved it holds, and how the session logs in to
/// datasources as it (`auth: backend`).
type Proved = (Arc<User>, Option<Arc<BackendLogin>>);

/// Failed COM_CHANGE_USERs after which a session gets no more tries.
const MAX_FAILED_CHANGE_USERS: u8 = 3;

impl Session {
    /// What the greeting offers: the backends' flags, and TLS when the
    /// proxy has a certificate.
    fn offered(&self) -> u32 {
        let tls = if self.shared.tls.load().is_some() {
            caps::SSL
        } else {
            0
        };
        self.shared.offered_caps() | tls
    }

    fn greeting(&self) -> Vec<u8> {
        let offered = self.offered();
        let method =
            Method::from_name(self.shared.config.auth_plugin.as_bytes()).unwrap_or(Method::Native);
        let version = self.shared.server_version.load();
        let mut p = Vec::with_capacity(96);
        p.push(10);
        p.extend_from_slice(version.as_bytes());
        p.push(0);
        p.extend_from_slice(&self.id().to_le_bytes());
        p.extend_from_slice(&self.salt[..8]);
        p.push(0);
        p.extend_from_slice(&(offered as u16).to_le_bytes());
        p.push(self.key.collation);
        p.extend_from_slice(&self.fresh_status().to_le_bytes());
        p.extend_from_slice(&((offered >> 16) as u16).to_le_bytes());
        p.push(auth::SALT_LEN as u8 + 1);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&self.shared.offered_mariadb_caps().to_le_bytes());
        p.extend_from_slice(&self.salt[8..]);
        p.push(0);
        p.extend_from_slice(method.name().as_bytes());
        p.push(0);
        p
    }

    /// The client's host as MariaDB names it in "Access denied for user
    /// 'u'@'host'": `localhost` for a loopback address (the server's name
    /// for it without asking DNS), the address otherwise.
    fn client_host(&self) -> String {
        if self.peer.ip().is_loopback() {
            "localhost".into()
        } else {
            self.peer.ip().to_string()
        }
    }

    /// Counts a failed login against the client's address (see
    /// `limits.max_connect_errors`).
    pub(super) fn login_failed(&self) {
        let limits = self.shared.limits.load();
        if self
            .shared
            .host_blocks
            .failed(self.peer.ip(), &limits, std::time::Instant::now())
        {
            metrics::counter!("zerodb_limit_hits_total", "limit" => "max_connect_errors")
                .increment(1);
            tracing::warn!(peer = %self.peer.ip(), failures = limits.max_connect_errors, block = ?limits.host_block_time,
                "address blocked after failed logins in a row");
        }
    }

    /// Sends an error during login and gives up on the connection.
    async fn refuse<T>(&mut self, e: ClientError) -> Result<T, ()> {
        metrics::counter!("zerodb_login_failures_total", "code" => e.code.to_string()).increment(1);
        let _ = self.client.send(self.seq, &e.packet()).await;
        Err(())
    }

    /// The account `user` logs in as from this client's address.
    fn account(&self, user: &str) -> Option<Arc<User>> {
        self.shared
            .users
            .load()
            .get_for(user, self.peer.ip())
            .cloned()
    }

    /// Under `auth: backend`, has the datasource's accounts read again (at
    /// most one read per [`accounts::ON_DEMAND_GAP`], shared by the logins
    /// waiting for it): a name not known or a proof that fails may be an
    /// account created or a password changed since. Whether the table was
    /// read.
    async fn reread_accounts(&self) -> bool {
        if self.shared.config.auth != AuthMode::Backend {
            return false;
        }
        match self
            .shared
            .accounts
            .refresh(
                &self.shared.topology,
                &self.shared.users,
                self.shared.config.pool.command_timeout,
                accounts::ON_DEMAND_GAP,
            )
            .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(session = self.id(), error = %e, "auth: backend: accounts not read");
                false
            }
        }
    }

    /// Checks a scramble computed by `method` with `salt`; if the client
    /// used a method the proxy cannot check (an unknown plugin, or
    /// caching_sha2_password for an account held as a native hash),
    /// switches it to mysql_native_password with a fresh salt first.
    /// Returns the account, if the client proved it holds its password,
    /// and (for a datasource's own account) how to log in to datasources
    /// as it.
    async fn authenticate(
        &mut self,
        user: &str,
        method: Option<Method>,
        response: Vec<u8>,
    ) -> Result<Option<Proved>, ()> {
        let mut account = self.account(user);
        if account.is_none() && self.reread_accounts().await {
            account = self.account(user);
        }
        let checkable = method.filter(|m| account.as_ref().is_none_or(|a| a.secret.checks(*m)));
        let (method, response) = match checkable {
            Some(m) => (m, response),
            None => {
                self.salt = auth::new_salt();
                let mut switch = vec![0xfe];
                switch.extend_from_slice(auth::NATIVE.as_bytes());
                switch.push(0);
                switch.extend_from_slice(&self.salt);
                switch.push(0);
                self.seq = self.client.send(self.seq, &switch).await.map_err(drop)?;
                let pkt = self.client.read_packet(1024).await.map_err(drop)?;
                self.seq = pkt.last_seq.wrapping_add(1);
                (Method::Native, pkt.payload)
            }
        };
        let Some(mut account) = account else {
            return Ok(None);
        };
        if let Some(Refusal::Plugin(plugin)) = &account.refused {
            tracing::warn!(session = self.id(), %user, peer = %self.peer, %plugin,
                "login refused: the account authenticates with a plugin zeroDB cannot check or pass on (use mysql_native_password)");
            return Ok(None);
        }
        if !auth::verify(method, &self.salt, &account.secret, &response) {
            // The password may have changed on the server since.
            let again = match self.reread_accounts().await {
                true => self.account(user),
                false => None,
            };
            match again {
                Some(a)
                    if a.secret.checks(method)
                        && auth::verify(method, &self.salt, &a.secret, &response) =>
                {
                    account = a;
                }
                _ => return Ok(None),
            }
        }
        if method == Method::CachingSha2 && !response.is_empty() {
            self.seq = self
                .client
                .send(self.seq, &[0x01, FAST_AUTH_SUCCESS])
                .await
                .map_err(drop)?;
        }
        let backend = account
            .from_backend
            .then(|| self.backend_login(user, &account.secret, &response))
            .flatten();
        Ok(Some((account, backend)))
    }

    /// How a session proven to hold `secret` logs in to datasources as
    /// `user`: with SHA1(password), recovered from its native `response`
    /// (or with no password, for an account without one).
    fn backend_login(
        &self,
        user: &str,
        secret: &auth::Secret,
        response: &[u8],
    ) -> Option<Arc<BackendLogin>> {
        let credential = match secret {
            auth::Secret::NativeHash(hash) => {
                Credential::NativeStage1(auth::native_stage1(&self.salt, hash, response)?)
            }
            auth::Secret::Password(p) => Credential::Password(p.clone()),
        };
        Some(Arc::new(BackendLogin {
            user: user.to_string(),
            credential,
        }))
    }

    /// Whether an authenticated `account` may have this session: over TLS
    /// if it requires it, in a character set a client can speak, within
    /// its `max_connections` (a session already counted in as `user`
    /// keeps its slot: `Ok(None)`). Refusals are what MariaDB answers.
    fn admit(
        &self,
        user: &str,
        account: &User,
        collation: Option<u8>,
        with_password: bool,
    ) -> Result<Option<Login>, ClientError> {
        match &account.refused {
            Some(Refusal::Locked) => {
                tracing::info!(session = self.id(), %user, peer = %self.peer, "login refused: the account is locked");
                return Err(ClientError::new(
                    4151,
                    "HY000",
                    "Access denied, this account is locked",
                ));
            }
            // Refused in `authenticate`, whatever the proof.
            Some(Refusal::Plugin(_)) | None => {}
        }
        if account.require_tls && !self.client.is_tls() {
            tracing::info!(session = self.id(), %user, peer = %self.peer, "login refused: the account requires TLS");
            return Err(ClientError::access_denied(
                user,
                &self.client_host(),
                with_password,
            ));
        }
        if let Some(e) = collation.and_then(refused_client_charset) {
            return Err(e);
        }
        if user == self.user && self.login.is_some() {
            return Ok(None);
        }
        self.count_in(user, account).map(Some)
    }

    /// Counts the session in as `user`, or the error when the account
    /// already holds its `max_connections` sessions (MariaDB's
    /// ER_USER_LIMIT_REACHED).
    fn count_in(&self, user: &str, account: &User) -> Result<Login, ClientError> {
        self.shared
            .logins
            .enter(user, account.max_connections)
            .map_err(|TooMany { limit }| {
                metrics::counter!("zerodb_limit_hits_total", "limit" => "user_max_connections")
                    .increment(1);
                ClientError::new(
                    1226,
                    "42000",
                    format!(
                        "User '{user}' has exceeded the 'max_connections' resource (current value: {limit})"
                    ),
                )
            })
    }

    /// The client's handshake response, read and parsed (after TLS, when
    /// it asks for it first); a bad one is answered with 1043.
    async fn read_login(&mut self) -> Result<Login41, ()> {
        let bad = |why: &str| ClientError::new(1043, "08S01", format!("Bad handshake{why}"));
        let mut pkt = self.client.read_packet(64 * 1024).await.map_err(drop)?;
        let mut client_caps = packets::u32_at(&pkt.payload, 0).unwrap_or(0);
        if client_caps & caps::SSL != 0 {
            // An SSL request: the flags, the packet size, the collation,
            // 23 bytes of filler; TLS starts right after it.
            let Some(config) = self.shared.tls.load_full() else {
                return self.refuse(bad(": TLS was not offered")).await;
            };
            if pkt.payload.len() != 32 {
                self.login_failed();
                return self.refuse(bad(": not an SSL request")).await;
            }
            if let Err(e) = self.client.accept_tls(config).await {
                metrics::counter!("zerodb_tls_handshake_failures_total").increment(1);
                tracing::info!(session = self.id(), peer = %self.peer, error = %e, "TLS handshake failed");
                self.login_failed();
                return Err(());
            }
            pkt = self.client.read_packet(64 * 1024).await.map_err(drop)?;
            client_caps = packets::u32_at(&pkt.payload, 0).unwrap_or(0);
        }
        self.seq = pkt.last_seq.wrapping_add(1);
        let p = pkt.payload;
        if client_caps & caps::PROTOCOL_41 == 0 {
            return self
                .refuse(bad(": zeroDB needs protocol 4.1 clients"))
                .await;
        }
        if !self.client.is_tls() && self.shared.config_in_force().tls.require {
            metrics::counter!("zerodb_limit_hits_total", "limit" => "tls_require").increment(1);
            return self
                .refuse(ClientError::new(
                    3159,
                    "HY000",
                    "Connections using insecure transport are prohibited: this proxy requires TLS (tls.require)",
                ))
                .await;
        }
        let Some(login) = Login41::parse(&p) else {
            self.login_failed();
            return self.refuse(bad("")).await;
        };
        Ok(login)
    }

    /// The connection phase: greeting, the client's answer, authentication,
    /// and (when the client names a schema) binding a backend, so a wrong
    /// schema fails the login as it would on MySQL.
    pub(super) async fn handshake(&mut self) -> Result<(), ()> {
        self.key = BackendKey::default();
        let greeting = self.greeting();
        self.seq = self.client.send(0, &greeting).await.map_err(drop)?;
        let login = self.read_login().await?;
        let user = login.user;
        let had_password = !login.response.is_empty();
        let Some((account, backend_login)) = self
            .authenticate(&user, login.method, login.response)
            .await?
        else {
            let host = self.client_host();
            tracing::info!(session = self.id(), %user, peer = %self.peer, "login refused");
            self.login_failed();
            return self
                .refuse(ClientError::access_denied(&user, &host, had_password))
                .await;
        };
        match self.admit(&user, &account, Some(login.collation), had_password) {
            Ok(l) => self.login = l,
            Err(e) => {
                if e.code == 1045 {
                    self.login_failed();
                }
                return self.refuse(e).await;
            }
        }
        self.client_caps = login.client_caps & self.shared.offered_caps();
        self.key = BackendKey::new(
            self.client_caps,
            login.collation,
            login.mariadb_caps & self.shared.offered_mariadb_caps(),
        );
        self.user = user;
        self.backend_login = backend_login;
        self.handle.set_user(&self.user);
        if let Some(db) = &login.db {
            self.datahost = self.shared.topology.route(Some(db)).clone();
        }
        self.st.status = self.fresh_status();
        if let Some(db) = login.db {
            self.st.schema = Some(db);
            if let Err(e) = self.ensure_backend().await {
                return self.refuse(e).await;
            }
        }
        let ok = packets::ok(0, 0, self.st.status, 0);
        self.seq = self.client.send(self.seq, &ok).await.map_err(drop)?;
        if self.client_caps & caps::COMPRESS != 0 {
            self.client.start_compression();
        }
        self.shared.host_blocks.succeeded(self.peer.ip());
        tracing::debug!(session = self.id(), user = %self.user, peer = %self.peer, "logged in");
        Ok(())
    }

    /// COM_CHANGE_USER: the new user is authenticated like a login (never a
    /// free OK); on success the session starts afresh on a reset backend
    /// connection. On failure it is answered 1045 and the session goes on
    /// as its old user in its old schema, otherwise reset, as on MariaDB;
    /// after three failures every COM_CHANGE_USER is refused (MariaDB's
    /// guard against guessing passwords, MDEV-3915).
    pub(super) async fn change_user(&mut self, payload: Vec<u8>) -> Flow {
        if self.failed_change_users >= MAX_FAILED_CHANGE_USERS {
            return self
                .reply_err(ClientError::new(1047, "08S01", "Unknown command"))
                .await;
        }
        let Some(req) = ChangeUser::parse(&payload[1..], self.client_caps) else {
            let _ = self
                .reply_err(ClientError::malformed("COM_CHANGE_USER"))
                .await;
            return Flow::Close;
        };
        let method = match &req.plugin {
            Some(name) => Method::from_name(name),
            None => Some(Method::Native),
        };
        let with_password = !req.auth.is_empty();
        let account = match self.authenticate(&req.user, method, req.auth).await {
            Ok(account) => account,
            Err(()) => return Flow::Close,
        };
        let refused = match &account {
            Some((a, _)) => match self.admit(&req.user, a, req.collation, with_password) {
                Ok(login) => {
                    if login.is_some() {
                        self.login = login;
                    }
                    None
                }
                Err(e) => Some(e),
            },
            None => Some(ClientError::access_denied(
                &req.user,
                &self.client_host(),
                with_password,
            )),
        };
        if let Some(e) = refused {
            self.failed_change_users += 1;
            tracing::info!(session = self.id(), user = %req.user, peer = %self.peer, code = e.code, "change_user refused");
            metrics::counter!("zerodb_login_failures_total", "code" => e.code.to_string())
                .increment(1);
            self.release_backend();
            self.st.reset(self.fresh_status());
            return self.reply_err(e).await;
        }
        self.user = req.user;
        self.backend_login = account.and_then(|(_, b)| b);
        self.handle.set_user(&self.user);
        if let Some(c) = req.collation {
            self.key = BackendKey::new(self.client_caps, c, self.key.mariadb_caps);
        }
        self.release_backend();
        self.datahost = match &req.db {
            Some(db) => self.shared.topology.route(Some(db)).clone(),
            None => self.shared.topology.default_datahost().clone(),
        };
        self.st = Default::default();
        self.st.status = self.fresh_status();
        if let Some(db) = req.db {
            self.st.schema = Some(db);
            if let Err(e) = self.ensure_backend().await {
                return self.reply_err(e).await;
            }
        }
        match self.reply_ok().await {
            Ok(()) => Flow::Continue,
            Err(Fail::Close | Fail::Client(_) | Fail::Unanswered(_) | Fail::NotReceived(_)) => {
                Flow::Close
            }
        }
    }
}
