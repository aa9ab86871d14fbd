//! What `zerodb-agent` reads: a YAML or TOML file, then `ZERODB_*`
//! environment overrides (see [`zerodb_core::config`]).

use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zerodb_core::config::{duration, extract_known, load_file, ConfigError, KeeperAddrs};
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
    /// The keepers' control addresses, host:port: one, or every keeper of
    /// a group on etcd (a YAML list, or a comma list); the agent
    /// heartbeats to the leader among them.
    pub keeper: KeeperAddrs,
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
    /// `control_tls`: TLS on its control listener and its calls to the
    /// keepers.
    pub control_tls: zerodb_core::config::ControlTlsConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7800".into(),
            admin: "127.0.0.1:9800".into(),
            token: String::new(),
            keeper: KeeperAddrs::one("127.0.0.1:7700"),
            datasource: AgentDatasourceConfig::default(),
            heartbeat_interval: Duration::from_millis(250),
            timeout: Duration::from_millis(800),
            promote_timeout: Duration::from_secs(10),
            load_measure: Default::default(),
            state_dir: PathBuf::from("zerodb-agent-state"),
            control_tls: Default::default(),
        }
    }
}

const AGENT_KEYS: [&str; 11] = [
    "state_dir",
    "control_tls",
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
        Self::checked(load_file(path, &AGENT_KEYS)?)
    }

    /// Reads any figment (YAML or TOML text, extra providers) and checks
    /// the result as [`load`](Self::load) does; no `ZERODB_*` overrides
    /// unless `f` merges them.
    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        Self::checked(extract_known(f, &AGENT_KEYS)?)
    }

    fn checked(cfg: Self) -> Result<Self, ConfigError> {
        if cfg.token.is_empty() {
            return Err(ConfigError::Invalid(
                "`token` is needed: peers without it are refused".into(),
            ));
        }
        if let Some(p) = cfg.control_tls.problem() {
            return Err(ConfigError::Invalid(p.into()));
        }
        if cfg.keeper.is_embedded() {
            return Err(ConfigError::Invalid(
                "`keeper` names keepers' control addresses (host:port); `embedded` is a proxy's"
                    .into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Yaml};
    use zerodb_core::config::EnvOverrides;

    const BASE: &str =
        "token: t\ndatasource: {name: mysql_1, addr: \"127.0.0.1:3306\", user: admin}\n";

    fn keepers(yaml: &str) -> Result<Vec<String>, String> {
        AgentConfig::from_figment(Figment::from(Yaml::string(&format!("{BASE}{yaml}"))))
            .map(|c| c.keeper.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn one_keeper_or_a_list() {
        assert_eq!(keepers("").unwrap(), ["127.0.0.1:7700"], "the default");
        assert_eq!(keepers("keeper: 10.0.0.5:7700").unwrap(), ["10.0.0.5:7700"]);
        assert_eq!(
            keepers("keeper: [\"10.0.0.5:7700\", \"10.0.0.6:7700\"]").unwrap(),
            ["10.0.0.5:7700", "10.0.0.6:7700"]
        );
    }

    #[test]
    fn embedded_is_no_keeper_of_an_agent() {
        for bad in ["keeper: embedded", "keeper: [\"10.0.0.5:7700\", embedded]"] {
            let e = keepers(bad).unwrap_err();
            assert!(e.contains("embedded"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_environment_gives_a_comma_list() {
        let env = EnvOverrides::from_vars(
            "ZERODB_",
            &AGENT_KEYS,
            [("ZERODB_KEEPER".to_string(), "a:1,b:2".to_string())],
        );
        let f = Figment::from(Yaml::string(&format!("{BASE}keeper: c:3\n"))).merge(env);
        let c = AgentConfig::from_figment(f).unwrap();
        assert_eq!(c.keeper.to_vec(), ["a:1", "b:2"]);
    }
}
