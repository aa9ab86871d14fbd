//! The failover benchmark: what an application sees when the active
//! datasource fails, trial after trial.
//!
//! It starts a cluster of its own: a MariaDB source and two replicas with
//! semi-synchronous replication (GTID), an agent beside each, a keeper and
//! three proxies (release builds). Each trial runs two writer sessions
//! (autocommit inserts of unique ids, every acknowledgement recorded) and a
//! reader per proxy, causes one fault to the active datasource (or to the
//! leading keeper), brings the failed process back, and measures:
//!
//! * detection, decision (vote + agent reports), promotion and topology
//!   push times (from the keeper's decision record and the proxies);
//! * client-visible write unavailability: per writer, its last acknowledged
//!   write before the fault to its first after; the worst writer counts;
//! * client errors by code, statements retried by the proxies, sessions
//!   that had to reconnect;
//! * acknowledged writes missing on the new source, and writes on the old
//!   source that the new one lacks (split brain).
//!
//! ```sh
//! cargo bench -p zerodb-benches --bench failover -- [--trials N] [--faults kill,kill-agent,pause,cut,switchover] [--defaults] [--etcd]
//! ```
//!
//! Keepers: by default one keeper on its own state file. The faults
//! `kill-keeper` and `kill-keeper+source` (opt-in, not in the default
//! list), or `--etcd`, run the keepers as a group instead (issue 17): a
//! 3-member etcd cluster (data on tmpfs, loopback, `--heartbeat-interval
//! 100 --election-timeout 500`) and three keepers with `store: etcd`,
//! `lease_ttl: 1s`; agents and proxies know all three and follow the
//! leader, and everything the bench asks a keeper goes to the leader.
//!
//! * `kill-keeper`: SIGKILL the leading keeper alone. The source stays
//!   up and nothing is switched: "fault→all switched" is then the time
//!   until every proxy is registered with the new leader, and the writes
//!   should go on with no error.
//! * `kill-keeper+source`: SIGKILL the leading keeper and the active source
//!   at the same moment; the new leader makes the switch, and its
//!   decision record gives the phases.
//!
//! For both, "new leader / re-registered" is the time from the kill until
//! another keeper's `/leader` answers 200, and until its `/status` shows
//! all three proxies connected. The killed keeper is restarted (same
//! config) after each trial, the killed source as for `kill`.
//!
//! `--defaults` runs with the shipped health and cluster settings instead
//! of the tuned ones below. Output: a table on stdout, and under
//! `target/failover/`: `results.json` and one SVG timeline per trial
//! (acknowledged writes and errors per 100 ms, with the fault, the switch
//! request, the decision, the moment every proxy had switched and, for
//! the keeper faults, the new leader and the proxies' re-registration
//! marked).

mod common;

use common::{median, release_binaries, workspace_root};
use plotters::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};
use zerodb_testkit::cluster::*;
use zerodb_testkit::etcd::EtcdCluster;
use zerodb_testkit::relay::Relay;
use zerodb_testkit::*;

/// Health and cluster settings tuned for fast failover.
const TUNED: &str = "health: {interval: 100ms, timeout: 250ms, fall: 2, rise: 2}\n\
cluster: {heartbeat_interval: 200ms, switch_retry_interval: 200ms, request_timeout: 5s, reconnect_interval: 300ms}\n\
pool: {min_idle: 2}\nbuffer: {window: 15s}\n";

const SEMI_SYNC: &[&str] = &[
    "--rpl-semi-sync-master-enabled=ON",
    "--rpl-semi-sync-slave-enabled=ON",
    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-timeout=10000",
    // A crashed source restarts as a replica: semisync recovery then
    // truncates transactions no replica acknowledged (MDEV-21117).
    "--init-rpl-role=SLAVE",
    // Re-pointing a replica stops its I/O thread, and the semi-sync side
    // then asks the old source to end its dump thread: a frozen source
    // holds that up to this timeout, and the new source's writes wait
    // for the re-pointed replica's ACK meanwhile.
    "--rpl-semi-sync-slave-kill-conn-timeout=1",
];

/// The keepers' etcd settings in etcd mode (inside `etcd:`, after the
/// endpoints). etcd itself runs with heartbeat 100 ms and election
/// timeout 500 ms (the testkit's [`EtcdCluster`]).
const ETCD_KEEPER: &str = "prefix: /zerodb/bench, lease_ttl: 1s";

/// How the keepers ran, for the printed settings.
const ETCD_MODE: &str = "keepers: 3 on etcd (store: etcd, lease_ttl: 1s); etcd: 3 members, \
tmpfs, loopback, heartbeat 100 ms, election timeout 500 ms\n";
const SINGLE_MODE: &str = "keepers: 1 (store: file)\n";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Kill,
    KillWithAgent,
    Pause,
    Cut,
    Switchover,
    /// SIGKILL the leading keeper (etcd mode).
    KillKeeper,
    /// SIGKILL the leading keeper and the active source at once.
    KillKeeperAndSource,
}

impl Fault {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "kill" => Fault::Kill,
            "kill-agent" => Fault::KillWithAgent,
            "pause" => Fault::Pause,
            "cut" => Fault::Cut,
            "switchover" => Fault::Switchover,
            "kill-keeper" => Fault::KillKeeper,
            "kill-keeper+source" => Fault::KillKeeperAndSource,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillWithAgent => "kill-agent",
            Fault::Pause => "pause",
            Fault::Cut => "cut",
            Fault::Switchover => "switchover",
            Fault::KillKeeper => "kill-keeper",
            Fault::KillKeeperAndSource => "kill-keeper+source",
        }
    }

    /// Whether it kills the leading keeper (and so needs a group of
    /// keepers on etcd).
    fn kills_keeper(self) -> bool {
        matches!(self, Fault::KillKeeper | Fault::KillKeeperAndSource)
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Cluster {
    servers: Vec<MariaDb>,
    relays: Vec<Relay>,
    agents: Vec<Agent>,
    /// One keeper, or three on `etcd`.
    keepers: Vec<Keeper>,
    /// The etcd cluster under the keepers, in etcd mode.
    etcd: Option<EtcdCluster>,
    proxies: Vec<Proxy>,
    /// Trials run so far.
    trials: usize,
}

impl Cluster {
    /// `etcd`: three keepers on a 3-member etcd cluster instead of one.
    fn start(bins: &Bins, tuned: bool, etcd: bool) -> Self {
        let opts = [REPLICATION_OPTIONS, SEMI_SYNC].concat();
        let servers: Vec<MariaDb> = [("mysql_1", 1), ("mysql_11", 11), ("mysql_12", 12)]
            .iter()
            .map(|(n, id)| MariaDb::start_with(n, *id, &opts))
            .collect();
        // Everyone but a server's own agent reaches it through a relay, so
        // that a cut isolates it from proxies, keeper and replicas alike
        // (and the replicas replicate from the address the keeper knows).
        let relays: Vec<Relay> = servers.iter().map(|s| Relay::start(&s.addr())).collect();
        servers[1].replicate_through(&servers[0], &relays[0]);
        servers[2].replicate_through(&servers[0], &relays[0]);
        servers[0].sql("CREATE TABLE app.acks (id BIGINT PRIMARY KEY, writer INT)");
        servers[1].catch_up(&servers[0]);
        servers[2].catch_up(&servers[0]);
        let dhs = vec![dh(
            "dh1",
            "app",
            servers
                .iter()
                .zip(&relays)
                .map(|(s, r)| Ds::via(s, r))
                .collect(),
        )];
        let ports: Vec<u16> = servers.iter().map(|_| agent_port()).collect();
        let agent_list: Vec<(&str, u16)> = servers
            .iter()
            .zip(&ports)
            .map(|(s, p)| (s.name.as_str(), *p))
            .collect();
        let etcd = etcd.then(|| EtcdCluster::start("failover-bench", 3));
        let keepers: Vec<Keeper> = match &etcd {
            None => vec![start_keeper(bins, &dhs, &agent_list, "")],
            Some(e) => {
                let extra = format!(
                    "store: etcd\netcd: {{endpoints: \"{}\", {ETCD_KEEPER}}}\n",
                    e.endpoints_csv()
                );
                (0..3)
                    .map(|_| start_keeper(bins, &dhs, &agent_list, &extra))
                    .collect()
            }
        };
        // Agents get one address or the YAML list of the group. The proxy
        // config quotes its `keeper` value, so proxies get the comma list
        // (a quoted "[a, b]" would be one string split at the commas,
        // brackets and all).
        let addrs: Vec<String> = keepers
            .iter()
            .map(|k| format!("127.0.0.1:{}", k.port))
            .collect();
        let keeper_list = if etcd.is_some() {
            format!("[{}]", addrs.join(", "))
        } else {
            addrs[0].clone()
        };
        let keeper_csv = addrs.join(",");
        let agents = servers
            .iter()
            .zip(&ports)
            .map(|(s, p)| start_agent_for(bins, s, *p, &keeper_list, "", ""))
            .collect();
        let timings = if tuned { TUNED } else { "" };
        let proxies = (1..=3)
            .map(|i| {
                let y = proxy_yaml_with(
                    &format!("p{i}"),
                    &keeper_csv,
                    &dhs,
                    timings,
                    "need_target_load_check.safe_load: 100\n",
                );
                Proxy::start(&bins.proxy, &y)
            })
            .collect();
        let c = Self {
            servers,
            relays,
            agents,
            keepers,
            etcd,
            proxies,
            trials: 0,
        };
        wait_for("3 proxies registered", Duration::from_secs(20), || {
            c.leading().is_some_and(|l| c.registered(l))
        });
        c
    }

    /// The keeper that leads now: the only one, or in etcd mode the one
    /// whose `/leader` answers 200 (if exactly one does).
    fn leading(&self) -> Option<usize> {
        if self.etcd.is_none() {
            return Some(0);
        }
        let serving: Vec<usize> = (0..self.keepers.len())
            .filter(|&i| self.keepers[i].http_get("/leader").map(|(c, _)| c) == Some(200))
            .collect();
        match serving[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The leading keeper, waiting up to 20 s for one (an election).
    fn leader(&self) -> &Keeper {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.leading() {
                return &self.keepers[l];
            }
            assert!(std::time::Instant::now() < end, "no keeper leads");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether keeper `k` has all three proxies connected.
    fn registered(&self, k: usize) -> bool {
        status_of(&self.keepers[k])["proxies"]
            .as_array()
            .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() == 3)
    }

    /// The active datasource in keeper `k`'s topology, if it answers.
    fn active_on(&self, k: usize) -> Option<usize> {
        let status = status_of(&self.keepers[k]);
        let name = status["topology"]["datahosts"][0]["active"].as_str()?;
        Some(
            self.servers
                .iter()
                .position(|s| s.name == name)
                .expect("active is one of ours"),
        )
    }

    /// The active datasource in the leader's topology.
    fn active(&self) -> usize {
        let name = self.leader().json("/status")["topology"]["datahosts"][0]["active"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.servers
            .iter()
            .position(|s| s.name == name)
            .expect("active is one of ours")
    }

    fn all_proxies_on(&self, name: &str) -> bool {
        self.proxies.iter().all(|p| active_of(p, "dh1") == name)
    }

    fn retried(&self) -> f64 {
        self.proxies
            .iter()
            .map(|p| metric(p, "zerodb_statements_retried_total"))
            .sum()
    }
}

/// A keeper's `/status`, or `Null` when it does not answer 200 (killed,
/// or between two polls of an election).
fn status_of(k: &Keeper) -> Value {
    k.http_get("/status")
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// Sum of a Prometheus counter's samples on a proxy's /metrics.
fn metric(p: &Proxy, name: &str) -> f64 {
    let Some((_, text)) = p.http_get("/metrics") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Load {
    children: Vec<(Child, PathBuf)>,
}

impl Load {
    /// `base`: the first session id (ids of rows written are unique
    /// across trials because session ids are).
    fn start(c: &Cluster, seconds: f64, dir: &Path, base: usize) -> Self {
        let script = repo_tests_dir().join("clients").join("failover_load.py");
        let mut children = Vec::new();
        let mut sid = base;
        for p in &c.proxies {
            for mode in ["write", "write", "read"] {
                let out = dir.join(format!("session-{sid}.json"));
                let child = Command::new("python3")
                    .arg(&script)
                    .args([
                        "127.0.0.1",
                        &p.port.to_string(),
                        APP_USER,
                        APP_PASSWORD,
                        &seconds.to_string(),
                        &sid.to_string(),
                        mode,
                    ])
                    .arg(&out)
                    .spawn()
                    .expect("python3");
                children.push((child, out));
                sid += 1;
            }
        }
        Self { children }
    }

    fn finish(self) -> Vec<Value> {
        self.children
            .into_iter()
            .map(|(mut c, out)| {
                let _ = c.wait();
                std::fs::read(&out)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}

fn ids(db: &MariaDb) -> HashSet<u64> {
    db.try_sql("SELECT id FROM app.acks")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// One trial: returns its figures as JSON.
fn trial(c: &mut Cluster, fault: Fault, n: usize, out_dir: &Path) -> Value {
    let old = c.active();
    let old_name = c.servers[old].name.clone();
    let dir = out_dir.join(format!("{}-{n}", fault.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("trial dir");
    let retried_before = c.retried();
    let (pre, post) = (3.0, 9.0);
    c.trials += 1;
    let load = Load::start(c, pre + post, &dir, c.trials * 100);
    std::thread::sleep(Duration::from_secs_f64(pre));

    // The keeper to kill: the leader (found before the clock starts).
    let killed_keeper = fault
        .kills_keeper()
        .then(|| c.leading().expect("a leading keeper"));
    let t0 = now();
    match fault {
        Fault::Kill => c.servers[old].kill(),
        Fault::KillWithAgent => {
            c.servers[old].kill();
            c.agents[old].kill();
        }
        Fault::Pause => c.servers[old].signal(SIGSTOP),
        Fault::Cut => c.relays[old].cut(),
        Fault::Switchover => {
            let (code, body) = c.leader().act("/switchover", r#"{"datahost":"dh1"}"#);
            assert_eq!(code, 200, "switchover: {body}");
        }
        Fault::KillKeeper => c.keepers[killed_keeper.unwrap_or_default()].kill(),
        Fault::KillKeeperAndSource => {
            c.keepers[killed_keeper.unwrap_or_default()].kill();
            c.servers[old].kill();
        }
    }
    // Polled every 20 ms until the trial's outcome: every proxy on a new
    // active datasource (the leader's topology) or, for `kill-keeper`,
    // where nothing is to switch, every proxy registered with the new
    // leader. For the keeper faults also: when another keeper leads, and
    // when every proxy is registered with it.
    let mut switched_at = None;
    let mut leader_at = None;
    let mut reregistered_at = None;
    let deadline = now() + 30.0;
    while now() < deadline {
        let leading = c.leading().filter(|l| Some(*l) != killed_keeper);
        if let Some(l) = leading.filter(|_| killed_keeper.is_some()) {
            let t = now();
            leader_at.get_or_insert(t);
            if reregistered_at.is_none() && c.registered(l) {
                reregistered_at = Some(t);
            }
        }
        if switched_at.is_none() {
            switched_at = match fault {
                Fault::KillKeeper => reregistered_at,
                _ => leading
                    .and_then(|l| c.active_on(l))
                    .filter(|a| *a != old && c.all_proxies_on(&c.servers[*a].name))
                    .map(|_| now()),
            };
        }
        if switched_at.is_some() && (killed_keeper.is_none() || reregistered_at.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The failed processes come back.
    std::thread::sleep(Duration::from_secs(1));
    match fault {
        Fault::Kill => c.servers[old].restart(),
        Fault::KillWithAgent => {
            c.servers[old].restart();
            c.agents[old].restart();
        }
        Fault::Pause => c.servers[old].signal(SIGCONT),
        Fault::Cut => c.relays[old].restore(),
        Fault::Switchover | Fault::KillKeeper => {}
        Fault::KillKeeperAndSource => c.servers[old].restart(),
    }
    if let Some(k) = killed_keeper {
        c.keepers[k].restart();
        c.keepers[k].wait_healthy();
    }
    let sessions = load.finish();
    let new = c.active();
    let new_name = c.servers[new].name.clone();

    // Acknowledged writes on the new source; writes only the old one has.
    let on_new = ids(&c.servers[new]);
    std::thread::sleep(Duration::from_secs(1));
    let on_old = ids(&c.servers[old]);
    let mut acked = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // When each failed statement was sent: classified below against the
    // fault and its detection.
    let mut error_starts: Vec<f64> = Vec::new();
    let mut reconnects = 0;
    let mut unavailable: Vec<f64> = Vec::new();
    let mut events = Vec::new();
    let mut sent_at: std::collections::HashMap<u64, f64> = Default::default();
    for s in &sessions {
        for e in s["events"].as_array().into_iter().flatten() {
            if let (Some(id), Some(t)) = (e[3].as_u64(), e[0].as_f64()) {
                sent_at.insert(id, t);
            }
        }
        reconnects += s["reconnects"].as_u64().unwrap_or(0);
        if let Some(a) = s["acked"].as_array() {
            acked.extend(a.iter().filter_map(|x| x.as_u64()));
        }
        let evs: Vec<(f64, f64, i64)> = s["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| Some((e[0].as_f64()?, e[1].as_f64()?, e[2].as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        for e in evs.iter().filter(|e| e.2 != 0) {
            *errors.entry(e.2.to_string()).or_default() += 1;
            error_starts.push(e.0);
        }
        if s["mode"] == "write" {
            // The longest wait between two acknowledged writes, from the
            // last one before the fault on: what the application saw.
            let mut acks: Vec<f64> = evs.iter().filter(|e| e.2 == 0).map(|e| e.1).collect();
            acks.sort_by(f64::total_cmp);
            let first = acks.iter().rposition(|t| *t < t0).unwrap_or(0);
            let gap = acks[first..]
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::NAN, f64::max);
            unavailable.push(gap);
            events.extend(evs.iter().map(|e| (e.1, e.2)));
        }
    }
    let missing = acked.iter().filter(|id| !on_new.contains(id)).count();
    // Writes only the old server has: unacknowledged statements in flight
    // at the fault may legitimately be there; one sent after the switch
    // would be split brain.
    let only_old: Vec<u64> = on_old.difference(&on_new).copied().collect();
    let split = only_old
        .iter()
        .filter(|id| {
            sent_at
                .get(id)
                .is_some_and(|t| *t > switched_at.unwrap_or(f64::MAX))
        })
        .count();
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    assert!(
        only_old.iter().all(|id| !acked_set.contains(id)) || missing > 0,
        "bookkeeping: an acknowledged id only on the old server is counted as lost"
    );

    // Phases, from the record of the decision that switched, as the
    // keeper that made it (the leader now) keeps it: the last approval
    // made since the fault.
    let decisions = c.leader().decisions();
    let d = decisions
        .iter()
        .rev()
        .filter(|d| d["at_unix_ms"].as_f64().is_some_and(|t| t / 1000.0 >= t0))
        .find(|d| d["decision"]["decision"] == "approve")
        .cloned()
        .unwrap_or(Value::Null);
    let ms = |k: &str| d["phases_ms"][k].as_f64().unwrap_or(0.0) / 1000.0;
    let requested = d["requested_at_unix_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let decided = d["at_unix_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let switched = switched_at.unwrap_or(f64::NAN);
    // Statements sent before the fault; sent after it but before any proxy
    // could tell (to a server already dead or frozen: in flight as far as
    // the proxy knows, and a write among them may or may not have run);
    // and sent after the failure was detected, which should see none.
    let detected = if matches!(fault, Fault::Switchover | Fault::KillKeeper) {
        t0
    } else {
        requested
    };
    let count = |f: &dyn Fn(f64) -> bool| error_starts.iter().filter(|t| f(**t)).count();
    let (before_fault, before_detection, after_detection) = (
        count(&|t| t < t0),
        count(&|t| t >= t0 && t < detected),
        count(&|t| t >= detected.max(t0)),
    );
    let mut r = json!({
        "fault": fault.name(),
        "trial": n,
        "from": old_name,
        "to": new_name,
        "switched": switched_at.is_some(),
        "detection_s": match fault {
            Fault::Switchover => 0.0,
            Fault::KillKeeper => f64::NAN,
            _ => requested - t0,
        },
        "decision_s": if d.is_null() { f64::NAN } else { ms("votes_and_reports") + ms("reports") },
        "promotion_s": if d.is_null() { f64::NAN } else { ms("promote") + ms("fence_and_catch_up") },
        "push_s": if d.is_null() { f64::NAN } else { (switched - decided).max(0.0) + ms("publish") },
        "fault_to_all_switched_s": switched - t0,
        "keeper_killed": killed_keeper,
        "new_leader_s": leader_at.map_or(f64::NAN, |t| t - t0),
        "reregistered_s": reregistered_at.map_or(f64::NAN, |t| t - t0),
        "write_unavailable_max_s": unavailable.iter().copied().fold(f64::NAN, f64::max),
        "write_unavailable_median_s": median(unavailable.clone()),
        "errors": errors,
        "errors_sent_before_fault": before_fault,
        "errors_sent_before_detection": before_detection,
        "errors_sent_after_detection": after_detection,
        "retried": c.retried() - retried_before,
        "reconnects": reconnects,
        "acked": acked.len(),
        "acked_missing_on_new": missing,
        "in_flight_kept_by_old": only_old.len() - split,
        "split_brain_writes": split,
    });
    plot(
        &dir.with_extension("svg"),
        &format!("{} #{n}: {old_name} → {new_name}", fault.name()),
        t0,
        &events,
        &[
            ("fault", t0),
            (
                "switch requested",
                if d.is_null() { f64::NAN } else { requested },
            ),
            ("decided", if d.is_null() { f64::NAN } else { decided }),
            (
                "all proxies switched",
                if fault == Fault::KillKeeper {
                    f64::NAN
                } else {
                    switched
                },
            ),
            ("new leader", leader_at.unwrap_or(f64::NAN)),
            (
                "all proxies re-registered",
                reregistered_at.unwrap_or(f64::NAN),
            ),
        ],
    );
    // Before the next trial: every server back and replicating. A server
    // that kept unacknowledged writes stays fenced (errant transactions):
    // rebuild it from the new source, as an operator would.
    let replicating = |s: &MariaDb| {
        s.try_sql("SHOW SLAVE STATUS")
            .is_ok_and(|st| st.contains("\tYes\tYes\t"))
    };
    let rejoined = wait_until(Duration::from_secs(5), || {
        c.servers
            .iter()
            .enumerate()
            .all(|(i, s)| i == new || replicating(s))
    });
    let mut rebuilt = Vec::new();
    if !rejoined {
        for i in 0..c.servers.len() {
            if i != new && !replicating(&c.servers[i]) {
                eprintln!(
                    "rebuilding {} from {}",
                    c.servers[i].name, c.servers[new].name
                );
                rebuild(&c.servers[i], &c.servers[new]);
                rebuilt.push(c.servers[i].name.clone());
            }
        }
        let ok = wait_until(Duration::from_secs(30), || {
            c.servers
                .iter()
                .enumerate()
                .all(|(i, s)| i == new || replicating(s))
        });
        assert!(ok, "servers did not rejoin after trial {n}");
    }
    r["rebuilt"] = json!(rebuilt);
    // And caught up: a standby still applying a backlog would make the
    // next trial measure that backlog.
    for (i, s) in c.servers.iter().enumerate() {
        if i != new {
            s.catch_up(&c.servers[new]);
        }
    }
    // A group of keepers: one leads, every proxy registered with it.
    if c.etcd.is_some() {
        wait_for(
            "3 proxies registered with the leader",
            Duration::from_secs(30),
            || c.leading().is_some_and(|l| c.registered(l)),
        );
    }
    r
}

/// Replaces `stale`'s data with a copy of `source`'s (a dump with its GTID
/// position). Nothing of it is binlogged, and the errant GTIDs stay in its
/// binlog (so its agent keeps away) until the last step: set
/// `gtid_slave_pos`, then empty the binlog. Its agent then points it at the
/// active source.
fn rebuild(stale: &MariaDb, source: &MariaDb) {
    let dump = Command::new("mariadb-dump")
        .args([
            "--no-defaults",
            "-uroot",
            "--single-transaction",
            "--gtid",
            "--master-data=2",
        ])
        .arg(format!("--socket={}", source.socket.display()))
        .args(["--databases", "app"])
        .output()
        .expect("mariadb-dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    // `--master-data=2` writes the position as a comment: set it ourselves.
    let pos = text
        .lines()
        .find_map(|l| l.split("gtid_slave_pos='").nth(1)?.split('\'').next())
        .unwrap_or_default()
        .to_string();
    let script = format!(
        "SET sql_log_bin = 0;\nSTOP SLAVE;\nRESET SLAVE ALL;\nSET GLOBAL read_only = ON;\n\
         DROP DATABASE IF EXISTS app;\n{text}\n\
         SET GLOBAL gtid_slave_pos = '{pos}';\nRESET MASTER;\n"
    );
    if let Err(e) = stale.sql_script(&script) {
        panic!("rebuilding {}: {e}", stale.name);
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Acknowledged writes and errors per 100 ms around the fault, with the
/// phases marked.
fn plot(path: &Path, title: &str, t0: f64, events: &[(f64, i64)], marks: &[(&str, f64)]) {
    let (from, to) = (-3.0f64, 9.0f64);
    let buckets = ((to - from) * 10.0) as usize;
    let mut ok = vec![0u32; buckets];
    let mut err = vec![0u32; buckets];
    for (t, code) in events {
        let x = t - t0;
        if x < from || x >= to {
            continue;
        }
        let i = ((x - from) * 10.0) as usize;
        if *code == 0 {
            ok[i] += 1;
        } else {
            err[i] += 1;
        }
    }
    let top = ok.iter().chain(&err).copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(from..to, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds from the fault")
            .y_desc("statements per 100 ms")
            .draw()?;
        let series = |v: &[u32]| {
            v.iter()
                .enumerate()
                .map(|(i, n)| (from + i as f64 / 10.0, *n as f64))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(LineSeries::new(series(&ok), BLUE.stroke_width(2)))?
            .label("writes acknowledged")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(&err), RED.stroke_width(2)))?
            .label("errors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        let colors = [
            BLACK,
            MAGENTA,
            CYAN,
            GREEN,
            RGBColor(230, 140, 0),
            RGBColor(120, 60, 160),
        ];
        for ((label, t), color) in marks.iter().zip(colors) {
            let x = t - t0;
            if !x.is_finite() || x < from || x > to {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, top)],
                    color.stroke_width(1),
                ))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        eprintln!("plot {}: {e}", path.display());
    }
}

fn secs(v: &Value) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map(|x| format!("{x:.2}"))
        .unwrap_or_else(|| "—".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // cargo bench --list
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let trials: usize = arg("--trials").and_then(|t| t.parse().ok()).unwrap_or(3);
    let faults: Vec<Fault> = arg("--faults")
        .unwrap_or_else(|| "kill,kill-agent,pause,cut,switchover".into())
        .split(',')
        .map(|f| Fault::parse(f.trim()).unwrap_or_else(|| panic!("unknown fault `{f}`")))
        .collect();
    let tuned = !args.iter().any(|a| a == "--defaults");
    let etcd = args.iter().any(|a| a == "--etcd") || faults.iter().any(|f| f.kills_keeper());

    let bins = release_binaries(&["zerodb-proxy", "zerodb-keeper", "zerodb-agent"]);
    let bins = Bins {
        proxy: bins[0].clone(),
        keeper: bins[1].clone(),
        agent: bins[2].clone(),
    };
    let out_dir = workspace_root().join("target/failover");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let mut cluster = Cluster::start(&bins, tuned, etcd);
    let mut results = Vec::new();
    for fault in &faults {
        for n in 1..=trials {
            let r = trial(&mut cluster, *fault, n, &out_dir);
            eprintln!("{r}");
            results.push(r);
        }
    }

    let mut table = String::from(
        "| fault | trial | detect s | decide s | promote s | push s | fault→all switched s | new leader / re-registered s | write unavailable s (worst) | errors | sent before fault / before detection / after | retried | reconnects | acked | lost | in flight kept by old | split brain | rebuilt |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &results {
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["fault"].as_str().unwrap_or("?"),
            r["trial"],
            secs(&r["detection_s"]),
            secs(&r["decision_s"]),
            secs(&r["promotion_s"]),
            secs(&r["push_s"]),
            secs(&r["fault_to_all_switched_s"]),
            secs(&r["new_leader_s"]),
            secs(&r["reregistered_s"]),
            secs(&r["write_unavailable_max_s"]),
            r["errors"],
            r["errors_sent_before_fault"],
            r["errors_sent_before_detection"],
            r["errors_sent_after_detection"],
            r["retried"],
            r["reconnects"],
            r["acked"],
            r["acked_missing_on_new"],
            r["in_flight_kept_by_old"],
            r["split_brain_writes"],
            r["rebuilt"].as_array().map_or(0, Vec::len),
        );
    }
    table += "\n| fault | write unavailable s: min / median / max | fault→all switched s: min / median / max | new leader s: min / median / max | errors: sent before fault / before detection / after (sum) | lost (sum) | split brain (sum) | old source rebuilt |\n|---|---|---|---|---|---|---|---|\n";
    for fault in &faults {
        let rs: Vec<&Value> = results
            .iter()
            .filter(|r| r["fault"] == fault.name())
            .collect();
        let stat = |k: &str| {
            let v: Vec<f64> = rs.iter().filter_map(|r| r[k].as_f64()).collect();
            if v.is_empty() {
                return "—".to_string();
            }
            let min = v.iter().copied().fold(f64::NAN, f64::min);
            let max = v.iter().copied().fold(f64::NAN, f64::max);
            format!("{min:.2} / {:.2} / {max:.2}", median(v.clone()))
        };
        let sum = |k: &str| rs.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
        let rebuilt = rs
            .iter()
            .filter(|r| r["rebuilt"].as_array().is_some_and(|a| !a.is_empty()))
            .count();
        table += &format!(
            "| {} | {} | {} | {} | {} / {} / {} | {} | {} | {rebuilt} of {} |\n",
            fault.name(),
            stat("write_unavailable_max_s"),
            stat("fault_to_all_switched_s"),
            stat("new_leader_s"),
            sum("errors_sent_before_fault"),
            sum("errors_sent_before_detection"),
            sum("errors_sent_after_detection"),
            sum("acked_missing_on_new"),
            sum("split_brain_writes"),
            rs.len(),
        );
    }
    let settings = format!(
        "{}{}",
        if etcd { ETCD_MODE } else { SINGLE_MODE },
        if tuned { TUNED } else { "(defaults)\n" }
    );
    println!("\nsettings:\n{settings}\n{table}");
    let doc = json!({"settings": settings, "trials": results});
    let stem = if tuned { "results" } else { "results-defaults" };
    let json_path = out_dir.join(format!("{stem}.json"));
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&doc).unwrap_or_default(),
    )
    .expect("write results");
    std::fs::write(
        out_dir.join(format!("{stem}.md")),
        format!("settings:\n```\n{settings}```\n\n{table}"),
    )
    .expect("write table");
    println!(
        "written: {} and {}/*.svg",
        json_path.display(),
        out_dir.display()
    );
}
