//! `auth: backend`: client accounts read from the datasources themselves.
//!
//! The proxy reads `mysql.global_priv` on each dataHost's active
//! datasource (as that dataHost's `user`, which needs `SELECT` on the
//! table) and takes the union, the default dataHost's entry first when
//! both have the same account: every `auth_refresh` and, rate-limited,
//! when a client names an account it does not know or fails to prove one
//! it does (a new account, a changed password). A client proves its `mysql_native_password` as
//! it would to the server; what the proof yields, SHA1(password), lets
//! each session log in to datasources as that same account
//! ([`crate::backend::Credential::NativeStage1`]), so the server applies
//! its grants. The proxy never learns a password.
//!
//! Accounts that authenticate otherwise (ed25519, unix_socket, gssapi,
//! pam) are known but refused, with the reason in the log; so are locked
//! ones. `REQUIRE SSL` (or X509, or a cipher/issuer/subject) makes the
//! proxy require TLS from the client; `MAX_USER_CONNECTIONS` limits the
//! sessions an account holds through this proxy. The anonymous account
//! (`''@host`) serves names no account has, as on the server; roles are
//! skipped.

use crate::auth::Secret;
use crate::backend::{BackendConn, BackendError, BackendKey, ConnectParams};
use crate::topology::Topology;
use crate::users::{Host, Refusal, User, Users};
use arc_swap::ArcSwap;
use serde_json::Value;
use std::time::{Duration, Instant};
use thiserror::Error;

/// One query: every account as `[user, host, priv]`, `priv` being
/// `mysql.global_priv.Priv` (a JSON object, or its text).
const QUERY: &str = "SELECT JSON_ARRAYAGG(JSON_ARRAY(User, Host, Priv)) FROM mysql.global_priv";

/// Why the accounts could not be read.
#[derive(Debug, Error)]
pub enum AccountsError {
    /// The datasource could not be reached or refused the query (no
    /// `SELECT` on `mysql.global_priv`, or a server without the table).
    #[error("reading mysql.global_priv: {0}")]
    Backend(#[from] BackendError),
    /// It did not answer within the limit.
    #[error("reading mysql.global_priv: no answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not what the query returns.
    #[error("mysql.global_priv: {0}")]
    Malformed(String),
}

/// One account: its name, host text and what it allows.
type Entry = (String, String, User);

/// Reads the accounts of the datasource at `params`.
async fn load_entries(
    params: &ConnectParams,
    timeout: Duration,
) -> Result<Vec<Entry>, AccountsError> {
    let read = async {
        let mut c = BackendConn::connect(params, BackendKey::default()).await?;
        // JSON_ARRAYAGG is cut at group_concat_max_len (1 MiB by default).
        c.execute("SET SESSION group_concat_max_len = 1073741824")
            .await?;
        c.execute(QUERY).await
    };
    let out = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| AccountsError::Timeout(timeout))??;
    match out.first_value() {
        Some(json) => parse_entries(json),
        None => Ok(Vec::new()),
    }
}

/// The accounts in the query's answer.
fn parse_entries(json: &[u8]) -> Result<Vec<Entry>, AccountsError> {
    let bad = |m: &str| AccountsError::Malformed(m.to_string());
    let rows: Vec<(String, String, Value)> =
        serde_json::from_slice(json).map_err(|e| AccountsError::Malformed(e.to_string()))?;
    let mut entries = Vec::with_capacity(rows.len());
    for (name, host, privs) in rows {
        // MariaDB embeds the column as JSON; as text, it is read here.
        let privs = match privs {
            Value::String(text) => {
                serde_json::from_str(&text).map_err(|_| bad("Priv is not JSON"))?
            }
            Value::Object(_) => privs,
            _ => return Err(bad("Priv is not a JSON object")),
        };
        if host.is_empty() || privs["is_role"] == Value::Bool(true) {
            continue;
        }
        let user = account(&privs);
        entries.push((name, host, user));
    }
    Ok(entries)
}

/// One account from its `Priv` JSON.
fn account(privs: &Value) -> User {
    let require_tls = privs["ssl_type"].as_u64().is_some_and(|t| t != 0);
    let max_connections = privs["max_user_connections"]
        .as_i64()
        .filter(|n| *n > 0)
        .and_then(|n| usize::try_from(n).ok());
    // The method, or (MariaDB's `IDENTIFIED VIA a OR b`) the alternatives;
    // an account is usable when one of them is mysql_native_password.
    let mut methods = vec![privs];
    if let Some(or) = privs["auth_or"].as_array() {
        methods.extend(or.iter().filter(|m| m.get("plugin").is_some()));
    }
    let method = |m: &Value| {
        (
            m["plugin"]
                .as_str()
                .unwrap_or(crate::auth::NATIVE)
                .to_string(),
            m["authentication_string"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let native = methods
        .iter()
        .map(|m| method(m))
        .find(|(plugin, _)| plugin == crate::auth::NATIVE);
    let (secret, mut refused) = match native {
        Some((_, hash)) => match Secret::from_native_hash(&hash) {
            Some(s) => (s, None),
            None => (
                Secret::Password(String::new()),
                Some(Refusal::Plugin(format!(
                    "{} with an unreadable hash",
                    crate::auth::NATIVE
                ))),
            ),
        },
        None => (
            Secret::Password(String::new()),
            Some(Refusal::Plugin(method(privs).0)),
        ),
    };
    if privs["account_locked"] == Value::Bool(true) {
        refused = Some(Refusal::Locked);
    }
    User {
        secret,
        require_tls,
        max_connections,
        from_backend: true,
        refused,
    }
}

/// Serialises reads of the accounts and spaces them out.
#[derive(Debug, Default)]
pub struct Refresher {
    /// When the last read started and finished; held while one runs, so
    /// callers that arrive meanwhile wait for it.
    last: tokio::sync::Mutex<Option<(Instant, Instant)>>,
}

/// Reads asked for by logins start at least this far apart: names not
/// known cost each datasource at most one query per 2 s, and a login waits
/// at most that long for a read.
pub const ON_DEMAND_GAP: Duration = Duration::from_secs(2);

impl Refresher {
    /// Has the accounts read again and swapped in, by a read that starts
    /// after this call: one already started since serves, otherwise a new
    /// one starts once `gap` has passed since the last one finished.
    /// Returns whether the table was read since the call.
    pub async fn refresh(
        &self,
        topology: &Topology,
        users: &ArcSwap<Users>,
        timeout: Duration,
        gap: Duration,
    ) -> Result<bool, AccountsError> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, finished)) = *last {
            if started >= asked {
                return Ok(true);
            }
            tokio::time::sleep(gap.saturating_sub(finished.elapsed())).await;
        }
        let started = Instant::now();
        let read = read_all(topology, timeout).await;
        *last = Some((started, Instant::now()));
        let read = read?;
        metrics::gauge!("zerodb_backend_accounts").set(read.len() as f64);
        users.store(std::sync::Arc::new(read));
        Ok(true)
    }
}

/// The union of every dataHost's accounts, the default dataHost's first:
/// an account both have is taken from it. A dataHost that cannot be read
/// is left out (logged); the default one failing fails the read.
async fn read_all(topology: &Topology, timeout: Duration) -> Result<Users, AccountsError> {
    let default = topology.default_datahost().clone();
    let others = topology
        .datahosts()
        .iter()
        .filter(|d| !std::sync::Arc::ptr_eq(d, &default))
        .cloned();
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for dh in std::iter::once(default.clone()).chain(others) {
        let active = dh.active();
        let entries = match load_entries(active.datasource.pool.params(), timeout).await {
            Ok(e) => e,
            Err(e) if !std::sync::Arc::ptr_eq(&dh, &default) => {
                tracing::warn!(datahost = %dh.name, error = %e, "auth: backend: this dataHost's accounts not read");
                continue;
            }
            Err(e) => return Err(e),
        };
        for (name, host, user) in entries {
            if seen.insert((name.clone(), host.clone())) {
                all.push((name, Host::parse(&host), user));
            }
        }
    }
    Ok(Users::from_entries(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &[u8]) -> Result<Users, AccountsError> {
        let entries = parse_entries(json)?;
        Ok(Users::from_entries(entries.into_iter().map(
            |(name, host, user)| (name, Host::parse(&host), user),
        )))
    }

    #[test]
    fn accounts_as_mariadb_stores_them() {
        // What MariaDB 10.11 and 11.8 put in mysql.global_priv.
        let rows = serde_json::json!([
            [
                "app",
                "%",
                r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19","ssl_type":0,"max_user_connections":5}"#
            ],
            [
                "tls",
                "%",
                r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19","ssl_type":1}"#
            ],
            [
                "ed",
                "%",
                r#"{"access":0,"plugin":"ed25519","authentication_string":"ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY"}"#
            ],
            [
                "either",
                "%",
                r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19","auth_or":[{"plugin":"unix_socket"},{}]}"#
            ],
            [
                "sock",
                "localhost",
                r#"{"access":0,"plugin":"unix_socket","authentication_string":""}"#
            ],
            [
                "locked",
                "%",
                r#"{"access":0,"plugin":"mysql_native_password","authentication_string":"","account_locked":true}"#
            ],
            [
                "nopw",
                "10.0.%",
                r#"{"access":0,"plugin":"mysql_native_password","authentication_string":""}"#
            ],
            ["r1", "", r#"{"access":0,"is_role":true}"#],
            ["", "localhost", r#"{"access":0}"#],
        ]);
        let users = parse(rows.to_string().as_bytes()).expect("parsed");
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let app = users.get_for("app", local).expect("app");
        assert!(matches!(app.secret, Secret::NativeHash(_)));
        assert_eq!((app.max_connections, app.require_tls), (Some(5), false));
        assert!(app.from_backend && app.refused.is_none());
        assert!(users.get_for("tls", local).unwrap().require_tls);
        assert_eq!(
            users.get_for("ed", local).unwrap().refused,
            Some(Refusal::Plugin("ed25519".into()))
        );
        assert!(users.get_for("either", local).unwrap().refused.is_none());
        assert_eq!(
            users.get_for("sock", local).unwrap().refused,
            Some(Refusal::Plugin("unix_socket".into()))
        );
        assert_eq!(
            users.get_for("locked", local).unwrap().refused,
            Some(Refusal::Locked)
        );
        let elsewhere: std::net::IpAddr = "10.9.9.9".parse().unwrap();
        assert!(users.get_for("nopw", elsewhere).is_none(), "another host");
        let nopw = users.get_for("nopw", "10.0.1.2".parse().unwrap()).unwrap();
        assert_eq!(nopw.secret, Secret::Password(String::new()));
        assert!(users.get("r1").is_none(), "a role");
        let anonymous = users.get_for("anyone", local).expect("''@localhost");
        assert_eq!(anonymous.secret, Secret::Password(String::new()));
        assert_eq!(users.len(), 8);
        assert!(parse(b"[[1,2]]").is_err());
        assert!(parse(br#"[["a","%","not json"]]"#).is_err());
    }
}
