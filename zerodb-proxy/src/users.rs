//! The client accounts: under `auth: static` the `users` of the config,
//! their secrets read from it, a file or the environment; under `auth:
//! backend` the datasources' own (see [`crate::accounts`]), by name and
//! host as MariaDB matches them. And how many sessions each holds.
//!
//! The table is built whole (at start, at each reload, at each read of
//! the datasources' accounts) and swapped whole; the per-user session
//! counts live apart from it, so a swap neither forgets nor resets them.

use crate::auth::Secret;
use crate::config::UserConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use zerodb_core::config::ConfigError;

/// One account clients log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// What checks the client's proof.
    pub secret: Secret,
    /// Whether the account may log in only over TLS.
    pub require_tls: bool,
    /// Most sessions logged in as this account at once (`None`: no limit
    /// but the proxy's own `max_connections`).
    pub max_connections: Option<usize>,
    /// A datasource's own account (`auth: backend`): sessions log in to
    /// datasources as it, with what the client's login proved.
    pub from_backend: bool,
    /// Why no login as this account is accepted, however it proves itself.
    pub refused: Option<Refusal>,
}

/// Why an account of the datasources cannot log in through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `ACCOUNT LOCK`.
    Locked,
    /// It authenticates with a plugin the proxy cannot check, or whose
    /// proof it could not pass on to a datasource (ed25519, unix_socket,
    /// gssapi, pam, …): named here.
    Plugin(String),
}

/// The accounts by name, each name with its host entries, most specific
/// first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Users {
    by_name: HashMap<String, Vec<(Host, Arc<User>)>>,
}

/// The host part of an account (`'app'@'10.0.%'`), matched against the
/// client's address as MariaDB matches it with `skip_name_resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `%`: any address.
    Any,
    /// `localhost`: a loopback address (the client is on the proxy's host).
    Localhost,
    /// An address, or a pattern of one with `%` (any run of characters)
    /// and `_` (one character): `10.0.%`, `192.168.1._`, `::1`.
    Pattern(String),
    /// `address/netmask` (IPv4): `10.0.0.0/255.255.0.0`.
    Netmask(u32, u32),
    /// A host name other than `localhost`: never matched, since the proxy
    /// does not resolve names (as a server with `skip_name_resolve`).
    Name(String),
}

impl Host {
    /// Reads the host part of an account.
    pub fn parse(text: &str) -> Self {
        if text == "%" {
            return Self::Any;
        }
        if text.eq_ignore_ascii_case("localhost") {
            return Self::Localhost;
        }
        if let Some((a, m)) = text.split_once('/') {
            if let (Ok(a), Ok(m)) = (
                a.parse::<std::net::Ipv4Addr>(),
                m.parse::<std::net::Ipv4Addr>(),
            ) {
                return Self::Netmask(u32::from(a), u32::from(m));
            }
        }
        let address_like = text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '%' | '_'));
        if address_like {
            Self::Pattern(text.to_ascii_lowercase())
        } else {
            Self::Name(text.to_string())
        }
    }

    /// Whether a client at `ip` matches.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match self {
            Self::Any => true,
            Self::Localhost => ip.is_loopback(),
            Self::Pattern(p) => like(p.as_bytes(), ip.to_string().as_bytes()),
            Self::Netmask(addr, mask) => match ip {
                IpAddr::V4(v4) => u32::from(v4) & mask == *addr,
                IpAddr::V6(_) => false,
            },
            Self::Name(_) => false,
        }
    }

    /// Sort key, most specific first (as MariaDB orders its host entries):
    /// names and exact addresses, then netmasks, then patterns by how much
    /// comes before their first wildcard, `%` last.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Self::Localhost | Self::Name(_) => (0, std::cmp::Reverse(0)),
            Self::Pattern(p) => match p.find(['%', '_']) {
                None => (0, std::cmp::Reverse(0)),
                Some(at) => (2, std::cmp::Reverse(at)),
            },
            Self::Netmask(..) => (1, std::cmp::Reverse(0)),
            Self::Any => (3, std::cmp::Reverse(0)),
        }
    }
}

/// SQL `LIKE` without escapes: `%` any run, `_` any one character.
fn like(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'%', rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some((b'_', rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

impl Users {
    /// Resolves every entry of `users`: reads `password_file`s and
    /// `password_env` variables, parses `password_hash`es. The first entry
    /// that cannot be resolved is the error.
    pub fn resolve(entries: &[UserConfig]) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::with_capacity(entries.len());
        for u in entries {
            let user = User {
                secret: secret_of(u)?,
                require_tls: u.require_tls,
                max_connections: u.max_connections,
                from_backend: false,
                refused: None,
            };
            if by_name
                .insert(u.name.clone(), vec![(Host::Any, Arc::new(user))])
                .is_some()
            {
                return Err(invalid(format!("user `{}` is listed twice", u.name)));
            }
        }
        Ok(Self { by_name })
    }

    /// A table of accounts given by name and host (in any order).
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Host, User)>) -> Self {
        let mut by_name: HashMap<String, Vec<(Host, Arc<User>)>> = HashMap::new();
        for (name, host, user) in entries {
            by_name
                .entry(name)
                .or_default()
                .push((host, Arc::new(user)));
        }
        for hosts in by_name.values_mut() {
            hosts.sort_by_key(|(h, _)| h.rank());
        }
        Self { by_name }
    }

    /// The account named `name` (its first host entry).
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)?.first().map(|(_, u)| u)
    }

    /// The account `name` a client at `ip` logs in as: the most specific
    /// of its host entries that matches or, when none does, of the
    /// anonymous account's (`''@host`, which takes any name), as MariaDB
    /// finds a user or the anonymous one.
    pub fn get_for(&self, name: &str, ip: IpAddr) -> Option<&Arc<User>> {
        let first_match = |n: &str| {
            self.by_name
                .get(n)?
                .iter()
                .find(|(h, _)| h.matches(ip))
                .map(|(_, u)| u)
        };
        first_match(name).or_else(|| first_match(""))
    }

    /// How many accounts there are (by name).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn invalid(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

/// The secret of one entry: exactly one of `password`, `password_hash`,
/// `password_file`, `password_env` (none: an empty password).
fn secret_of(u: &UserConfig) -> Result<Secret, ConfigError> {
    let given = [
        u.password.is_some(),
        u.password_hash.is_some(),
        u.password_file.is_some(),
        u.password_env.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(invalid(format!(
            "user `{}`: give one of password, password_hash, password_file, password_env",
            u.name
        )));
    }
    if let Some(p) = &u.password {
        return Ok(Secret::Password(p.clone()));
    }
    if let Some(h) = &u.password_hash {
        return Secret::from_native_hash(h).ok_or_else(|| {
            invalid(format!(
                "user `{}`: password_hash is not a mysql_native_password hash \
                 (`*` and 40 hex digits, as in mysql.user, or empty)",
                u.name
            ))
        });
    }
    if let Some(path) = &u.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(format!(
                "user `{}`: cannot read password_file {}: {e}",
                u.name,
                path.display()
            ))
        })?;
        // One trailing newline is the file's, not the password's (what
        // `echo pw > file` and secret mounts leave).
        let pw = text.strip_suffix('\n').unwrap_or(&text);
        let pw = pw.strip_suffix('\r').unwrap_or(pw);
        return Ok(Secret::Password(pw.to_string()));
    }
    if let Some(var) = &u.password_env {
        return std::env::var(var).map(Secret::Password).map_err(|_| {
            invalid(format!(
                "user `{}`: password_env names `{var}`, which is not set (or not UTF-8)",
                u.name
            ))
        });
    }
    Ok(Secret::Password(String::new()))
}

/// How many sessions are logged in as each account.
#[derive(Debug, Default)]
pub struct Logins {
    counts: Mutex<HashMap<String, usize>>,
}

/// One session counted against its account; counted out when dropped.
#[derive(Debug)]
pub struct Login {
    logins: Arc<Logins>,
    user: String,
}

/// The account already holds its `max_connections` sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany {
    /// The account's limit.
    pub limit: usize,
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a session in as `user`, unless that passes `limit`.
    pub fn enter(self: &Arc<Self>, user: &str, limit: Option<usize>) -> Result<Login, TooMany> {
        let mut counts = self.lock();
        let n = counts.entry(user.to_string()).or_insert(0);
        if let Some(limit) = limit {
            if *n >= limit {
                return Err(TooMany { limit });
            }
        }
        *n += 1;
        Ok(Login {
            logins: self.clone(),
            user: user.to_string(),
        })
    }

    /// Sessions logged in as `user` now.
    pub fn count(&self, user: &str) -> usize {
        self.lock().get(user).copied().unwrap_or(0)
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        let mut counts = self.logins.lock();
        if let Some(n) = counts.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one `users` entry the way the config loader does.
    fn entry(yaml: &str) -> UserConfig {
        use figment::providers::{Format, Yaml};
        figment::Figment::from(Yaml::string(yaml))
            .extract()
            .expect("a users entry")
    }

    #[test]
    fn each_way_of_giving_a_secret() {
        let dir = std::env::temp_dir().join(format!("zerodb-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        std::env::set_var("ZERODB_TEST_USERS_PW", "from-env");
        let users = Users::resolve(&[
            entry("{name: a, password: plain}"),
            entry("{name: b, password_hash: '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'}"),
            entry(&format!("{{name: c, password_file: '{}'}}", file.display())),
            entry("{name: d, password_env: ZERODB_TEST_USERS_PW, require_tls: true, max_connections: 2}"),
            entry("{name: e}"),
        ])
        .unwrap();
        assert_eq!(
            users.get("a").unwrap().secret,
            Secret::Password("plain".into())
        );
        assert!(matches!(
            users.get("b").unwrap().secret,
            Secret::NativeHash(_)
        ));
        assert_eq!(
            users.get("c").unwrap().secret,
            Secret::Password("from-file".into())
        );
        let d = users.get("d").unwrap();
        assert_eq!(d.secret, Secret::Password("from-env".into()));
        assert!(d.require_tls);
        assert_eq!(d.max_connections, Some(2));
        assert_eq!(
            users.get("e").unwrap().secret,
            Secret::Password(String::new())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let err = |yaml: &str| Users::resolve(&[entry(yaml)]).unwrap_err().to_string();
        assert!(err("{name: a, password: x, password_hash: ''}").contains("give one of"));
        assert!(err("{name: a, password_hash: 'abc'}").contains("40 hex"));
        assert!(err("{name: a, password_file: /nonexistent/zerodb}").contains("cannot read"));
        assert!(err("{name: a, password_env: ZERODB_TEST_UNSET_VARIABLE}").contains("not set"));
        let twice = Users::resolve(&[entry("{name: a}"), entry("{name: a}")]).unwrap_err();
        assert!(twice.to_string().contains("twice"));
    }

    #[test]
    fn host_entries_match_as_mariadb_orders_them() {
        let user = |max| User {
            secret: Secret::Password(String::new()),
            require_tls: false,
            max_connections: Some(max),
            from_backend: true,
            refused: None,
        };
        let users = Users::from_entries([
            ("app".to_string(), Host::parse("%"), user(1)),
            ("app".to_string(), Host::parse("10.0.%"), user(2)),
            ("app".to_string(), Host::parse("10.0.0.7"), user(3)),
            ("app".to_string(), Host::parse("localhost"), user(4)),
            (
                "app".to_string(),
                Host::parse("192.168.0.0/255.255.0.0"),
                user(5),
            ),
            ("app".to_string(), Host::parse("db.example.com"), user(6)),
            ("local".to_string(), Host::parse("localhost"), user(7)),
            (String::new(), Host::parse("localhost"), user(8)),
        ]);
        let of = |name: &str, ip: &str| {
            users
                .get_for(name, ip.parse().unwrap())
                .and_then(|u| u.max_connections)
        };
        assert_eq!(of("app", "10.0.0.7"), Some(3), "exact before pattern");
        assert_eq!(of("app", "10.0.3.1"), Some(2), "pattern before %");
        assert_eq!(of("app", "10.1.0.1"), Some(1));
        assert_eq!(of("app", "127.0.0.1"), Some(4));
        assert_eq!(of("app", "::ffff:10.0.0.7"), Some(3), "mapped IPv4");
        assert_eq!(of("app", "192.168.9.9"), Some(5), "netmask");
        assert_eq!(of("local", "127.0.0.1"), Some(7));
        assert_eq!(of("local", "10.0.0.7"), None, "localhost only");
        assert_eq!(of("nobody", "127.0.0.1"), Some(8), "the anonymous account");
        assert_eq!(of("local", "127.0.0.1"), Some(7), "a name before anonymous");
        assert_eq!(of("nobody", "10.9.9.9"), None);
        assert!(like(b"192.168.1._", b"192.168.1.5"));
        assert!(!like(b"192.168.1._", b"192.168.1.50"));
    }

    #[test]
    fn logins_count_per_user_up_to_the_limit() {
        let logins = Arc::new(Logins::default());
        let a1 = logins.enter("a", Some(2)).unwrap();
        let _a2 = logins.enter("a", Some(2)).unwrap();
        assert_eq!(
            logins.enter("a", Some(2)).unwrap_err(),
            TooMany { limit: 2 }
        );
        let _b = logins.enter("b", Some(2)).unwrap();
        assert_eq!(logins.count("a"), 2);
        drop(a1);
        assert_eq!(logins.count("a"), 1);
        let _a3 = logins.enter("a", Some(2)).expect("a slot came free");
        let _free = logins.enter("a", None).expect("no limit");
    }
}
