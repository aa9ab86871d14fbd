//! The keeper's config: what `zerodb-keeper` reads, and what a proxy that
//! runs the keeper itself (`keeper: embedded`) builds from its own.

use super::durations::{duration, duration_opt};
use super::loader::{extract_known, load_file, ConfigError};
use crate::control::LoadMeasure;
use crate::policy::Policy;
use figment::providers::{Format, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One datasource: its name, address and, if it has one, its agent.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasourceConfig {
    /// The datasource's name, as topologies and orders name it.
    pub name: String,
    /// host:port
    pub addr: String,
    /// The control address (host:port) of the agent beside it, if any.
    #[serde(default)]
    pub agent: Option<String>,
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
    pub load_measure: LoadMeasure,
    /// Planned switchover: how long the target may take to catch up.
    #[serde(with = "duration")]
    pub catch_up_timeout: Duration,
    /// Planned switchover: how long open transactions may take to finish
    /// once new statements are held (those still open then get an error).
    #[serde(with = "duration")]
    pub switchover_grace: Duration,
    /// `switch_backoff`: after a switch of a dataHost failed (its target
    /// could not be promoted, …), how long automatic requests for it are
    /// refused (`Backoff`) before the next attempt.
    #[serde(with = "duration")]
    pub switch_backoff: Duration,
    /// A failover fences the old source first: if its server answers
    /// within this time it must be fenced (or the switch is rejected,
    /// `FenceFailed`) before the target is promoted; if it does not, the
    /// switch goes on and its agent fences it when it answers.
    #[serde(with = "duration")]
    pub fence_timeout: Duration,
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
            switch_backoff: Duration::from_secs(3),
            fence_timeout: Duration::from_secs(1),
        }
    }
}

/// A dataHost as the keeper knows it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperDataHostConfig {
    /// The dataHost's name, the same as in the proxies' config.
    pub name: String,
    /// The user the keeper logs in as to datasources without an agent.
    pub user: String,
    /// The password of `user` (empty: none).
    #[serde(default)]
    pub password: String,
    /// The user standbys replicate as (default: `user`).
    #[serde(default)]
    pub replication_user: Option<String>,
    /// The replication user's password (default: `password`).
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
    /// The user and password standbys replicate as, defaults applied.
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

/// Where the keeper keeps its state (`store:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One keeper, its state in `state_dir` (the default).
    #[default]
    File,
    /// Several keepers sharing their state in etcd; one leads (SPEC §8).
    Etcd,
}

/// TLS to etcd (`etcd.tls:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// The CA certificate (PEM) that signed etcd's.
    pub ca: PathBuf,
    /// A client certificate (PEM), when etcd asks for one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Keepers on etcd (`etcd:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// etcd's client addresses, host:port (a YAML list, or a comma list).
    #[serde(deserialize_with = "super::lists::one_or_many")]
    pub endpoints: Vec<String>,
    /// Every key of this cluster lives under it: several zeroDB clusters
    /// may share one etcd.
    pub prefix: String,
    /// The leader's lease: a leader silent this long is replaced. etcd
    /// rounds it up to ceil(1.5 × its election timeout).
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// etcd user (with `password_file`), when etcd's auth is on.
    pub user: Option<String>,
    /// A file holding the password of `user` (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// TLS to etcd.
    pub tls: Option<EtcdTlsConfig>,
    /// How many decisions the shared log in etcd keeps (each keeper also
    /// appends its own to `state_dir/decisions.jsonl`).
    pub decisions_kept: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: "/zerodb/default".into(),
            lease_ttl: Duration::from_secs(2),
            user: None,
            password_file: None,
            tls: None,
            decisions_kept: 200,
        }
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
    /// The cluster token every proxy and agent presents; required.
    pub token: String,
    /// `control_tls`: TLS on the control listener and the calls to
    /// agents.
    pub control_tls: super::ControlTlsConfig,
    /// `admin_token_file`: the operators' token (a second line while it
    /// is rotated); the admin calls that act need it. Absent: they take
    /// the cluster token. Read again on SIGHUP.
    pub admin_token_file: Option<PathBuf>,
    /// Where the topology and epoch are persisted (`store: file`), and
    /// where each keeper appends its own `decisions.jsonl`.
    pub state_dir: PathBuf,
    /// `file` (one keeper, the default) or `etcd` (several, one leads).
    pub store: StoreKind,
    /// etcd, with `store: etcd`.
    pub etcd: EtcdConfig,
    /// The control address proxies and agents should use to reach this
    /// keeper (default: `listen`); a follower names the leader's.
    pub advertise: Option<String>,
    /// The dataHosts the keeper switches.
    pub datahosts: Vec<KeeperDataHostConfig>,
    /// Timeouts and the cooldown (top-level keys in the file).
    #[serde(flatten)]
    pub timings: KeeperTimings,
    /// The seed's switch policy: `need_vote`, `safe_load`, … (top-level keys).
    #[serde(flatten)]
    pub policy: Policy,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7700".into(),
            admin: Some("127.0.0.1:9700".into()),
            token: String::new(),
            admin_token_file: None,
            control_tls: Default::default(),
            state_dir: PathBuf::from("zerodb-keeper-state"),
            store: StoreKind::File,
            etcd: EtcdConfig::default(),
            advertise: None,
            datahosts: Vec::new(),
            timings: KeeperTimings::default(),
            policy: Policy::default(),
        }
    }
}

const KEEPER_KEYS: [&str; 21] = [
    "store",
    "etcd",
    "advertise",
    "switch_backoff",
    "fence_timeout",
    "listen",
    "admin",
    "token",
    "admin_token_file",
    "control_tls",
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
    /// Loads `path` (YAML, or TOML if it ends in `.toml`) with `ZERODB_*` overrides, and validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = load_file(path, &KEEPER_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The address proxies and agents should use for this keeper.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Parses YAML text, without environment overrides, and validates it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = extract_known(Figment::from(Yaml::string(text)), &KEEPER_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what parsing cannot: a token, at least one dataHost, datasources in each, and `approve_ratio` ≤ 100.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.token.is_empty() {
            return bad("`token` is needed: peers without it are refused".into());
        }
        if let Some(p) = self.control_tls.problem() {
            return bad(p.into());
        }
        if let Some(f) = &self.admin_token_file {
            crate::tokens::read_token_file(f)
                .map_err(|e| ConfigError::Invalid(format!("admin_token_file: {e}")))?;
        }
        if self.datahosts.is_empty() {
            return bad("at least one entry in `datahosts` is needed".into());
        }
        for dh in &self.datahosts {
            if dh.datasources.is_empty() {
                return bad(format!("dataHost `{}` has no datasources", dh.name));
            }
        }
        if self.store == StoreKind::Etcd {
            if self.etcd.endpoints.is_empty() {
                return bad("`etcd.endpoints` needs at least one address".into());
            }
            if self.etcd.lease_ttl < Duration::from_secs(1) {
                return bad(
                    "`etcd.lease_ttl` is at least 1s (etcd counts leases in seconds)".into(),
                );
            }
            if self.etcd.user.is_some() != self.etcd.password_file.is_some() {
                return bad("`etcd.user` and `etcd.password_file` go together".into());
            }
            if !self.etcd.prefix.starts_with('/') || self.etcd.prefix.ends_with('/') {
                return bad("`etcd.prefix` starts with `/` and does not end with one".into());
            }
            let wildcard = ["0.0.0.0:", "[::]:"]
                .iter()
                .any(|w| self.listen.starts_with(w));
            if wildcard && self.advertise.is_none() {
                return bad(format!(
                    "`listen: {}` is no address to dial: with `store: etcd` set `advertise` (followers name it to proxies and agents)",
                    self.listen
                ));
            }
            // Each keeper would run its own in-process agent for such a
            // datasource, and a deposed keeper's could still act on it.
            let without: Vec<&str> = self
                .datahosts
                .iter()
                .flat_map(|d| &d.datasources)
                .filter(|s| s.agent.is_none())
                .map(|s| s.name.as_str())
                .collect();
            if !without.is_empty() {
                return bad(format!(
                    "with `store: etcd` every datasource needs its own `agent`; these have none: {}",
                    without.join(", ")
                ));
            }
        }
        if self.policy.approve_ratio > 100 {
            return bad("need_vote.approve_ratio is a percentage (0-100)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "token: t\ndatahosts:\n  - name: dh1\n    user: u\n    datasources:\n      - {name: a, addr: \"10.0.0.1:3306\", agent: \"10.0.0.1:7800\"}\n      - {name: b, addr: \"10.0.0.2:3306\", agent: \"10.0.0.2:7800\"}\n";

    #[test]
    fn keepers_on_etcd_parse_and_validate() {
        let cfg = KeeperConfig::from_yaml(BASE).unwrap();
        assert_eq!(cfg.store, StoreKind::File, "the file store by default");
        let yaml = format!(
            "{BASE}store: etcd\nlisten: 10.0.0.5:7700\netcd: {{endpoints: \"e1:2379, e2:2379\", prefix: /zerodb/prod, lease_ttl: 1500ms}}\n"
        );
        let cfg = KeeperConfig::from_yaml(&yaml).unwrap();
        assert_eq!(cfg.etcd.endpoints, ["e1:2379", "e2:2379"]);
        assert_eq!(cfg.etcd.lease_ttl, Duration::from_millis(1500));
        assert_eq!(
            cfg.advertised(),
            "10.0.0.5:7700",
            "advertise defaults to listen"
        );
        let list = yaml.replace("\"e1:2379, e2:2379\"", "[e1:2379, e2:2379]");
        assert_eq!(
            KeeperConfig::from_yaml(&list).unwrap().etcd.endpoints.len(),
            2
        );

        let refused = |y: &str, why: &str| {
            let e = KeeperConfig::from_yaml(y).expect_err(why).to_string();
            assert!(e.contains(why), "{e}");
        };
        refused(
            &yaml.replace("lease_ttl: 1500ms", "lease_ttl: 500ms"),
            "lease_ttl",
        );
        refused(&yaml.replace("/zerodb/prod", "zerodb"), "prefix");
        refused(
            &yaml.replace("listen: 10.0.0.5:7700", "listen: 0.0.0.0:7700"),
            "advertise",
        );
        let advertised = yaml.replace(
            "listen: 10.0.0.5:7700",
            "listen: 0.0.0.0:7700\nadvertise: 10.0.0.5:7700",
        );
        assert_eq!(
            KeeperConfig::from_yaml(&advertised).unwrap().advertised(),
            "10.0.0.5:7700"
        );
        refused(
            &yaml.replace(", agent: \"10.0.0.2:7800\"", ""),
            "needs its own `agent`",
        );
        refused(
            &yaml.replace("prefix: /zerodb/prod", "prefix: /zerodb/prod, user: z"),
            "password_file",
        );
    }
}
