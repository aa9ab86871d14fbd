//! Loading configuration: a YAML or TOML file, then environment overrides.
//!
//! Environment variables start with `ZERODB_`. A seed policy key is named by
//! [`Policy::env_name`] (`need_vote.approve_ratio` →
//! `ZERODB_NEED_VOTE__APPROVE_RATIO`); any other key is upper-cased with
//! `__` between nesting levels (`health.interval` →
//! `ZERODB_HEALTH__INTERVAL`). Values are parsed as YAML scalars.

use crate::health::HealthConfig;
use crate::policy::Policy;
use crate::pool::PoolConfig;
use figment::providers::{Format, Toml, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("unknown config key `{0}` (a typo? keys are listed in docs/config.md)")]
    UnknownKey(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A proxy user (clients authenticate against these).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default)]
    pub password: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasourceConfig {
    pub name: String,
    /// host:port
    pub addr: String,
    /// The control address (host:port) of the agent beside it, if any.
    #[serde(default)]
    pub agent: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataHostConfig {
    pub name: String,
    /// Schemas routed here. The first dataHost (or the one marked
    /// `default`) also serves every schema no dataHost names.
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub default: bool,
    /// The backend user the proxy logs in as.
    pub user: String,
    #[serde(default)]
    pub password: String,
    pub datasources: Vec<DatasourceConfig>,
    /// Which datasource starts active (default: the first).
    #[serde(default)]
    pub active: Option<String>,
    /// The user an embedded keeper uses to promote and fence datasources
    /// that have no agent (default: `user`). It needs `SUPER` or MariaDB's
    /// `READ_ONLY ADMIN`, `REPLICATION SLAVE ADMIN` and `CONNECTION ADMIN`.
    #[serde(default)]
    pub admin_user: Option<String>,
    #[serde(default)]
    pub admin_password: Option<String>,
}

/// Everything `zerodb-proxy` reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// Unique name of this proxy in a cluster.
    pub name: String,
    /// MySQL listener, host:port.
    pub listen: String,
    /// Admin HTTP listener (/health, /status, /metrics), host:port.
    pub admin: String,
    pub users: Vec<UserConfig>,
    pub datahosts: Vec<DataHostConfig>,
    pub pool: PoolConfig,
    pub health: HealthConfig,
    /// Most client connections at once; more are refused with error 1040.
    pub max_connections: usize,
    /// Session threads, each with its own event loop (see
    /// [`crate::workers`]). Absent: one per CPU. `0`: sessions run on the
    /// runtime that calls [`crate::server::BoundProxy::run`].
    pub workers: Option<usize>,
    /// Largest client packet accepted (bytes).
    pub max_allowed_packet: usize,
    /// Version string sent to clients; default: the backend's own.
    pub server_version: Option<String>,
    /// Method offered in the greeting: mysql_native_password or
    /// caching_sha2_password. Clients using either are accepted whatever it is.
    pub auth_plugin: String,
    /// How long a stopping proxy waits for sessions to finish their statement.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// The keeper's control address (host:port), or `embedded` to run the
    /// keeper inside this proxy. Absent: a standalone proxy (no failover).
    pub keeper: Option<String>,
    /// The cluster token every control-plane peer presents.
    pub token: Option<String>,
    /// Timings of this proxy's part in the cluster.
    pub cluster: ClusterConfig,
    /// Settings of the keeper run with `keeper: embedded`.
    pub embedded_keeper: EmbeddedKeeperConfig,
    /// Holding statements while a switch is under way.
    pub buffer: BufferConfig,
    /// The seed's policy keys, flat at the top level.
    #[serde(flatten)]
    pub policy: Policy,
}

/// A proxy's timings in a cluster (config keys under `cluster:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often the proxy heartbeats to the keeper.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// How long a switch request may wait for the keeper's answer.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Time between switch requests while the active datasource stays down.
    #[serde(with = "duration")]
    pub switch_retry_interval: Duration,
    /// Time between attempts to reach a lost keeper.
    #[serde(with = "duration")]
    pub reconnect_interval: Duration,
    /// At start, how long the proxy holds statements waiting for the
    /// keeper's topology; after that it serves only the dataHosts whose
    /// active datasource is writable.
    #[serde(with = "duration")]
    pub start_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            request_timeout: Duration::from_secs(5),
            switch_retry_interval: Duration::from_millis(500),
            reconnect_interval: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// Buffering (config keys under `buffer:`): in a cluster, a statement for
/// a dataHost whose active datasource is down waits for the switch.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// How long a statement may wait; `0` turns buffering off.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Most statements waiting per dataHost; more fail at once.
    pub max_queue: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            max_queue: 10_000,
        }
    }
}

/// The keeper inside a proxy (`keeper: embedded`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedKeeperConfig {
    /// Its control listener (other proxies may join it here).
    pub listen: String,
    /// Where it persists the topology and its epoch.
    pub state_dir: PathBuf,
    #[serde(flatten)]
    pub timings: KeeperTimings,
}

impl Default for EmbeddedKeeperConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            state_dir: PathBuf::from("zerodb-state"),
            timings: KeeperTimings::default(),
        }
    }
}

/// The keeper's timings (flat in the keeper's config).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct KeeperTimings {
    /// A proxy or agent silent this long has lost its session.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// How long the keeper waits for every proxy's vote.
    #[serde(with = "duration")]
    pub vote_timeout: Duration,
    /// Timeout of one call to an agent (report, fence, follow).
    #[serde(with = "duration")]
    pub agent_timeout: Duration,
    /// How long a promotion may take (applying the relay log included).
    #[serde(with = "duration")]
    pub promote_timeout: Duration,
    /// No automatic switch of a dataHost this soon after the last one.
    #[serde(with = "duration")]
    pub cooldown: Duration,
    /// Opt-in: forget a proxy whose session expired this long ago, so it no
    /// longer blocks switches. Off by default: such a proxy may still be
    /// writing to the old source (split brain).
    #[serde(with = "duration_opt")]
    pub drop_lost_proxy_after: Option<Duration>,
    /// What the `safe_load` check compares: `loadavg` or `threads_running`.
    pub load_measure: crate::agent::ops::LoadMeasure,
    /// Planned switchover: how long the target may take to catch up.
    #[serde(with = "duration")]
    pub catch_up_timeout: Duration,
    /// Planned switchover: how long open transactions may take to finish
    /// once new statements are held (those still open then get an error).
    #[serde(with = "duration")]
    pub switchover_grace: Duration,
}

impl Default for KeeperTimings {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(3),
            vote_timeout: Duration::from_millis(1500),
            agent_timeout: Duration::from_secs(1),
            promote_timeout: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            drop_lost_proxy_after: None,
            load_measure: Default::default(),
            catch_up_timeout: Duration::from_secs(10),
            switchover_grace: Duration::from_secs(2),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            name: "zerodb-proxy".into(),
            listen: "127.0.0.1:3307".into(),
            admin: "127.0.0.1:9307".into(),
            users: Vec::new(),
            datahosts: Vec::new(),
            pool: PoolConfig::default(),
            health: HealthConfig::default(),
            max_connections: 10_000,
            workers: None,
            max_allowed_packet: 64 << 20,
            server_version: None,
            auth_plugin: crate::auth::NATIVE.into(),
            shutdown_timeout: Duration::from_secs(10),
            keeper: None,
            token: None,
            cluster: ClusterConfig::default(),
            embedded_keeper: EmbeddedKeeperConfig::default(),
            buffer: BufferConfig::default(),
            policy: Policy::default(),
        }
    }
}

const PROXY_KEYS: [&str; 18] = [
    "name",
    "listen",
    "admin",
    "users",
    "datahosts",
    "pool",
    "health",
    "max_connections",
    "workers",
    "max_allowed_packet",
    "server_version",
    "auth_plugin",
    "shutdown_timeout",
    "keeper",
    "token",
    "cluster",
    "embedded_keeper",
    "buffer",
];

/// Loads `path` (YAML unless it ends in `.toml`) merged with `ZERODB_*`
/// overrides for `keys`, refusing keys that are neither in `keys` nor
/// policy keys.
fn load_file<T: serde::de::DeserializeOwned>(path: &Path, keys: &[&str]) -> Result<T, ConfigError> {
    let file: Figment = if path.extension().is_some_and(|e| e == "toml") {
        Figment::from(Toml::file_exact(path))
    } else {
        Figment::from(Yaml::file_exact(path))
    };
    extract_known(file.merge(EnvOverrides::new("ZERODB_", keys)), keys)
}

fn extract_known<T: serde::de::DeserializeOwned>(
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

impl ProxyConfig {
    /// Loads `path` (YAML unless it ends in `.toml`), then `ZERODB_*`
    /// environment overrides, and checks the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = load_file(path, &PROXY_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads from YAML text (for tests and embedding).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Yaml::string(text)))
    }

    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let cfg: Self = extract_known(f, &PROXY_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether this proxy runs the keeper itself.
    pub fn embedded_keeper(&self) -> bool {
        self.keeper.as_deref() == Some("embedded")
    }

    /// The keeper an embedded proxy runs: its dataHosts and policy.
    pub fn keeper_config(&self) -> KeeperConfig {
        KeeperConfig {
            listen: self.embedded_keeper.listen.clone(),
            admin: None,
            token: self.token.clone().unwrap_or_default(),
            state_dir: self.embedded_keeper.state_dir.clone(),
            datahosts: self
                .datahosts
                .iter()
                .map(|d| KeeperDataHostConfig {
                    name: d.name.clone(),
                    user: d.admin_user.clone().unwrap_or_else(|| d.user.clone()),
                    password: d
                        .admin_password
                        .clone()
                        .unwrap_or_else(|| d.password.clone()),
                    replication_user: None,
                    replication_password: None,
                    datasources: d.datasources.clone(),
                    active: d.active.clone(),
                })
                .collect(),
            timings: self.embedded_keeper.timings.clone(),
            policy: self.policy.clone(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.datahosts.is_empty() {
            return bad("at least one entry in `datahosts` is needed".into());
        }
        if self.users.is_empty() {
            return bad("at least one entry in `users` is needed".into());
        }
        if crate::auth::Method::from_name(self.auth_plugin.as_bytes()).is_none() {
            return bad(format!(
                "auth_plugin `{}` is not mysql_native_password or caching_sha2_password",
                self.auth_plugin
            ));
        }
        if self.datahosts.iter().filter(|d| d.default).count() > 1 {
            return bad("more than one dataHost is marked `default`".into());
        }
        let mut names = std::collections::HashSet::new();
        for dh in &self.datahosts {
            if !names.insert(dh.name.as_str()) {
                return bad(format!("dataHost `{}` is listed twice", dh.name));
            }
            if dh.datasources.is_empty() {
                return bad(format!("dataHost `{}` has no datasources", dh.name));
            }
            if let Some(a) = &dh.active {
                if !dh.datasources.iter().any(|d| &d.name == a) {
                    return bad(format!(
                        "dataHost `{}`: active `{a}` is not one of its datasources",
                        dh.name
                    ));
                }
            }
        }
        if self.policy.approve_ratio > 100 {
            return bad("need_vote.approve_ratio is a percentage (0-100)".into());
        }
        if self.keeper.is_some() && !self.embedded_keeper() && self.token_missing() {
            return bad("`token` is needed to join a keeper".into());
        }
        Ok(())
    }

    fn token_missing(&self) -> bool {
        self.token.as_deref().is_none_or(str::is_empty)
    }
}

/// A dataHost as the keeper knows it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperDataHostConfig {
    pub name: String,
    /// The user the keeper logs in as to datasources without an agent.
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// The user standbys replicate as (default: `user`).
    #[serde(default)]
    pub replication_user: Option<String>,
    #[serde(default)]
    pub replication_password: Option<String>,
    /// In preference order: the first is active at the first start, and
    /// the order breaks ties between equally advanced standbys.
    pub datasources: Vec<DatasourceConfig>,
    /// Which datasource is active at the first start (default: the first).
    #[serde(default)]
    pub active: Option<String>,
}

impl KeeperDataHostConfig {
    pub fn replication_credentials(&self) -> (String, String) {
        (
            self.replication_user
                .clone()
                .unwrap_or_else(|| self.user.clone()),
            self.replication_password
                .clone()
                .unwrap_or_else(|| self.password.clone()),
        )
    }
}

/// Everything `zerodb-keeper` reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct KeeperConfig {
    /// Control plane (proxies' WebSockets, agents' heartbeats), host:port.
    pub listen: String,
    /// Admin HTTP, host:port (an embedded keeper shares the proxy's).
    pub admin: Option<String>,
    pub token: String,
    /// Where the topology and epoch are persisted.
    pub state_dir: PathBuf,
    pub datahosts: Vec<KeeperDataHostConfig>,
    #[serde(flatten)]
    pub timings: KeeperTimings,
    #[serde(flatten)]
    pub policy: Policy,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7700".into(),
            admin: Some("127.0.0.1:9700".into()),
            token: String::new(),
            state_dir: PathBuf::from("zerodb-keeper-state"),
            datahosts: Vec::new(),
            timings: KeeperTimings::default(),
            policy: Policy::default(),
        }
    }
}

const KEEPER_KEYS: [&str; 14] = [
    "listen",
    "admin",
    "token",
    "state_dir",
    "datahosts",
    "session_timeout",
    "vote_timeout",
    "agent_timeout",
    "promote_timeout",
    "cooldown",
    "drop_lost_proxy_after",
    "load_measure",
    "catch_up_timeout",
    "switchover_grace",
];

impl KeeperConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = load_file(path, &KEEPER_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = extract_known(Figment::from(Yaml::string(text)), &KEEPER_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.token.is_empty() {
            return bad("`token` is needed: peers without it are refused".into());
        }
        if self.datahosts.is_empty() {
            return bad("at least one entry in `datahosts` is needed".into());
        }
        for dh in &self.datahosts {
            if dh.datasources.is_empty() {
                return bad(format!("dataHost `{}` has no datasources", dh.name));
            }
        }
        if self.policy.approve_ratio > 100 {
            return bad("need_vote.approve_ratio is a percentage (0-100)".into());
        }
        Ok(())
    }
}

/// The datasource an agent looks after.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDatasourceConfig {
    pub name: String,
    pub addr: String,
    /// An administrative user: it promotes, fences (`SUPER` or
    /// `READ_ONLY ADMIN`, `CONNECTION ADMIN`) and re-points replication.
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// The binlog index file, read when the server is dead (default:
    /// learned from `@@log_bin_index` while it lives).
    #[serde(default)]
    pub binlog_index: Option<PathBuf>,
}

/// Everything `zerodb-agent` reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Control listener the keeper calls, host:port.
    pub listen: String,
    /// Admin HTTP (/health, /metrics, /status), host:port.
    pub admin: String,
    pub token: String,
    /// The keeper's control address, host:port.
    pub keeper: String,
    pub datasource: AgentDatasourceConfig,
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Timeout of one SQL operation on the server.
    #[serde(with = "duration")]
    pub timeout: Duration,
    #[serde(with = "duration")]
    pub promote_timeout: Duration,
    pub load_measure: crate::agent::ops::LoadMeasure,
    /// Where the agent keeps the newest epoch and topology it has seen.
    pub state_dir: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7800".into(),
            admin: "127.0.0.1:9800".into(),
            token: String::new(),
            keeper: "127.0.0.1:7700".into(),
            datasource: AgentDatasourceConfig::default(),
            heartbeat_interval: Duration::from_millis(250),
            timeout: Duration::from_millis(800),
            promote_timeout: Duration::from_secs(10),
            load_measure: Default::default(),
            state_dir: PathBuf::from("zerodb-agent-state"),
        }
    }
}

const AGENT_KEYS: [&str; 10] = [
    "state_dir",
    "listen",
    "admin",
    "token",
    "keeper",
    "datasource",
    "heartbeat_interval",
    "timeout",
    "promote_timeout",
    "load_measure",
];

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = load_file(path, &AGENT_KEYS)?;
        if cfg.token.is_empty() {
            return Err(ConfigError::Invalid(
                "`token` is needed: peers without it are refused".into(),
            ));
        }
        if cfg.datasource.name.is_empty() || cfg.datasource.addr.is_empty() {
            return Err(ConfigError::Invalid(
                "`datasource.name` and `datasource.addr` are needed".into(),
            ));
        }
        Ok(cfg)
    }
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
    pub fn new(prefix: &str, keys: &[&str]) -> Self {
        Self::from_vars(prefix, keys, std::env::vars())
    }

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

/// Durations in config: a number of milliseconds, or a string such as
/// `"250ms"`, `"2s"`, `"1m"`.
pub mod duration {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }

    pub fn parse(t: &str) -> Result<Duration, String> {
        let t = t.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("bad duration `{t}`"))?;
        let secs = match unit.trim() {
            "ms" | "" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            u => {
                return Err(format!(
                    "bad duration unit `{u}` in `{t}` (use ms, s, m or h)"
                ))
            }
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("bad duration `{t}`"));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

/// An optional duration (see [`duration`]); `null` or absent is `None`.
pub mod duration_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
listen: 127.0.0.1:3307
users: [{name: app, password: pw}]
datahosts:
  - name: dh1
    schemas: [app]
    user: zerodb
    password: x
    datasources: [{name: mysql_1, addr: "127.0.0.1:3306"}, {name: mysql_11, addr: "127.0.0.1:3316"}]
health: {interval: 200ms, timeout: "150ms", fall: 2}
need_vote: true
need_vote.approve_ratio: 50
unregister_when_switch_rejected: true
unregister_switch_rejected_number: 3
unregister_when_switch_rejected.down_host_num: 2
offline_when_lost_keeper: true
offline_switch_rejected_number: 3
# 至少有两个Host连续被数据源切换失败后，让自己下线
offline_when_lost_keeper.down_host_num: 4
self_back_online: true
need_target_load_check: true
need_target_load_check.safe_load: 2
need_binlog_check: true
need_binlog_check.safe_binlog_delay: 1000
"#;

    #[test]
    fn seed_keys_load_verbatim() {
        let c = ProxyConfig::from_yaml(SEED).unwrap();
        assert_eq!(c.policy.approve_ratio, 50);
        assert_eq!(c.policy.offline_down_host_num, 4);
        assert_eq!(c.policy.safe_binlog_delay, Some(1000));
        assert_eq!(c.policy.safe_load, 2.0);
        assert_eq!(c.health.interval, Duration::from_millis(200));
        assert_eq!(c.health.timeout, Duration::from_millis(150));
        assert_eq!(c.health.fall, 2);
        assert_eq!(c.datahosts[0].datasources[1].name, "mysql_11");
    }

    #[test]
    fn absent_safe_binlog_delay_means_lenient() {
        let text = SEED.replace("need_binlog_check.safe_binlog_delay: 1000\n", "");
        let c = ProxyConfig::from_yaml(&text).unwrap();
        assert_eq!(c.policy.safe_binlog_delay, None);
    }

    #[test]
    fn toml_with_quoted_dotted_keys() {
        let toml = r#"
"need_vote.approve_ratio" = 75
[[users]]
name = "app"
[[datahosts]]
name = "dh1"
user = "u"
datasources = [{ name = "a", addr = "127.0.0.1:1" }]
"#;
        let c = ProxyConfig::from_figment(Figment::from(Toml::string(toml))).unwrap();
        assert_eq!(c.policy.approve_ratio, 75);
    }

    #[test]
    fn env_overrides_keep_policy_keys_flat() {
        let env = EnvOverrides::from_vars(
            "ZERODB_",
            &PROXY_KEYS,
            [
                (
                    "ZERODB_NEED_VOTE__APPROVE_RATIO".to_string(),
                    "66".to_string(),
                ),
                ("ZERODB_NEED_VOTE".to_string(), "false".to_string()),
                ("ZERODB_HEALTH__FALL".to_string(), "5".to_string()),
                ("ZERODB_LISTEN".to_string(), "0.0.0.0:4000".to_string()),
                ("ZERODB_LOG".to_string(), "debug".to_string()),
                ("ZERODB_BENCH_SECONDS".to_string(), "5".to_string()),
            ],
        );
        let c = ProxyConfig::from_figment(Figment::from(Yaml::string(SEED)).merge(env)).unwrap();
        assert_eq!(c.policy.approve_ratio, 66);
        assert!(!c.policy.need_vote);
        assert_eq!(c.health.fall, 5);
        assert_eq!(
            c.health.interval,
            Duration::from_millis(200),
            "sibling keys survive"
        );
        assert_eq!(c.listen, "0.0.0.0:4000");
    }

    #[test]
    fn typos_are_refused() {
        let err = ProxyConfig::from_yaml(&format!("{SEED}\nneed_vot: true\n")).unwrap_err();
        assert!(err.to_string().contains("need_vot"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration::parse("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(duration::parse("3 parsecs").is_err());
        assert!(duration::parse("").is_err());
    }
}
