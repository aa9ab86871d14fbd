//! The client accounts of `users`: their secrets read from the config, a
//! file or the environment, and how many sessions each holds.
//!
//! The table is resolved whole from config (at start and at each reload)
//! and swapped whole; the per-user session counts live apart from it, so a
//! reload neither forgets nor resets them.

use crate::auth::Secret;
use crate::config::UserConfig;
use std::collections::HashMap;
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
}

/// The accounts by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
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
            };
            if by_name.insert(u.name.clone(), Arc::new(user)).is_some() {
                return Err(invalid(format!("user `{}` is listed twice", u.name)));
            }
        }
        Ok(Self { by_name })
    }

    /// The account named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// How many accounts there are.
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
