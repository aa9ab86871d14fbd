//! What `zerodb-proxy` reads: a YAML or TOML file, then `ZERODB_*`
//! environment overrides (see [`zerodb_core::config`]).

use crate::health::HealthConfig;
use crate::limits::LimitsConfig;
use crate::pool::PoolConfig;
use figment::providers::{Format, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zerodb_core::config::{
    duration, extract_known, load_file, ConfigError, DatasourceConfig, KeeperAddrs, KeeperConfig,
    KeeperDataHostConfig, KeeperTimings,
};
use zerodb_core::policy::Policy;

/// A proxy user (clients authenticate against these). At most one of
/// `password`, `password_hash`, `password_file`, `password_env`; none
/// means an empty password.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `users[].name`: the account name clients log in with.
    pub name: String,
    /// `users[].password`: its password, in clear.
    #[serde(default)]
    pub password: Option<String>,
    /// `users[].password_hash`: its `mysql_native_password` hash (`*` and
    /// 40 hex digits, `SELECT PASSWORD('…')`); such an account logs in
    /// by mysql_native_password only.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// `users[].password_file`: a file holding its password (one trailing
    /// newline is ignored); read at start and at each reload.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `users[].password_env`: an environment variable holding its password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `users[].require_tls`: the account may log in only over TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// `users[].max_connections`: most sessions logged in as this account
    /// at once (absent: no limit of its own).
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// A dataHost (an entry of `datahosts`): its datasources and the proxy's
/// login on them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataHostConfig {
    /// `datahosts[].name`: the dataHost's name; a keeper's dataHosts must
    /// use the same names.
    pub name: String,
    /// Schemas routed here. The first dataHost (or the one marked
    /// `default`) also serves every schema no dataHost names.
    #[serde(default)]
    pub schemas: Vec<String>,
    /// `datahosts[].default`: serves the schemas no dataHost names (default:
    /// false; with none marked, the first dataHost does).
    #[serde(default)]
    pub default: bool,
    /// The backend user the proxy logs in as.
    pub user: String,
    /// `datahosts[].password`: the password of `user` (default: empty).
    #[serde(default)]
    pub password: String,
    /// `datahosts[].tls`: TLS to its datasources (default: in clear).
    #[serde(default)]
    pub tls: crate::tls::BackendTlsConfig,
    /// `datahosts[].datasources`: its servers, each `{name, addr}` (and
    /// `agent` for an embedded keeper); at least one.
    pub datasources: Vec<DatasourceConfig>,
    /// Which datasource starts active (default: the first).
    #[serde(default)]
    pub active: Option<String>,
    /// The user an embedded keeper uses to promote and fence datasources
    /// that have no agent (default: `user`). It needs `SUPER` or MariaDB's
    /// `READ_ONLY ADMIN`, `REPLICATION SLAVE ADMIN` and `CONNECTION ADMIN`.
    #[serde(default)]
    pub admin_user: Option<String>,
    /// `datahosts[].admin_password`: the password of `admin_user` (default:
    /// `password`).
    #[serde(default)]
    pub admin_password: Option<String>,
}

/// Where client accounts come from (`auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The `users` list of the config.
    #[default]
    Static,
    /// The accounts of the default dataHost's active datasource
    /// (`mysql.global_priv`), read every `auth_refresh`; sessions log in
    /// to datasources as their client's account.
    Backend,
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
    /// `auth`: where client accounts come from: `static` (the `users`
    /// list) or `backend` (the datasources' own accounts, each session
    /// logging in to them as its client's account).
    pub auth: AuthMode,
    /// `auth_refresh`: under `auth: backend`, how often the accounts are
    /// read again (and at most how stale a removed account can be).
    #[serde(with = "duration")]
    pub auth_refresh: Duration,
    /// `users`: the accounts clients log in with; at least one under
    /// `auth: static`, none under `auth: backend`.
    pub users: Vec<UserConfig>,
    /// `datahosts`: the dataHosts this proxy serves; at least one.
    pub datahosts: Vec<DataHostConfig>,
    /// `pool`: the backend connection pool of each datasource.
    pub pool: PoolConfig,
    /// `health`: how datasources are probed.
    pub health: HealthConfig,
    /// Most client connections at once; more are refused with error 1040.
    pub max_connections: usize,
    /// Session threads, each with its own event loop (see
    /// [`crate::workers`]). Absent: one per CPU. `0`: sessions run on the
    /// runtime that calls [`crate::server::BoundProxy::run`].
    pub workers: Option<usize>,
    /// Largest client packet accepted (bytes).
    pub max_allowed_packet: usize,
    /// Whether clients may ask for the compressed protocol
    /// (`CLIENT_COMPRESS`; backend connections are never compressed).
    pub compression: bool,
    /// Version string sent to clients; default: the backend's own.
    pub server_version: Option<String>,
    /// Method offered in the greeting: mysql_native_password or
    /// caching_sha2_password. Clients using either are accepted whatever it is.
    pub auth_plugin: String,
    /// How long a stopping proxy waits for sessions to finish their statement.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// The keeper's control address (host:port), every keeper of a group
    /// on etcd (a YAML list, or a comma list: the proxy follows the
    /// leader), or `embedded` to run the keeper inside this proxy.
    /// Absent: a standalone proxy (no failover).
    pub keeper: Option<KeeperAddrs>,
    /// The cluster token every control-plane peer presents.
    pub token: Option<String>,
    /// `control_tls`: TLS to the keepers (and, with `keeper: embedded`,
    /// on the embedded keeper's listener).
    pub control_tls: zerodb_core::config::ControlTlsConfig,
    /// `admin_token_file`: the operators' token (a second line while it
    /// is rotated), needed by the admin calls that act. Absent: those
    /// calls are served only on a loopback admin listener.
    pub admin_token_file: Option<PathBuf>,
    /// Timings of this proxy's part in the cluster.
    pub cluster: ClusterConfig,
    /// Settings of the keeper run with `keeper: embedded`.
    pub embedded_keeper: EmbeddedKeeperConfig,
    /// Holding statements while a switch is under way.
    pub buffer: BufferConfig,
    /// `limits`: timeouts and bounds on each client.
    pub limits: LimitsConfig,
    /// `tls`: TLS to clients (certificate, key, whether it is required).
    pub tls: crate::tls::TlsConfig,
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
    /// The keeper's timings (`embedded_keeper.session_timeout`,
    /// `.vote_timeout`, `.cooldown`, …), with zerodb-keeper's defaults.
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

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            name: "zerodb-proxy".into(),
            listen: "127.0.0.1:3307".into(),
            admin: "127.0.0.1:9307".into(),
            auth: AuthMode::Static,
            auth_refresh: Duration::from_secs(60),
            users: Vec::new(),
            datahosts: Vec::new(),
            pool: PoolConfig::default(),
            health: HealthConfig::default(),
            max_connections: 10_000,
            workers: None,
            max_allowed_packet: 64 << 20,
            compression: true,
            server_version: None,
            auth_plugin: crate::auth::NATIVE.into(),
            shutdown_timeout: Duration::from_secs(10),
            keeper: None,
            token: None,
            admin_token_file: None,
            control_tls: Default::default(),
            cluster: ClusterConfig::default(),
            embedded_keeper: EmbeddedKeeperConfig::default(),
            buffer: BufferConfig::default(),
            limits: LimitsConfig::default(),
            tls: Default::default(),
            policy: Policy::default(),
        }
    }
}

/// The top-level keys of a proxy config (besides the policy keys).
pub const PROXY_KEYS: [&str; 25] = [
    "name",
    "listen",
    "admin",
    "auth",
    "auth_refresh",
    "users",
    "datahosts",
    "pool",
    "health",
    "max_connections",
    "workers",
    "max_allowed_packet",
    "compression",
    "server_version",
    "auth_plugin",
    "shutdown_timeout",
    "keeper",
    "token",
    "admin_token_file",
    "control_tls",
    "cluster",
    "embedded_keeper",
    "buffer",
    "limits",
    "tls",
];

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

    /// Loads from any figment (TOML text, extra providers) and checks the
    /// result; no `ZERODB_*` overrides unless `f` merges them.
    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let cfg: Self = extract_known(f, &PROXY_KEYS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether this proxy runs the keeper itself.
    pub fn embedded_keeper(&self) -> bool {
        self.keeper.as_ref().is_some_and(KeeperAddrs::is_embedded)
    }

    /// What `--check` warns about: a config that loads and works, but
    /// may misbehave (several keepers and an offline rule quicker than
    /// their election, see [`zerodb_core::keepers::election_warning`]).
    pub fn warnings(&self) -> Vec<String> {
        let keepers = self.keeper.as_ref().map_or(0, KeeperAddrs::len);
        zerodb_core::keepers::election_warning(
            keepers,
            &self.policy,
            self.cluster.switch_retry_interval,
        )
        .into_iter()
        .collect()
    }

    /// The keeper an embedded proxy runs: its dataHosts and policy.
    pub fn keeper_config(&self) -> KeeperConfig {
        KeeperConfig {
            listen: self.embedded_keeper.listen.clone(),
            admin: None,
            token: self.token.clone().unwrap_or_default(),
            admin_token_file: self.admin_token_file.clone(),
            control_tls: self.control_tls.clone(),
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
            // The embedded keeper is the only one: the file store.
            store: zerodb_core::config::StoreKind::File,
            etcd: Default::default(),
            advertise: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.datahosts.is_empty() {
            return bad("at least one entry in `datahosts` is needed".into());
        }
        match self.auth {
            AuthMode::Static if self.users.is_empty() => {
                return bad("at least one entry in `users` is needed (or `auth: backend`)".into());
            }
            AuthMode::Backend if !self.users.is_empty() => {
                return bad(
                    "under `auth: backend` accounts come from the datasources: remove `users`"
                        .into(),
                );
            }
            AuthMode::Backend if self.auth_refresh < Duration::from_secs(1) => {
                return bad("auth_refresh: at least 1s".into());
            }
            _ => {}
        }
        crate::users::Users::resolve(&self.users)?;
        if let Some(p) = self.limits.problem() {
            return bad(p);
        }
        self.tls
            .server_config()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        zerodb_core::control_tls::server_config(&self.control_tls)?;
        zerodb_core::control_tls::client_config(&self.control_tls)?;
        if let Some(f) = &self.admin_token_file {
            zerodb_core::tokens::read_token_file(f)
                .map_err(|e| ConfigError::Invalid(format!("admin_token_file: {e}")))?;
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
            dh.tls
                .client()
                .map_err(|e| ConfigError::Invalid(format!("dataHost `{}`: {e}", dh.name)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Toml;
    use zerodb_core::config::EnvOverrides;

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
    fn auth_backend_takes_its_accounts_from_the_datasources_only() {
        let backend = SEED.replace("users: [{name: app, password: pw}]", "auth: backend");
        let cfg = ProxyConfig::from_yaml(&backend).expect("no users needed");
        assert_eq!(
            (cfg.auth, cfg.auth_refresh),
            (AuthMode::Backend, Duration::from_secs(60))
        );
        let both = SEED.replace("users:", "auth: backend\nusers:");
        let e = ProxyConfig::from_yaml(&both).unwrap_err().to_string();
        assert!(e.contains("remove `users`"), "{e}");
        let fast = format!("{backend}auth_refresh: 100ms\n");
        let e = ProxyConfig::from_yaml(&fast).unwrap_err().to_string();
        assert!(e.contains("auth_refresh"), "{e}");
        let none = SEED.replace("users: [{name: app, password: pw}]", "");
        let e = ProxyConfig::from_yaml(&none).unwrap_err().to_string();
        assert!(e.contains("auth: backend"), "{e}");
    }

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

    fn keepers(extra: &str) -> Result<Option<Vec<String>>, String> {
        ProxyConfig::from_yaml(&format!("{SEED}token: t\n{extra}"))
            .map(|c| c.keeper.map(|k| k.to_vec()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keeper_is_one_address_a_list_or_embedded() {
        assert_eq!(keepers("").unwrap(), None);
        assert_eq!(
            keepers("keeper: 10.0.0.5:7700\n").unwrap(),
            Some(vec!["10.0.0.5:7700".to_string()])
        );
        assert_eq!(
            keepers("keeper: [\"10.0.0.5:7700\", \"10.0.0.6:7700\"]\n").unwrap(),
            Some(vec![
                "10.0.0.5:7700".to_string(),
                "10.0.0.6:7700".to_string()
            ])
        );
        let c = ProxyConfig::from_yaml(&format!("{SEED}keeper: embedded\n")).unwrap();
        assert!(c.embedded_keeper(), "no token needed either");
        let e = keepers("keeper: [\"10.0.0.5:7700\", embedded]\n").unwrap_err();
        assert!(e.contains("embedded"), "{e}");
        let e = ProxyConfig::from_yaml(&format!("{SEED}keeper: [\"a:1\", \"b:2\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
    }

    #[test]
    fn the_keeper_list_from_the_environment() {
        let env = EnvOverrides::from_vars(
            "ZERODB_",
            &PROXY_KEYS,
            [("ZERODB_KEEPER".to_string(), "a:1,b:2".to_string())],
        );
        let text = format!("{SEED}token: t\nkeeper: embedded\n");
        let c = ProxyConfig::from_figment(Figment::from(Yaml::string(&text)).merge(env)).unwrap();
        assert_eq!(
            c.keeper.map(|k| k.to_vec()),
            Some(vec!["a:1".into(), "b:2".into()])
        );
        assert!(ProxyConfig::from_yaml(&text).unwrap().embedded_keeper());
    }

    #[test]
    fn several_keepers_warn_when_offline_comes_before_an_election() {
        let c = |extra: &str| ProxyConfig::from_yaml(&format!("{SEED}token: t\n{extra}")).unwrap();
        // The seed: 3 requests, 500ms apart.
        assert_eq!(c("keeper: [\"a:1\", \"b:2\"]\n").warnings().len(), 1);
        assert!(c("keeper: a:1\n").warnings().is_empty());
        assert!(
            c("keeper: [\"a:1\", \"b:2\"]\ncluster: {switch_retry_interval: 2s}\n")
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn typos_are_refused() {
        let err = ProxyConfig::from_yaml(&format!("{SEED}\nneed_vot: true\n")).unwrap_err();
        assert!(err.to_string().contains("need_vot"), "{err}");
    }
}
