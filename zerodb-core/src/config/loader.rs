//! Loading configuration: a YAML or TOML file, then environment overrides.
//!
//! Environment variables start with `ZERODB_`. A seed policy key is named by
//! [`Policy::env_name`] (`need_vote.approve_ratio` →
//! `ZERODB_NEED_VOTE__APPROVE_RATIO`); any other key is upper-cased with
//! `__` between nesting levels (`health.interval` →
//! `ZERODB_HEALTH__INTERVAL`). Values are parsed as YAML scalars.

use crate::policy::Policy;
use figment::providers::{Format, Toml, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::path::Path;

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, or a value has the wrong type.
    #[error("{0}")]
    Figment(#[from] Box<figment::Error>),
    /// A top-level key that is neither a known key nor a policy key.
    #[error("unknown config key `{0}` (a typo? keys are listed in docs/config.md)")]
    UnknownKey(String),
    /// The values parse but do not make a usable config.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Loads `path` (YAML unless it ends in `.toml`) merged with `ZERODB_*`
/// overrides for `keys`, refusing keys that are neither in `keys` nor
/// policy keys.
pub fn load_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    keys: &[&str],
) -> Result<T, ConfigError> {
    let file: Figment = if path.extension().is_some_and(|e| e == "toml") {
        Figment::from(Toml::file_exact(path))
    } else {
        Figment::from(Yaml::file_exact(path))
    };
    extract_known(file.merge(EnvOverrides::new("ZERODB_", keys)), keys)
}

/// Extracts `T` from `f`, refusing keys that are neither in `keys` nor
/// policy keys.
pub fn extract_known<T: serde::de::DeserializeOwned>(
    f: Figment,
    keys: &[&str],
) -> Result<T, ConfigError> {
    let dict = f.data().map_err(Box::new)?;
    if let Some(d) = dict.get(&Profile::Default) {
        for k in d.keys() {
            if !keys.contains(&k.as_str()) && !Policy::KEYS.contains(&k.as_str()) {
                return Err(ConfigError::UnknownKey(k.clone()));
            }
        }
    }
    Ok(f.extract().map_err(Box::new)?)
}

/// `ZERODB_*` environment variables as a figment provider that keeps the
/// seed's dotted policy keys flat (figment's own `Env` would nest them).
///
/// Only variables naming a known key (`keys`, or a policy key) are read;
/// other `ZERODB_*` variables (the log filter `ZERODB_LOG`, a tool's own
/// settings) are left alone, with a warning so a misspelt override is seen.
pub struct EnvOverrides {
    prefix: String,
    vars: Vec<(String, String)>,
}

impl EnvOverrides {
    /// Takes the `prefix`ed variables of the process environment that name one of `keys` or a policy key.
    pub fn new(prefix: &str, keys: &[&str]) -> Self {
        Self::from_vars(prefix, keys, std::env::vars())
    }

    /// As [`new`](Self::new), but from `vars` instead of the process environment.
    pub fn from_vars(
        prefix: &str,
        keys: &[&str],
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut kept = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let top = rest
                .split("__")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let is_policy = Policy::KEYS.iter().any(|k| Policy::env_name(k) == name);
            if is_policy || keys.contains(&top.as_str()) {
                kept.push((name, value));
            } else if name != "ZERODB_LOG" {
                tracing::warn!(variable = %name, "environment variable names no config key; ignored");
            }
        }
        Self {
            prefix: prefix.to_string(),
            vars: kept,
        }
    }
}

/// Parses an environment value as a scalar: bool, integer, float or string.
fn parse_scalar(v: &str) -> Value {
    match v {
        "true" | "TRUE" | "True" => return Value::from(true),
        "false" | "FALSE" | "False" => return Value::from(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        return Value::from(f);
    }
    Value::from(v.to_string())
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, value) in &self.vars {
            let rest = &name[self.prefix.len()..];
            if let Some(key) = Policy::KEYS.iter().find(|k| Policy::env_name(k) == *name) {
                root.insert(key.to_string(), parse_scalar(value));
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            insert_path(&mut root, &path, parse_scalar(value));
        }
        let mut m = Map::new();
        m.insert(Profile::Default, root);
        Ok(m)
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Loads YAML text (for tests and embedding), refusing unknown keys.
pub fn from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    keys: &[&str],
) -> Result<T, ConfigError> {
    extract_known(Figment::from(Yaml::string(text)), keys)
}
