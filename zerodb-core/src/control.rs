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
    /// The epoch of the last approved switch (0: the config's initial topology).
    pub epoch: u64,
    /// The term of the leading keeper that published it (0: a sole
    /// keeper on the file store). Proxies and agents keep the newest term
    /// seen and refuse a topology under it: a deposed leader's late push
    /// takes no effect (SPEC §8).
    #[serde(default)]
    pub term: u64,
    /// Every dataHost's state.
    pub datahosts: Vec<DataHostState>,
}

/// One dataHost in a topology: its active datasource and its standbys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataHostState {
    /// The dataHost's name.
    pub name: String,
    /// The name of the datasource that takes reads and writes.
    pub active: String,
    /// The names of its other datasources.
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

    /// The dataHost named `name`, if the topology has it.
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
        /// The proxy's name, unique in the cluster.
        name: String,
        /// The epoch of the topology the proxy holds (0: only its config's).
        epoch: u64,
        /// That topology (`None` when it is only the config's).
        #[serde(default)]
        topology: Option<ClusterTopology>,
        /// Drawn at the proxy's start: a reconnect of the same process
        /// may replace its own session while the keeper still thinks it
        /// live; another process under the same name may not (0: unknown).
        #[serde(default)]
        instance: u64,
    },
    /// Keeps the proxy's session alive.
    Heartbeat,
    /// The proxy cannot reach `source`, the active datasource of `datahost`.
    SwitchRequest {
        /// Chosen by the proxy; the keeper's [`FromKeeper::SwitchAnswer`] carries it back.
        id: u64,
        /// The dataHost to switch.
        datahost: String,
        /// The datasource the proxy believes active and cannot reach.
        source: String,
    },
    /// Answer to a [`FromKeeper::VoteRequest`]: whether a fresh probe failed.
    Vote {
        /// The `id` of the vote request answered.
        id: u64,
        /// True when the proxy's probe failed (a vote to switch).
        down: bool,
    },
    /// Answer to a [`FromKeeper::Hold`]: the dataHost is held; `open`
    /// sessions were still in a statement or transaction when the grace
    /// period ended.
    Held {
        /// The `id` of the hold answered.
        id: u64,
        /// How many sessions were still open when the grace period ended.
        open: u32,
    },
    /// The proxy leaves the cluster (it stops, or its view is the odd one).
    Unregister {
        /// Why, for the keeper's log.
        reason: String,
    },
}

/// Keeper → proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromKeeper {
    /// Answer to [`ToKeeper::Register`]: the proxy is a member.
    Registered {
        /// The keeper's current topology.
        topology: ClusterTopology,
        /// The keeper's session timeout in milliseconds: a proxy silent this long loses its session.
        session_timeout_ms: u64,
    },
    /// A newer topology; apply it if its epoch is newer than yours.
    Topology {
        /// The new topology.
        topology: ClusterTopology,
    },
    /// Probe `datasource` now and answer with [`ToKeeper::Vote`].
    VoteRequest {
        /// Identifies the request; the [`ToKeeper::Vote`] carries it back.
        id: u64,
        /// The dataHost whose active datasource is in question.
        datahost: String,
        /// The datasource to probe (the dataHost's active one).
        datasource: String,
    },
    /// A [`ToKeeper::SwitchRequest`] arrived and is being decided: the
    /// proxy waits for its [`FromKeeper::SwitchAnswer`] however long the
    /// decision takes (SPEC §7: a slow keeper is not an absent one).
    SwitchAck {
        /// The `id` of the switch request.
        id: u64,
    },
    /// The keeper's decision on a [`ToKeeper::SwitchRequest`].
    SwitchAnswer {
        /// The `id` of the switch request answered.
        id: u64,
        /// The decision.
        answer: SwitchAnswer,
    },
    /// A planned switchover begins: hold new statements for `datahost`
    /// (they wait, as during a failover), let sessions in a statement or a
    /// transaction finish for up to `grace_ms`, then answer
    /// [`ToKeeper::Held`]. The hold ends with a newer topology, a
    /// [`FromKeeper::Release`], or after `max_ms` whatever happens.
    Hold {
        /// Identifies the hold; the [`ToKeeper::Held`] carries it back.
        id: u64,
        /// The dataHost to hold.
        datahost: String,
        /// How long open statements and transactions may take to finish, in milliseconds.
        grace_ms: u64,
        /// The longest the hold may last, in milliseconds.
        max_ms: u64,
    },
    /// The switchover did not happen: serve `datahost` as before.
    Release {
        /// The dataHost to release.
        datahost: String,
    },
    /// This keeper does not lead (keepers on etcd, SPEC §8): register with
    /// the leader instead. An answer, not an absence: a switch request
    /// that gets it has reached the keepers.
    NotLeader(NotLeader),
    /// The keeper will not talk to this connection (for example: a proxy of
    /// the same name is already connected).
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// The HTTP status of a follower keeper's answer to an agent's heartbeat
/// (421 Misdirected Request), with a JSON [`NotLeader`] body.
pub const NOT_LEADER_STATUS: u16 = 421;

/// A follower keeper's answer to a proxy's registration, and (HTTP 421
/// Misdirected Request) to an agent's heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    /// The leader's advertised control address (host:port); `None` while
    /// an election is under way: try the keepers again shortly.
    pub leader: Option<String>,
}

/// What the keeper says to a switch request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SwitchAnswer {
    /// Approved: the new topology, with the new active datasource.
    Switched {
        /// The new topology.
        topology: ClusterTopology,
    },
    /// The source named is no longer active: here is the current topology.
    Stale {
        /// The current topology.
        topology: ClusterTopology,
    },
    /// Refused: the topology does not change.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}

/// Who asks for a switch, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The dataHost to switch.
    pub datahost: String,
    /// The datasource the requester believes active (and cannot reach).
    pub source: String,
    /// A proxy's failover or an operator's switchover.
    #[serde(flatten)]
    pub kind: RequestKind,
}

/// Where a switch request comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestKind {
    /// A proxy cannot reach the source.
    Failover {
        /// The name of the proxy that asks.
        requester: String,
    },
    /// An operator's planned switchover, to a named target or the best one.
    Switchover {
        /// The datasource to promote (`None`: the keeper picks the best standby).
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
        /// Milliseconds until the cooldown ends.
        remaining_ms: u64,
    },
    /// A registered proxy is lost: it may still write to the source.
    LostProxy {
        /// The names of the lost proxies.
        proxies: Vec<String>,
    },
    /// Too few proxies saw the source down: `approvals × 100 ≤ approve_ratio × voters`.
    VoteFailed {
        /// How many proxies' probes of the source failed.
        approvals: usize,
        /// How many registered proxies voted, the requester included.
        voters: usize,
    },
    /// No true standby to switch to: why each datasource is not one.
    NoStandby {
        /// Each datasource passed over → why (empty: the dataHost has no standby).
        standbys: BTreeMap<String, String>,
    },
    /// The named target is not a true standby of the source, and the
    /// switchover was not forced.
    NotAStandby {
        /// The target named.
        target: String,
        /// Why it is not a true standby.
        why: String,
    },
    /// A switch of this dataHost failed recently: automatic requests wait
    /// `switch_backoff` before the next attempt.
    Backoff {
        /// Milliseconds left.
        remaining_ms: u64,
    },
    /// The keeper knows no dataHost of that name.
    UnknownDataHost {
        /// The dataHost named.
        datahost: String,
    },
    /// The named target is not a standby of this dataHost.
    UnknownTarget {
        /// The target named.
        target: String,
    },
    /// The target's agent does not answer (agent CASE 2).
    TargetAgentDown {
        /// The target datasource.
        target: String,
    },
    /// The target's server does not answer.
    TargetDown {
        /// The target datasource.
        target: String,
    },
    /// The target's load is at or above `safe_load`, or unknown.
    TargetOverloaded {
        /// The target datasource.
        target: String,
        /// The target's load (`None`: not measured, which counts as overloaded).
        load: Option<f64>,
        /// The `need_target_load_check.safe_load` limit.
        safe_load: f64,
    },
    /// The source's agent does not answer the strict binlog check (agent CASE 1).
    SourceAgentDown {
        /// The source datasource.
        source: String,
    },
    /// The target is too far behind the source or, in the lenient check, cannot apply its relay log.
    BinlogDelay {
        /// The target datasource.
        target: String,
        /// Bytes behind the source's binlog end (`None`: not comparable).
        behind: Option<u64>,
        /// The `safe_binlog_delay` limit in bytes (`None`: the lenient check).
        limit: Option<u64>,
        /// What was compared, in words.
        detail: String,
    },
    /// The old source's server answered but could not be fenced: the
    /// target was left untouched, the old topology stays.
    FenceFailed {
        /// The old source.
        source: String,
        /// The fence's error.
        error: String,
    },
    /// The target's agent could not promote it; the old topology stays.
    PromotionFailed {
        /// The target datasource.
        target: String,
        /// The promotion's error.
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
            Rejection::Backoff { .. } => "Backoff",
            Rejection::UnknownDataHost { .. } => "UnknownDataHost",
            Rejection::UnknownTarget { .. } => "UnknownTarget",
            Rejection::TargetAgentDown { .. } => "TargetAgentDown",
            Rejection::TargetDown { .. } => "TargetDown",
            Rejection::TargetOverloaded { .. } => "TargetOverloaded",
            Rejection::SourceAgentDown { .. } => "SourceAgentDown",
            Rejection::BinlogDelay { .. } => "BinlogDelay",
            Rejection::FenceFailed { .. } => "FenceFailed",
            Rejection::PromotionFailed { .. } => "PromotionFailed",
        }
    }
}

/// A position in a binlog, in the coordinates of the server that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    /// The binlog file name, e.g. `mysql-bin.000007`.
    pub file: String,
    /// The byte offset in that file.
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
    /// Whether the I/O thread runs (`Slave_IO_Running: Yes`).
    pub io_running: bool,
    /// Whether the SQL thread runs (`Slave_SQL_Running: Yes`).
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
    /// The datasource's name.
    pub datasource: String,
    /// The MySQL server answers.
    pub alive: bool,
    /// The server's `@@global.read_only` (`None`: the server does not answer).
    pub read_only: Option<bool>,
    /// The load the keeper compares with `safe_load` (see `LoadMeasure`).
    pub load: Option<f64>,
    /// The machine's 1-minute load average divided by its CPUs (`None`: unknown).
    pub loadavg_per_cpu: Option<f64>,
    /// Client statements running, as for [`LoadMeasure::ThreadsRunning`] (`None`: the server does not answer).
    pub threads_running: Option<u64>,
    /// As a source: the end of its own binlog (read from the files on disk
    /// when the server is dead).
    pub binlog_end: Option<BinlogPos>,
    /// Its replication status (`None`: not a replica, or the server does not answer).
    pub replica: Option<ReplicaStatus>,
    /// MariaDB `@@gtid_binlog_state`: the last GTID of every
    /// domain-server pair in its binlog (for the errant-transaction check).
    pub gtid_binlog_state: String,
    /// The newest epoch the agent has seen.
    pub epoch: u64,
    /// The newest keeper term the agent has seen (in an order or a
    /// topology).
    pub term: u64,
    /// Fenced by an order (it stays read-only whatever happens).
    pub fenced: bool,
    /// Why it cannot rejoin, when it cannot.
    pub errant: Option<String>,
}

/// An order from the keeper to an agent, under an epoch the agent checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The epoch the order is given under; agents refuse one older than the newest they have seen.
    pub epoch: u64,
    /// The term of the leading keeper that gives it (0: a sole keeper);
    /// agents refuse one under the newest term they have seen.
    #[serde(default)]
    pub term: u64,
    /// What to do.
    #[serde(flatten)]
    pub kind: OrderKind,
}

/// What an order tells an agent to do to its server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum OrderKind {
    /// Apply the relay log, stop and reset replication, clear `read_only`.
    Promote,
    /// Set `read_only`, end every session that is not the agent's own.
    Fence,
    /// Lift a fence this switch may have set: clear `read_only`, nothing
    /// else (a switch that did not happen gives the source back as it was).
    Unfence,
    /// Replicate from `source` (host:port) with these credentials.
    Follow {
        /// The new source's address, host:port.
        source: String,
        /// The user to replicate as.
        user: String,
        /// That user's password.
        password: String,
    },
    /// Wait until the executed position reaches `position` of the source.
    CatchUp {
        /// The source's binlog end, in the source's coordinates.
        position: BinlogPos,
        /// How long to wait, in milliseconds.
        timeout_ms: u64,
    },
}

/// Agent → keeper heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    /// The datasource the agent runs beside.
    pub datasource: String,
    /// The agent's control address, as the keeper should dial it.
    pub listen: String,
    /// The agent's report on its datasource.
    pub report: AgentReport,
    /// The newest topology the agent has seen (it persists it).
    #[serde(default)]
    pub topology: Option<ClusterTopology>,
}

/// Keeper → agent, in answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHeartbeatReply {
    /// The keeper's current topology.
    pub topology: ClusterTopology,
    /// The datasource this agent's server should replicate from, when it is
    /// a standby: host:port and credentials, plus the source's GTID state.
    pub follow: Option<FollowHint>,
}

/// Where a standby replicates from, and as whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FollowHint {
    /// The active datasource's name.
    pub source_name: String,
    /// The active datasource's address, host:port.
    pub source: String,
    /// The user to replicate as.
    pub user: String,
    /// That user's password.
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
            term: 2,
            kind: OrderKind::Promote,
        };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"epoch":4,"term":2,"order":"promote"}"#);
        // An order of a keeper that knows no terms is under term 0.
        let old: Order = serde_json::from_str(r#"{"epoch":4,"order":"fence"}"#).unwrap();
        assert_eq!(old.term, 0);
        let m = FromKeeper::NotLeader(NotLeader {
            leader: Some("10.0.0.6:7700".into()),
        });
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"type":"not_leader","leader":"10.0.0.6:7700"}"#);
    }
}
