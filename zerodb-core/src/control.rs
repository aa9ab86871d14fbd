//! Messages between proxies, the keeper and agents (the control plane).
//!
//! Transport: a proxy dials the keeper and keeps one WebSocket open
//! (`/v1/proxy`), carrying JSON [`ToKeeper`] / [`FromKeeper`] messages both
//! ways, so votes and pushed topologies need no inbound port on the proxy.
//! The keeper calls agents over HTTP/JSON (`/v1/report`, `/v1/order`), and
//! agents heartbeat to the keeper (`/v1/agent/heartbeat`). Every request
//! carries the cluster token as `Authorization: Bearer <token>`.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// For each dataHost, its active datasource, under one epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterTopology {
    pub epoch: u64,
    pub datahosts: Vec<DataHostState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataHostState {
    pub name: String,
    pub active: String,
    pub standbys: Vec<String>,
}

impl DataHostState {
    /// `active` and, as standbys, the other names of `datasources`.
    pub fn new<'a>(
        name: &str,
        active: &str,
        datasources: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            name: name.to_string(),
            active: active.to_string(),
            standbys: datasources
                .into_iter()
                .filter(|n| *n != active)
                .map(str::to_string)
                .collect(),
        }
    }
}

/// Why a topology does not fit a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyMismatch {
    /// The topology lists a dataHost twice.
    #[error("dataHost `{0}` twice")]
    DataHostTwice(String),
    /// The config has no such dataHost.
    #[error("unknown dataHost `{0}`")]
    UnknownDataHost(String),
    /// The dataHost has no such datasource in the config.
    #[error("dataHost `{datahost}` has no datasource `{datasource}`")]
    UnknownDatasource {
        /// The dataHost named.
        datahost: String,
        /// The datasource it does not have.
        datasource: String,
    },
}

impl ClusterTopology {
    /// Checks that this topology names only dataHosts and datasources
    /// that `known` (dataHost → its datasources) has, each dataHost once.
    pub fn fits(&self, known: &[(&str, Vec<&str>)]) -> Result<(), TopologyMismatch> {
        for (i, d) in self.datahosts.iter().enumerate() {
            if self.datahosts[..i].iter().any(|o| o.name == d.name) {
                return Err(TopologyMismatch::DataHostTwice(d.name.clone()));
            }
            let Some((_, sources)) = known.iter().find(|(n, _)| *n == d.name) else {
                return Err(TopologyMismatch::UnknownDataHost(d.name.clone()));
            };
            for ds in std::iter::once(&d.active).chain(&d.standbys) {
                if !sources.contains(&ds.as_str()) {
                    return Err(TopologyMismatch::UnknownDatasource {
                        datahost: d.name.clone(),
                        datasource: ds.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn datahost(&self, name: &str) -> Option<&DataHostState> {
        self.datahosts.iter().find(|d| d.name == name)
    }

    /// `(dataHost, active datasource)` pairs, as `Topology::apply` takes them.
    pub fn changes(&self) -> Vec<(&str, &str)> {
        self.datahosts
            .iter()
            .map(|d| (d.name.as_str(), d.active.as_str()))
            .collect()
    }
}

/// Proxy → keeper, over the proxy's WebSocket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToKeeper {
    /// First message on a connection (and again after a reconnect), with
    /// the newest topology the proxy holds, if any (a keeper that lost its
    /// state adopts it: SPEC §7).
    Register {
        name: String,
        epoch: u64,
        #[serde(default)]
        topology: Option<ClusterTopology>,
    },
    Heartbeat,
    /// The proxy cannot reach `source`, the active datasource of `datahost`.
    SwitchRequest {
        id: u64,
        datahost: String,
        source: String,
    },
    /// Answer to a [`FromKeeper::VoteRequest`]: whether a fresh probe failed.
    Vote {
        id: u64,
        down: bool,
    },
    /// Answer to a [`FromKeeper::Hold`]: the dataHost is held; `open`
    /// sessions were still in a statement or transaction when the grace
    /// period ended.
    Held {
        id: u64,
        open: u32,
    },
    /// The proxy leaves the cluster (it stops, or its view is the odd one).
    Unregister {
        reason: String,
    },
}

/// Keeper → proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromKeeper {
    Registered {
        topology: ClusterTopology,
        session_timeout_ms: u64,
    },
    /// A newer topology; apply it if its epoch is newer than yours.
    Topology {
        topology: ClusterTopology,
    },
    /// Probe `datasource` now and answer with [`ToKeeper::Vote`].
    VoteRequest {
        id: u64,
        datahost: String,
        datasource: String,
    },
    SwitchAnswer {
        id: u64,
        answer: SwitchAnswer,
    },
    /// A planned switchover begins: hold new statements for `datahost`
    /// (they wait, as during a failover), let sessions in a statement or a
    /// transaction finish for up to `grace_ms`, then answer
    /// [`ToKeeper::Held`]. The hold ends with a newer topology, a
    /// [`FromKeeper::Release`], or after `max_ms` whatever happens.
    Hold {
        id: u64,
        datahost: String,
        grace_ms: u64,
        max_ms: u64,
    },
    /// The switchover did not happen: serve `datahost` as before.
    Release {
        datahost: String,
    },
    /// The keeper will not talk to this connection (for example: a proxy of
    /// the same name is already connected).
    Refused {
        reason: String,
    },
}

/// What the keeper says to a switch request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SwitchAnswer {
    Switched {
        topology: ClusterTopology,
    },
    /// The source named is no longer active: here is the current topology.
    Stale {
        topology: ClusterTopology,
    },
    Rejected {
        rejection: Rejection,
    },
}

/// Who asks for a switch, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub datahost: String,
    /// The datasource the requester believes active (and cannot reach).
    pub source: String,
    #[serde(flatten)]
    pub kind: RequestKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestKind {
    /// A proxy cannot reach the source.
    Failover { requester: String },
    /// An operator's planned switchover, to a named target or the best one.
    Switchover {
        target: Option<String>,
        /// Promote the named target even if it is not a true standby
        /// of the source, or not caught up with it (its missing
        /// transactions are lost).
        #[serde(default)]
        force: bool,
    },
}

/// Why a switch was refused, machine-readable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason")]
pub enum Rejection {
    /// The dataHost is in maintenance: no automatic switch.
    Maintenance,
    /// The keeper adopted a topology a proxy or agent reported and does not
    /// know every member yet: no automatic switch until an operator
    /// confirms the membership.
    MembershipUnconfirmed,
    /// Switched too recently (anti-flapping).
    Cooldown {
        remaining_ms: u64,
    },
    /// A registered proxy is lost: it may still write to the source.
    LostProxy {
        proxies: Vec<String>,
    },
    VoteFailed {
        approvals: usize,
        voters: usize,
    },
    /// No true standby to switch to: why each datasource is not one.
    NoStandby {
        standbys: BTreeMap<String, String>,
    },
    /// The named target is not a true standby of the source, and the
    /// switchover was not forced.
    NotAStandby {
        target: String,
        why: String,
    },
    /// The named target is not a standby of this dataHost.
    UnknownTarget {
        target: String,
    },
    TargetAgentDown {
        target: String,
    },
    /// The target's server does not answer.
    TargetDown {
        target: String,
    },
    TargetOverloaded {
        target: String,
        load: Option<f64>,
        safe_load: f64,
    },
    SourceAgentDown {
        source: String,
    },
    BinlogDelay {
        target: String,
        /// Bytes behind the source's binlog end (`None`: not comparable).
        behind: Option<u64>,
        limit: Option<u64>,
        detail: String,
    },
    PromotionFailed {
        target: String,
        error: String,
    },
}

impl Rejection {
    /// The reason's name, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Maintenance => "Maintenance",
            Rejection::MembershipUnconfirmed => "MembershipUnconfirmed",
            Rejection::Cooldown { .. } => "Cooldown",
            Rejection::LostProxy { .. } => "LostProxy",
            Rejection::VoteFailed { .. } => "VoteFailed",
            Rejection::NoStandby { .. } => "NoStandby",
            Rejection::NotAStandby { .. } => "NotAStandby",
            Rejection::UnknownTarget { .. } => "UnknownTarget",
            Rejection::TargetAgentDown { .. } => "TargetAgentDown",
            Rejection::TargetDown { .. } => "TargetDown",
            Rejection::TargetOverloaded { .. } => "TargetOverloaded",
            Rejection::SourceAgentDown { .. } => "SourceAgentDown",
            Rejection::BinlogDelay { .. } => "BinlogDelay",
            Rejection::PromotionFailed { .. } => "PromotionFailed",
        }
    }
}

/// A position in a binlog, in the coordinates of the server that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// The numeric suffix of the file name (`mysql-bin.000007` → 7).
    pub fn file_index(&self) -> Option<u64> {
        self.file.rsplit('.').next()?.parse().ok()
    }

    /// How many bytes `self` is behind `ahead`: known only within one file
    /// (a file's length is not known from its name). `Some(0)` when `self`
    /// is at or past `ahead`.
    pub fn bytes_behind(&self, ahead: &BinlogPos) -> Option<u64> {
        if self.file == ahead.file {
            return Some(ahead.pos.saturating_sub(self.pos));
        }
        match (self.file_index(), ahead.file_index()) {
            (Some(a), Some(b)) if a > b => Some(0),
            _ => None,
        }
    }
}

impl PartialOrd for BinlogPos {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.file_index(), other.file_index()) {
            (Some(a), Some(b)) => Some((a, self.pos).cmp(&(b, other.pos))),
            _ if self.file == other.file => Some(self.pos.cmp(&other.pos)),
            _ => None,
        }
    }
}

/// A datasource replicating from another.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaStatus {
    /// host:port of the source it replicates from.
    pub source: String,
    pub io_running: bool,
    pub sql_running: bool,
    /// Received up to here, in the source's coordinates.
    pub read: Option<BinlogPos>,
    /// Applied up to here, in the source's coordinates.
    pub executed: Option<BinlogPos>,
    /// MariaDB `Gtid_IO_Pos`: the GTIDs received.
    pub gtid_io_pos: String,
    /// The SQL thread's error, else the I/O thread's.
    pub last_error: String,
    /// The SQL thread's error alone (`Last_SQL_Error`).
    pub sql_error: String,
}

impl ReplicaStatus {
    /// Whether everything received has been applied.
    pub fn relay_applied(&self) -> bool {
        match (&self.read, &self.executed) {
            (Some(r), Some(e)) => e.bytes_behind(r) == Some(0),
            _ => true,
        }
    }
}

/// What "load" means for the keeper's `safe_load` check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMeasure {
    /// The machine's 1-minute load average divided by its CPUs.
    #[default]
    Loadavg,
    /// Client statements the server is running: `Threads_running` without
    /// the replication threads (an idle replica has two, a source one per
    /// replica) and without the query that counts them.
    ThreadsRunning,
}

/// What an agent (or the keeper, querying directly) knows of a datasource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentReport {
    pub datasource: String,
    /// The MySQL server answers.
    pub alive: bool,
    pub read_only: Option<bool>,
    /// The load the keeper compares with `safe_load` (see `LoadMeasure`).
    pub load: Option<f64>,
    pub loadavg_per_cpu: Option<f64>,
    pub threads_running: Option<u64>,
    /// As a source: the end of its own binlog (read from the files on disk
    /// when the server is dead).
    pub binlog_end: Option<BinlogPos>,
    pub replica: Option<ReplicaStatus>,
    /// MariaDB `@@gtid_binlog_state`: the last GTID of every
    /// domain-server pair in its binlog (for the errant-transaction check).
    pub gtid_binlog_state: String,
    /// The newest epoch the agent has seen.
    pub epoch: u64,
    /// Fenced by an order (it stays read-only whatever happens).
    pub fenced: bool,
    /// Why it cannot rejoin, when it cannot.
    pub errant: Option<String>,
}

/// An order from the keeper to an agent, under an epoch the agent checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub epoch: u64,
    #[serde(flatten)]
    pub kind: OrderKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum OrderKind {
    /// Apply the relay log, stop and reset replication, clear `read_only`.
    Promote,
    /// Set `read_only`, end every session that is not the agent's own.
    Fence,
    /// Replicate from `source` (host:port) with these credentials.
    Follow {
        source: String,
        user: String,
        password: String,
    },
    /// Wait until the executed position reaches `position` of the source.
    CatchUp {
        position: BinlogPos,
        timeout_ms: u64,
    },
}

/// Agent → keeper heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    pub datasource: String,
    /// The agent's control address, as the keeper should dial it.
    pub listen: String,
    pub report: AgentReport,
    /// The newest topology the agent has seen (it persists it).
    #[serde(default)]
    pub topology: Option<ClusterTopology>,
}

/// Keeper → agent, in answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHeartbeatReply {
    pub topology: ClusterTopology,
    /// The datasource this agent's server should replicate from, when it is
    /// a standby: host:port and credentials, plus the source's GTID state.
    pub follow: Option<FollowHint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowHint {
    pub source_name: String,
    pub source: String,
    pub user: String,
    pub password: String,
    /// The source's `@@gtid_binlog_state`, when known.
    pub source_gtid_binlog_state: Option<String>,
}

/// Compares two MariaDB GTID states: the `(domain, server) → seq` entries of
/// `mine` that `theirs` lacks (a higher seq, or a pair it does not have).
/// These are errant transactions: `mine` cannot follow `theirs`.
pub fn errant_gtids(mine: &str, theirs: &str) -> Vec<String> {
    let parse = |s: &str| -> Vec<((u32, u32), u64)> {
        s.split(',')
            .filter_map(|g| {
                let mut it = g.trim().split('-');
                let d = it.next()?.parse().ok()?;
                let srv = it.next()?.parse().ok()?;
                let seq = it.next()?.parse().ok()?;
                Some(((d, srv), seq))
            })
            .collect()
    };
    let theirs = parse(theirs);
    parse(mine)
        .into_iter()
        .filter(|(k, seq)| !theirs.iter().any(|(tk, tseq)| tk == k && tseq >= seq))
        .map(|((d, s), seq)| format!("{d}-{s}-{seq}"))
        .collect()
}

/// A fresh random token (for an embedded keeper nobody else joins).
pub fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// The header a control-plane request carries.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Checks a presented `Authorization` header against the cluster token,
/// in time independent of where they differ.
pub fn token_matches(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
        }
    }

    #[test]
    fn binlog_distance_is_known_within_a_file() {
        let a = pos("mysql-bin.000003", 1000);
        assert_eq!(pos("mysql-bin.000003", 400).bytes_behind(&a), Some(600));
        assert_eq!(pos("mysql-bin.000003", 1200).bytes_behind(&a), Some(0));
        assert_eq!(pos("mysql-bin.000002", 999_999).bytes_behind(&a), None);
        assert_eq!(pos("mysql-bin.000004", 4).bytes_behind(&a), Some(0));
        assert!(pos("mysql-bin.000002", 999_999) < a);
        assert!(pos("mysql-bin.000010", 4) > a, "numeric, not lexical order");
    }

    #[test]
    fn errant_transactions_are_found() {
        // The old source wrote 0-1-105; the new one was promoted at 0-1-103.
        assert_eq!(errant_gtids("0-1-105", "0-1-103,0-2-110"), vec!["0-1-105"]);
        assert!(errant_gtids("0-1-103", "0-1-103,0-2-110").is_empty());
        assert!(errant_gtids("", "0-1-5").is_empty());
        assert_eq!(errant_gtids("1-7-2", "0-1-5"), vec!["1-7-2"]);
    }

    #[test]
    fn token_check() {
        assert!(token_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!token_matches(Some("Bearer s3cres"), "s3cret"));
        assert!(!token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
        assert!(!token_matches(Some("Bearer "), "s3cret"));
    }

    #[test]
    fn messages_are_tagged_json() {
        let m = ToKeeper::SwitchRequest {
            id: 7,
            datahost: "dh1".into(),
            source: "mysql_1".into(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains(r#""type":"switch_request""#), "{s}");
        assert_eq!(serde_json::from_str::<ToKeeper>(&s).unwrap(), m);
        let o = Order {
            epoch: 4,
            kind: OrderKind::Promote,
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"epoch":4,"order":"promote"}"#);
    }
}
