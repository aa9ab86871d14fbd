//! What `zerodb-agent` reads: a YAML or TOML file, then `ZERODB_*`
//! environment overrides (see [`zerodb_core::config`]).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zerodb_core::config::{duration, load_file, ConfigError};
use zerodb_core::control::LoadMeasure;

/// The datasource an agent looks after.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDatasourceConfig {
    /// The datasource's name, as the keeper knows it (e.g. `mysql_1`).
    pub name: String,
    /// The server's MySQL address, host:port.
    pub addr: String,
    /// An administrative user: it promotes, fences (`SUPER` or
    /// `READ_ONLY ADMIN`, `CONNECTION ADMIN`) and re-points replication.
    pub user: String,
    /// The administrative user's password (default empty).
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
    /// The cluster token, required: it is sent on every call and peers without it are refused.
    pub token: String,
    /// The keeper's control address, host:port.
    pub keeper: String,
    /// The datasource this agent looks after.
    pub datasource: AgentDatasourceConfig,
    /// How often the agent sends its report to the keeper (default 250ms).
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Timeout of one SQL operation on the server.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a promotion may wait for the relay log to be applied (default 10s).
    #[serde(with = "duration")]
    pub promote_timeout: Duration,
    /// How the load the keeper checks is measured (default: load average per CPU).
    pub load_measure: LoadMeasure,
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
    /// Reads `path` (YAML or TOML) with the `ZERODB_*` overrides; fails without `token`,
    /// `datasource.name` or `datasource.addr`.
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
