//! Reloading the config without dropping a client (SIGHUP, or the admin
//! call `POST /config/reload`).
//!
//! What a reload changes: `users` (and the files and variables their
//! secrets come from), `limits`, `pool`, `admin_token_file`, `tls` (the
//! certificate and key are read again: new sessions get them), and schema
//! routing (`datahosts[].schemas`, `datahosts[].default`). Sessions keep
//! running: a session already logged in stays so, a session routes by the
//! new schemas from its next `USE` or login, and `limits.net_write_timeout`
//! applies to new sessions. Any other key changed (addresses, datasources,
//! logins to the backends, the keeper, listeners) needs a restart: the
//! reload is refused, naming them, and nothing changes. A file that does
//! not load or check is refused with its reason, and nothing changes.

use crate::config::ProxyConfig;
use crate::shared::Shared;
use crate::users::Users;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use zerodb_core::config::ConfigError;

/// The top-level keys a reload applies (besides schema routing).
pub const RELOADABLE: [&str; 5] = ["users", "limits", "pool", "admin_token_file", "tls"];
/// The keys of a dataHost a reload applies.
pub const RELOADABLE_IN_DATAHOST: [&str; 2] = ["schemas", "default"];

/// Why a reload was refused (the config in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load, or does not check.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Keys a reload cannot apply changed.
    #[error("these keys need a restart to change: {}", .0.join(", "))]
    NeedsRestart(Vec<String>),
    /// The proxy was not started from a file.
    #[error("no config file to read again (the proxy was built in code)")]
    NoFile,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    /// The top-level keys whose values changed (`datahosts` for routing).
    pub changed: Vec<String>,
}

/// Reads the proxy's config file again and applies it (see the module).
pub fn from_file(shared: &Shared) -> Result<Reloaded, ReloadError> {
    let path = shared.config_path.get().ok_or(ReloadError::NoFile)?;
    let outcome = ProxyConfig::load(path)
        .map_err(ReloadError::from)
        .and_then(|cfg| apply(shared, &cfg));
    report(path, &outcome);
    outcome
}

fn report(path: &Path, outcome: &Result<Reloaded, ReloadError>) {
    let ok = outcome.is_ok();
    metrics::counter!("zerodb_config_reloads_total", "result" => if ok { "ok" } else { "refused" })
        .increment(1);
    metrics::gauge!("zerodb_config_last_reload_ok").set(if ok { 1.0 } else { 0.0 });
    match outcome {
        Ok(r) if r.changed.is_empty() => {
            tracing::info!(file = %path.display(), "config reloaded: nothing changed");
        }
        Ok(r) => {
            tracing::warn!(file = %path.display(), changed = %r.changed.join(", "), "config reloaded")
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "config reload refused; the config in force stays")
        }
    }
}

/// Applies `new` (already loaded and checked) in place of the config in
/// force, or changes nothing.
pub fn apply(shared: &Shared, new: &ProxyConfig) -> Result<Reloaded, ReloadError> {
    let now = shared.config_in_force();
    let fixed = needs_restart(&now, new);
    if !fixed.is_empty() {
        return Err(ReloadError::NeedsRestart(fixed));
    }
    // Everything that can fail comes before the first change.
    let users = Users::resolve(&new.users)?;
    let operators = match &new.admin_token_file {
        Some(f) => Some(
            zerodb_core::tokens::read_token_file(f)
                .map_err(|e| ConfigError::Invalid(format!("admin_token_file: {e}")))?,
        ),
        None => None,
    };
    let tls = new
        .tls
        .server_config()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let schemas: Vec<Vec<String>> = new.datahosts.iter().map(|d| d.schemas.clone()).collect();
    let default = new.datahosts.iter().position(|d| d.default).unwrap_or(0);
    let changed = changed_keys(&now, new);

    shared
        .topology
        .reroute(schemas, default)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    // Under `auth: backend` the accounts are the datasources' own.
    if new.auth == crate::config::AuthMode::Static {
        shared.users.store(Arc::new(users));
    }
    shared.limits.store(Arc::new(new.limits.clone()));
    shared.tls.store(tls);
    if let Some(t) = operators {
        shared.operators.replace(t);
    }
    if now.pool != new.pool {
        for dh in shared.topology.datahosts() {
            for ds in &dh.datasources {
                ds.pool.reconfigure(new.pool.clone());
            }
        }
    }
    shared.in_force.store(Arc::new(new.clone()));
    Ok(Reloaded { changed })
}

/// `cfg` as JSON, without what a reload applies.
fn fixed_part(cfg: &ProxyConfig) -> serde_json::Map<String, Value> {
    let Ok(Value::Object(mut map)) = serde_json::to_value(cfg) else {
        return serde_json::Map::new();
    };
    for k in RELOADABLE {
        map.remove(k);
    }
    if let Some(Value::Array(dhs)) = map.get_mut("datahosts") {
        for dh in dhs {
            if let Value::Object(dh) = dh {
                for k in RELOADABLE_IN_DATAHOST {
                    dh.remove(k);
                }
            }
        }
    }
    map
}

/// The keys a reload cannot apply whose values differ.
pub fn needs_restart(now: &ProxyConfig, new: &ProxyConfig) -> Vec<String> {
    differing(&fixed_part(now), &fixed_part(new))
}

/// Every top-level key whose value differs.
fn changed_keys(now: &ProxyConfig, new: &ProxyConfig) -> Vec<String> {
    match (serde_json::to_value(now), serde_json::to_value(new)) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => differing(&a, &b),
        _ => Vec::new(),
    }
}

fn differing(
    a: &serde_json::Map<String, Value>,
    b: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "users: [{name: app, password: a}]\n\
        datahosts:\n  - {name: dh1, schemas: [app], user: u, datasources: [{name: m1, addr: \"127.0.0.1:1\"}]}\n  \
        - {name: dh2, schemas: [logs], user: u, datasources: [{name: m2, addr: \"127.0.0.1:2\"}]}\n";

    fn cfg(extra: &str, dh: &str) -> ProxyConfig {
        ProxyConfig::from_yaml(&format!("{}{extra}", BASE.replace("[logs]", dh))).unwrap()
    }

    #[test]
    fn what_a_reload_applies_and_what_needs_a_restart() {
        let now = cfg("", "[logs]");
        let new = cfg(
            "limits: {wait_timeout: 60s}\npool: {max_size: 10}\n",
            "[logs, audit], default: true",
        );
        assert!(needs_restart(&now, &new).is_empty());
        assert_eq!(changed_keys(&now, &new), ["datahosts", "limits", "pool"]);
        let moved = cfg("listen: 0.0.0.0:3306\n", "[logs]")
            .datahosts
            .into_iter()
            .map(|mut d| {
                d.datasources[0].addr = "10.0.0.9:3306".into();
                d
            })
            .collect();
        let moved = ProxyConfig {
            datahosts: moved,
            ..cfg("listen: 0.0.0.0:3306\n", "[logs]")
        };
        assert_eq!(needs_restart(&now, &moved), ["datahosts", "listen"]);
    }

    #[test]
    fn under_auth_backend_a_reload_keeps_the_accounts_read() {
        let yaml = BASE.replace("users: [{name: app, password: a}]", "auth: backend");
        let config = ProxyConfig::from_yaml(&yaml).unwrap();
        let proxy = crate::server::Proxy::new(config.clone());
        let shared = proxy.shared();
        let read = Users::from_entries([(
            "alice".to_string(),
            crate::users::Host::Any,
            crate::users::User {
                secret: crate::auth::Secret::Password(String::new()),
                require_tls: false,
                max_connections: None,
                from_backend: true,
                refused: None,
            },
        )]);
        shared.users.store(Arc::new(read));
        let new =
            ProxyConfig::from_yaml(&format!("{yaml}limits: {{wait_timeout: 60s}}\n")).unwrap();
        apply(shared, &new).expect("reloaded");
        assert!(shared.users.load().get("alice").is_some(), "kept");
        let to_static = ProxyConfig::from_yaml(BASE).unwrap();
        let refused = apply(shared, &to_static).unwrap_err().to_string();
        assert!(refused.contains("auth"), "{refused}");
    }
}
