//! Keepers as a group on etcd (SPEC §8), end to end: a real 3-member etcd
//! cluster (tmpfs data, loopback ports), three `zerodb-keeper` processes
//! on it, an agent beside each MariaDB server (GTID replication,
//! semi-sync), and proxies that know every keeper. Leaders are killed,
//! paused mid-switch and cut off from etcd; etcd loses members, then all
//! its data. A writer records every OK; afterwards every server is read.

mod common;

use common::*;
use std::time::Duration;
use zerodb_testkit::etcd::EtcdCluster;

/// Proxy timings for a group of keepers: a switch request may wait out an
/// election (lease 1 s, plus the poll) before it counts as unanswered.
const HA_PROXY: &str = "health: {interval: 150ms, timeout: 500ms, fall: 3, rise: 2}\n\
    cluster: {heartbeat_interval: 200ms, switch_retry_interval: 300ms, request_timeout: 3s, \
    reconnect_interval: 300ms}\nbuffer: {window: 6s}\n";

/// Three keepers on `etcd` under `/zerodb/<tag>`, an agent beside each
/// server, proxy p1; everyone knows every keeper.
struct Ha {
    bins: Bins,
    etcd: EtcdCluster,
    m1: MariaDb,
    m11: MariaDb,
    keepers: Vec<Keeper>,
    agents: Vec<Agent>,
    p1: Proxy,
}

/// The keepers' control addresses as a comma list (what the proxy's
/// YAML, which quotes it, and `ZERODB_KEEPER` take).
fn keeper_list(keepers: &[Keeper]) -> String {
    let addrs: Vec<String> = keepers
        .iter()
        .map(|k| format!("127.0.0.1:{}", k.port))
        .collect();
    addrs.join(",")
}

fn etcd_keys(etcd: &EtcdCluster, tag: &str, extra: &str) -> String {
    format!(
        "store: etcd\netcd: {{endpoints: \"{}\", prefix: /zerodb/{tag}, lease_ttl: 1s{extra}}}\n",
        etcd.endpoints_csv()
    )
}

impl Ha {
    /// Waits until p1 serves dh1 from `datasource`; on timeout, panics with
    /// every keeper's log and p1's status.
    fn wait_active(&self, datasource: &str) {
        let started = std::time::Instant::now();
        while active_of(&self.p1, "dh1") != datasource {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "p1 not on {datasource} after 30 s: {}\n{}\n{}",
                self.p1.status(),
                self.p1.log(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start(tag: &str) -> Self {
        Self::start_with(tag, "", "")
    }

    /// `etcd_extra` goes inside the keepers' `etcd:` map (`, key: value`),
    /// `keeper_extra` at their top level.
    fn start_with(tag: &str, etcd_extra: &str, keeper_extra: &str) -> Self {
        let etcd = EtcdCluster::start(tag, 3);
        Self::on(etcd, tag, etcd_extra, keeper_extra)
    }

    fn on(etcd: EtcdCluster, tag: &str, etcd_extra: &str, keeper_extra: &str) -> Self {
        let bins = bins();
        let (m1, m11) = pair(SEMI_SYNC_SOURCE, SEMI_SYNC_REPLICA);
        m1.sql("ALTER TABLE app.acks DROP PRIMARY KEY");
        m11.catch_up(&m1);
        let dhs = one_dh(&m1, &m11);
        let (a1p, a11p) = (agent_port(), agent_port());
        let agent_ports = [(m1.name.as_str(), a1p), (m11.name.as_str(), a11p)];
        let extra = etcd_keys(&etcd, tag, etcd_extra) + keeper_extra;
        let keepers: Vec<Keeper> = (0..3)
            .map(|_| start_keeper(&bins, &dhs, &agent_ports, &extra))
            .collect();
        let list = keeper_list(&keepers);
        // The agents' as a YAML list.
        let yaml_list = format!("[{list}]");
        let agents = vec![
            start_agent_for(&bins, &m1, a1p, &yaml_list, "", ""),
            start_agent_for(&bins, &m11, a11p, &yaml_list, "", ""),
        ];
        let p1 = Proxy::start(
            &bins.proxy,
            &proxy_yaml_with("p1", &list, &dhs, HA_PROXY, ""),
        );
        let seen = p1.status()["cluster"]["keepers"].clone();
        let expected: Vec<String> = keepers
            .iter()
            .map(|k| format!("127.0.0.1:{}", k.port))
            .collect();
        assert_eq!(
            seen,
            serde_json::json!(expected),
            "the proxy knows every keeper"
        );
        let ha = Self {
            bins,
            etcd,
            m1,
            m11,
            keepers,
            agents,
            p1,
        };
        let l = ha.wait_leader("a first leader");
        wait_registered(&ha.keepers[l], 1);
        ha
    }

    /// The keeper `/leader` answers 200 on, if exactly one does.
    fn leader(&self) -> Option<usize> {
        let leading: Vec<usize> = (0..self.keepers.len())
            .filter(|&i| self.keepers[i].http_get("/leader").map(|(c, _)| c) == Some(200))
            .collect();
        match leading[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    fn wait_leader(&self, what: &str) -> usize {
        let mut found = None;
        wait_for(what, Duration::from_secs(20), || {
            found = self.leader();
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// The term the leader at `i` leads under.
    fn term(&self, i: usize) -> u64 {
        self.keepers[i].json("/status")["term"]
            .as_u64()
            .unwrap_or_default()
    }

    /// Every keeper's log, for a failure's message.
    fn logs(&self) -> String {
        self.keepers
            .iter()
            .enumerate()
            .map(|(i, k)| format!("--- keeper {i}\n{}", k.log()))
            .collect()
    }
}

/// Kills the leading keeper and the source at once, or the leader first
/// and the source once a new leader serves: the failover completes under
/// the new leader, every acknowledged write on the new source once.
fn leader_and_source_killed(together: bool) {
    let mut ha = Ha::start(if together { "together" } else { "first" });
    let old = ha.wait_leader("a leader");
    let old_term = ha.term(old);
    let writer = spawn_writer(ha.p1.port, 14, 1);
    std::thread::sleep(Duration::from_millis(1500));
    ha.keepers[old].kill();
    if !together {
        let new = ha.wait_leader("a new leader");
        wait_registered(&ha.keepers[new], 1);
    }
    ha.m1.kill();
    ha.wait_active("mysql_11");
    let new = ha.wait_leader("the new leader");
    assert_ne!(new, old);
    assert!(ha.term(new) > old_term, "{}", ha.logs());
    let report = writer.join().expect("writer");
    assert_each_ack_once(&ha.m11, &report.acked);
    assert_eq!(ha.m11.sql("SELECT @@read_only"), "0");
    // The old source comes back fenced, and nothing reaches it.
    ha.m1.restart();
    wait_for("mysql_1 read-only", Duration::from_secs(15), || {
        ha.m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
    assert_eq!(ha.p1.status()["cluster"]["mode"], "online", "{}", ha.logs());
}

#[test]
fn leader_killed_then_source_killed() {
    leader_and_source_killed(false);
}

#[test]
fn leader_and_source_killed_at_the_same_moment() {
    leader_and_source_killed(true);
}

/// The leader pauses (SIGSTOP, its fault point) right after reserving
/// the epoch of a failover. A new leader takes over, rolls that switch
/// back under a fresh epoch, and fails over on the proxy's next request.
/// Continued, the old leader finds its lease gone: it sends no order
/// (withheld), writes nothing to etcd, pushes no topology, and steps down.
/// The agents and the proxy end under the new leader's term.
#[test]
fn a_leader_paused_mid_switch_takes_no_effect_when_continued() {
    let mut ha = Ha::start("paused");
    let old = ha.wait_leader("a leader");
    // Re-armed, it leads again: the others are paused until it does.
    ha.keepers[old].kill();
    ha.keepers[old].restart_with(&[("KEEPER_FAULT_PAUSE_AFTER", "reserve")]);
    ha.keepers[old].wait_healthy();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &others {
        ha.keepers[i].signal(SIGSTOP);
    }
    wait_for("the armed keeper leads", Duration::from_secs(20), || {
        ha.keepers[old].http_get("/leader").map(|(c, _)| c) == Some(200)
    });
    for &i in &others {
        ha.keepers[i].signal(SIGCONT);
    }
    assert_eq!(ha.wait_leader("one leader"), old, "{}", ha.logs());
    wait_registered(&ha.keepers[old], 1);
    let old_term = ha.term(old);
    let writer = spawn_writer(ha.p1.port, 14, 1);
    std::thread::sleep(Duration::from_millis(1500));
    ha.m1.kill();
    wait_for("the leader paused", Duration::from_secs(20), || {
        ha.keepers[old].log().contains("fault point: pausing")
    });
    ha.wait_active("mysql_11");
    let new = ha.wait_leader("a new leader");
    assert_ne!(new, old);
    let new_term = ha.term(new);
    assert!(new_term > old_term);
    let new_log = ha.keepers[new].log();
    assert!(new_log.contains("rolling it back"), "{new_log}");
    let epoch_before = ha.p1.status()["epoch"].clone();

    ha.keepers[old].signal(SIGCONT);
    wait_for(
        "the old leader stepped down",
        Duration::from_secs(10),
        || ha.keepers[old].log().contains("no longer leading"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let old_log = ha.keepers[old].log();
    assert!(old_log.contains("fault point: continued"), "{old_log}");
    assert!(
        old_log.contains("order withheld"),
        "the continued switch sent its next order: {old_log}"
    );
    assert_eq!(
        ha.keepers[old].http_get("/leader").map(|(c, _)| c),
        Some(503)
    );
    for a in &ha.agents {
        let status = a.json("/status");
        assert!(
            status["term"].as_u64() >= Some(new_term),
            "agent {} under term {}: {status}",
            a.port,
            status["term"]
        );
    }
    assert_eq!(ha.p1.status()["epoch"], epoch_before);
    assert_eq!(active_of(&ha.p1, "dh1"), "mysql_11");
    let report = writer.join().expect("writer");
    assert_each_ack_once(&ha.m11, &report.acked);
}

/// One etcd member killed: a failover still works. Two killed: no
/// keeper leads, nothing is switched, the proxy keeps serving its source.
/// Back, a leader is elected again and the proxy re-registers.
#[test]
fn etcd_losing_one_member_then_its_majority() {
    let mut ha = Ha::start("quorum");
    ha.etcd.kill(0);
    ha.p1.sql("INSERT INTO acks VALUES (1, 0)");
    ha.etcd.kill(1);
    wait_for("no keeper leads", Duration::from_secs(15), || {
        (0..3).all(|i| ha.keepers[i].http_get("/leader").map(|(c, _)| c) == Some(503))
    });
    // The proxy holds still and serves: writes go on at the source.
    for id in 2..20 {
        ha.p1.sql(&format!("INSERT INTO acks VALUES ({id}, 0)"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ha.p1.status()["cluster"]["mode"], "online");
    assert_eq!(active_of(&ha.p1, "dh1"), "mysql_1");
    ha.etcd.restart(0);
    ha.etcd.restart(1);
    let l = ha.wait_leader("a leader once etcd is back");
    wait_registered(&ha.keepers[l], 1);
    // Failover works again, with one member gone.
    ha.etcd.kill(2);
    let writer = spawn_writer(ha.p1.port, 8, 1);
    std::thread::sleep(Duration::from_millis(1000));
    ha.m1.kill();
    ha.wait_active("mysql_11");
    let report = writer.join().expect("writer");
    assert_each_ack_once(&ha.m11, &report.acked);
    assert_eq!(
        ha.m11.sql("SELECT COUNT(*) FROM app.acks WHERE id < 20"),
        "19"
    );
}

/// etcd's data is lost (every member re-created empty) and the keepers
/// restarted: the new leader continues the epochs, term and topology the
/// proxy and agents report, and switches nothing until an operator
/// confirms the membership.
#[test]
fn etcd_data_lost_epochs_and_topology_continue() {
    let mut ha = Ha::start("wiped");
    let writer = spawn_writer(ha.p1.port, 6, 1);
    std::thread::sleep(Duration::from_millis(1000));
    ha.m1.kill();
    ha.wait_active("mysql_11");
    let report = writer.join().expect("writer");
    let l = ha.wait_leader("a leader");
    let (epoch, term) = (
        ha.keepers[l].json("/status")["epoch"].as_u64().unwrap_or(0),
        ha.term(l),
    );
    for k in &mut ha.keepers {
        k.kill();
    }
    ha.etcd.wipe();
    for k in &mut ha.keepers {
        k.restart();
        k.wait_healthy();
    }
    let l = ha.wait_leader("a leader on the empty etcd");
    wait_for(
        "the reported topology adopted",
        Duration::from_secs(20),
        || {
            let s = ha.keepers[l].json("/status");
            s["topology"]["datahosts"][0]["active"] == "mysql_11"
                && s["epoch"].as_u64() >= Some(epoch)
                && s["term"].as_u64() > Some(term)
        },
    );
    let status = ha.keepers[l].json("/status");
    assert_eq!(status["membership_confirmed"], false, "{status}");
    wait_registered(&ha.keepers[l], 1);
    assert_eq!(active_of(&ha.p1, "dh1"), "mysql_11");
    ha.p1.sql("INSERT INTO acks VALUES (1, 0)");
    assert_each_ack_once(&ha.m11, &report.acked);
}

/// etcd with auth on: the keepers log in from `password_file`. `/health`
/// is 200 on every keeper and says which leads; `/leader` is 200 on one.
/// The decision log in etcd keeps `decisions_kept` entries.
#[test]
fn etcd_auth_health_leader_and_a_bounded_decision_log() {
    let mut etcd = EtcdCluster::start("auth", 3);
    etcd.enable_auth("zerodb", "s3cret-pw");
    let pw = scratch("etcd-pw").join("password");
    std::fs::write(&pw, "s3cret-pw\n").expect("password file");
    let extra = format!(
        ", user: zerodb, password_file: {}, decisions_kept: 3",
        pw.display()
    );
    let ha = Ha::on(etcd, "auth", &extra, "");
    let l = ha.wait_leader("a leader");
    for (i, k) in ha.keepers.iter().enumerate() {
        let (code, body) = k.http_get("/health").expect("health");
        assert_eq!(code, 200);
        let role = if i == l { "leader" } else { "follower" };
        assert!(body.contains(role), "keeper {i}: {body}");
    }
    // Five refused switchovers: five decisions, three kept in etcd.
    for _ in 0..5 {
        let (code, _) =
            ha.keepers[l].act("/switchover", r#"{"datahost": "dh1", "target": "nobody"}"#);
        assert_eq!(code, 409);
    }
    // A follower's /status names the leader and its term.
    let f = (l + 1) % 3;
    let term = ha.term(l);
    wait_for(
        "the follower knows the term",
        Duration::from_secs(5),
        || {
            let s = ha.keepers[f].json("/status");
            s["leadership"]["role"] == "follower" && s["leadership"]["leader"]["term"] == term
        },
    );
    let lease = ha.keepers[l].json("/status")["leadership"]["lease_left_ms"].as_u64();
    assert!(lease.is_some_and(|ms| ms > 0 && ms <= 1000), "{lease:?}");
    // A follower answers operators with the leader's address.
    let (code, body) = ha.keepers[f].act("/switchover", r#"{"datahost": "dh1"}"#);
    assert_eq!(code, 421, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}", ha.keepers[l].port)),
        "{body}"
    );
    let prefix = "/zerodb/auth/decisions/";
    let count = || {
        let out = ha.etcd.etcdctl_as(
            "zerodb",
            "s3cret-pw",
            &["get", "--prefix", "--keys-only", prefix],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    assert_eq!(count(), 3);
    let denied = ha.etcd.etcdctl(&["get", "--prefix", prefix]);
    assert!(!denied.status.success(), "etcd without a login answered");
    let _ = &ha.bins;
}
