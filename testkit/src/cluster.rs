//! Test clusters: keeper, agents and proxies as real processes, with the
//! configs they need, timed for quick failover on a loaded 2-core machine.

use crate::{free_port, scratch, Daemon, MariaDb, Proxy, APP_PASSWORD, APP_USER};
use crate::{BACKEND_PASSWORD, BACKEND_USER};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-cluster-token";

/// The three binaries, found beside the proxy's (`cargo test --workspace`
/// builds them all before any test runs).
pub struct Bins {
    pub proxy: PathBuf,
    pub keeper: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    pub fn beside(proxy: &Path) -> Self {
        let dir = proxy.parent().expect("binary dir");
        let b = Self {
            proxy: proxy.to_path_buf(),
            keeper: dir.join("zerodb-keeper"),
            agent: dir.join("zerodb-agent"),
        };
        for p in [&b.keeper, &b.agent] {
            assert!(
                p.exists(),
                "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) first",
                p.display()
            );
        }
        b
    }
}

/// A datasource as one process reaches it.
#[derive(Clone)]
pub struct Ds {
    pub name: String,
    pub addr: String,
}

impl Ds {
    pub fn of(db: &MariaDb) -> Self {
        Self {
            name: db.name.clone(),
            addr: db.addr(),
        }
    }

    /// `db`, reached through `relay` instead.
    pub fn via(db: &MariaDb, relay: &crate::relay::Relay) -> Self {
        Self {
            name: db.name.clone(),
            addr: relay.addr(),
        }
    }
}

/// A dataHost: name, schema, datasources (the first starts active).
pub struct Dh {
    pub name: String,
    pub schema: String,
    pub sources: Vec<Ds>,
}

pub fn dh(name: &str, schema: &str, sources: Vec<Ds>) -> Dh {
    Dh {
        name: name.into(),
        schema: schema.into(),
        sources,
    }
}

fn sources_yaml(sources: &[Ds], agent: impl Fn(&str) -> Option<u16>) -> String {
    sources
        .iter()
        .map(|s| match agent(&s.name) {
            Some(p) => format!(
                "      - {{name: {}, addr: \"{}\", agent: \"127.0.0.1:{p}\"}}\n",
                s.name, s.addr
            ),
            None => format!("      - {{name: {}, addr: \"{}\"}}\n", s.name, s.addr),
        })
        .collect()
}

/// The proxy's cluster settings for tests: quick probes and heartbeats.
pub const PROXY_TIMINGS: &str = "health: {interval: 150ms, timeout: 500ms, fall: 3, rise: 2}\n\
cluster: {heartbeat_interval: 200ms, switch_retry_interval: 300ms, request_timeout: 6s, reconnect_interval: 300ms}\n\
pool: {min_idle: 1}\n";

/// YAML for a proxy named `name` in a cluster whose keeper is `keeper`
/// (an address, or `embedded`), plus `extra` (policy keys, …).
pub fn proxy_yaml(name: &str, keeper: &str, dhs: &[Dh], extra: &str) -> String {
    proxy_yaml_with(name, keeper, dhs, PROXY_TIMINGS, extra)
}

/// [`proxy_yaml`] with other `timings` (health, cluster, pool keys; empty
/// for the defaults).
pub fn proxy_yaml_with(name: &str, keeper: &str, dhs: &[Dh], timings: &str, extra: &str) -> String {
    let mut y = format!(
        "name: {name}\nkeeper: \"{keeper}\"\ntoken: {TOKEN}\n\
         users:\n  - {{name: {APP_USER}, password: {APP_PASSWORD}}}\n{timings}datahosts:\n"
    );
    for d in dhs {
        y += &format!(
            "  - name: {}\n    schemas: [{}]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    datasources:\n{}",
            d.name,
            d.schema,
            sources_yaml(&d.sources, |_| None)
        );
    }
    y + extra
}

pub fn start_member(bins: &Bins, name: &str, keeper_port: u16, dhs: &[Dh], extra: &str) -> Proxy {
    Proxy::start(
        &bins.proxy,
        &proxy_yaml(name, &format!("127.0.0.1:{keeper_port}"), dhs, extra),
    )
}

/// A running keeper.
pub struct Keeper {
    pub port: u16,
    pub daemon: Daemon,
    pub state_dir: PathBuf,
}

impl std::ops::Deref for Keeper {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Keeper {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// Starts a keeper over `dhs`; `agents` gives the agent port of a
/// datasource (none: the keeper queries it itself). `extra`: policy keys
/// and timings.
pub fn start_keeper(bins: &Bins, dhs: &[Dh], agents: &[(&str, u16)], extra: &str) -> Keeper {
    let port = free_port();
    let admin = free_port();
    let state_dir = scratch("keeper-state");
    let mut y = format!(
        "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\ntoken: {TOKEN}\nstate_dir: {}\n\
         session_timeout: 2s\nvote_timeout: 1500ms\nagent_timeout: 1s\ncooldown: 2s\n\
         need_target_load_check.safe_load: 100\ndatahosts:\n",
        state_dir.display()
    );
    for d in dhs {
        y += &format!(
            "  - name: {}\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    replication_user: repl\n    replication_password: repl\n    datasources:\n{}",
            d.name,
            sources_yaml(&d.sources, |n| agents.iter().find(|(a, _)| *a == n).map(|(_, p)| *p))
        );
    }
    y += extra;
    Keeper {
        port,
        daemon: Daemon::start(&bins.keeper, "keeper", &y, admin),
        state_dir,
    }
}

impl Keeper {
    /// POST on the admin port with the token.
    pub fn act(&self, path: &str, json: &str) -> (u16, String) {
        crate::http(self.admin_port, "POST", path, Some(json), Some(TOKEN)).expect("keeper admin")
    }

    pub fn decisions(&self) -> Vec<serde_json::Value> {
        self.json("/decisions")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The rejection reasons recorded so far, oldest first.
    pub fn reasons(&self) -> Vec<String> {
        self.decisions()
            .iter()
            .map(|d| {
                d["decision"]["rejection"]["reason"]
                    .as_str()
                    .or(d["decision"]["decision"].as_str())
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    }
}

/// A running agent.
pub struct Agent {
    pub port: u16,
    pub daemon: Daemon,
}

impl std::ops::Deref for Agent {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// Reserves a port for an agent to be started later (its address goes in
/// the keeper's config before the keeper's port is known).
pub fn agent_port() -> u16 {
    free_port()
}

pub fn start_agent(bins: &Bins, db: &MariaDb, port: u16, keeper_port: u16) -> Agent {
    start_agent_with(bins, db, port, keeper_port, "", "")
}

/// [`start_agent`] with more keys under `datasource` (e.g. `binlog_index`)
/// and at the top level (`extra`, one `key: value` per line).
pub fn start_agent_with(
    bins: &Bins,
    db: &MariaDb,
    port: u16,
    keeper_port: u16,
    datasource_extra: &str,
    extra: &str,
) -> Agent {
    let keeper = format!("127.0.0.1:{keeper_port}");
    start_agent_for(bins, db, port, &keeper, datasource_extra, extra)
}

/// An agent whose `keeper` key is `keepers`: one address, or a YAML list
/// of every keeper of a group on etcd.
pub fn start_agent_for(
    bins: &Bins,
    db: &MariaDb,
    port: u16,
    keepers: &str,
    datasource_extra: &str,
    extra: &str,
) -> Agent {
    let admin = free_port();
    let y = format!(
        "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\ntoken: {TOKEN}\nkeeper: {keepers}\n\
         heartbeat_interval: 200ms\ntimeout: 800ms\nstate_dir: {}\n\
         datasource: {{name: {}, addr: \"{}\", user: {BACKEND_USER}, password: {BACKEND_PASSWORD}{datasource_extra}}}\n{extra}",
        scratch("agent-state").display(),
        db.name,
        db.addr()
    );
    Agent {
        port,
        daemon: Daemon::start(&bins.agent, &format!("agent-{}", db.name), &y, admin),
    }
}

/// Polls `f` every 100 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The active datasource of `datahost` in a proxy's /status.
pub fn active_of(proxy: &Proxy, datahost: &str) -> String {
    proxy.status()["datahosts"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == datahost))
        .and_then(|d| d["active"].as_str())
        .unwrap_or_default()
        .to_string()
}
