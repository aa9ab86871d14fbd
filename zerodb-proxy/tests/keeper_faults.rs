//! Sequences of faults around the keeper (SPEC §7), end to end: real
//! keeper, agents and proxies as processes over real MariaDB replication.
//! The keeper is killed at a named phase of a switch by its `fault-points`
//! feature (`KEEPER_FAULT_ABORT_AFTER`, built by scripts/test.sh), or
//! killed outright while a source dies; a source that answers its agent
//! but refuses the fence. A writer records every OK; afterwards every
//! server is read.

mod common;

use common::*;
use std::time::Duration;

/// Proxy timings short enough for a test: probes, requests, reconnects.
const FAST_PROXY: &str = "health: {interval: 150ms, timeout: 500ms, fall: 3, rise: 2}\n\
    cluster: {heartbeat_interval: 200ms, switch_retry_interval: 300ms, request_timeout: 1s, \
    reconnect_interval: 300ms}\nbuffer: {window: 3s}\n";

/// Proxy p1, a member of `keeper`'s cluster, with `timings`.
fn fast_proxy(bins: &Bins, keeper: &Keeper, dhs: &[Dh], timings: &str) -> Proxy {
    let keeper_addr = format!("127.0.0.1:{}", keeper.port);
    Proxy::start(
        &bins.proxy,
        &proxy_yaml_with("p1", &keeper_addr, dhs, timings, ""),
    )
}

/// A source with semi-sync and its replica, `app.acks` without a unique
/// key; a keeper, an agent beside each server, one proxy registered.
fn cluster_without_unique_key() -> (Bins, MariaDb, MariaDb, Keeper, Agent, Agent, Proxy) {
    let bins = bins();
    let (m1, m11) = pair(SEMI_SYNC_SOURCE, SEMI_SYNC_REPLICA);
    m1.sql("ALTER TABLE app.acks DROP PRIMARY KEY");
    m11.catch_up(&m1);
    let dhs = one_dh(&m1, &m11);
    let (keeper, a1, a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = fast_proxy(&bins, &keeper, &dhs, FAST_PROXY);
    wait_registered(&keeper, 1);
    (bins, m1, m11, keeper, a1, a11, p1)
}

/// Restarts `keeper` armed to abort right after `phase` of its next
/// switch, and waits for p1 to register again.
fn abort_after(keeper: &mut Keeper, phase: &str) {
    keeper.kill();
    keeper.restart_with(&[("KEEPER_FAULT_ABORT_AFTER", phase)]);
    keeper.wait_healthy();
    wait_registered(keeper, 1);
}

/// The source is SIGKILLed under writes and the keeper aborts right after
/// `phase` of the failover (a crash at a named point). Restarted, it rolls
/// the switch back if it was not persisted (`rolled_back`), and the
/// proxy's next request switches: the proxy ends on mysql_11, every
/// acknowledged write there once, the old source back read-only.
fn keeper_killed_after(phase: &str, rolled_back: bool) {
    let (_bins, mut m1, m11, mut keeper, _a1, _a11, p1) = cluster_without_unique_key();
    abort_after(&mut keeper, phase);

    let writer = spawn_writer(p1.port, 14, 1);
    std::thread::sleep(Duration::from_millis(1500));
    m1.kill();
    wait_for(
        &format!("the keeper aborted after {phase}"),
        Duration::from_secs(20),
        || !keeper.is_running(),
    );
    assert!(
        keeper.log().contains("fault point: aborting"),
        "{}",
        keeper.log()
    );
    // Down for a while, as a crashed keeper is: the agents' heartbeats
    // fail meanwhile (SPEC §5, an agent without its keeper).
    std::thread::sleep(Duration::from_secs(1));
    keeper.restart();
    keeper.wait_healthy();
    wait_for("p1 on mysql_11", Duration::from_secs(30), || {
        active_of(&p1, "dh1") == "mysql_11"
    });
    let log = keeper.log();
    assert_eq!(
        log.contains("rolling it back"),
        rolled_back,
        "{phase}: {log}"
    );
    assert_eq!(m11.sql("SELECT @@read_only"), "0");
    let acked = writer.join().expect("writer").acked;
    assert_each_ack_once(&m11, &acked);

    // The old source returns: fenced, never written to.
    m1.restart();
    wait_for("mysql_1 read-only", Duration::from_secs(15), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    assert_eq!(m11.sql("SELECT COUNT(*) FROM app.acks WHERE id = 1"), "1");
}

/// Killed with only the epoch and intent persisted: nothing was ordered;
/// the next keeper rolls back, and the proxy's next request switches.
#[test]
fn the_keeper_killed_after_reserving_the_epoch() {
    keeper_killed_after("reserve", true);
}

/// Killed after trying to fence the dead source: rolled back, then
/// switched on the proxy's next request.
#[test]
fn the_keeper_killed_after_the_fence() {
    keeper_killed_after("fence", true);
}

/// Killed after the promotion, nothing persisted: the target's agent
/// fences it when the keeper goes away, and it replicates from nobody. The
/// next keeper rolls back and points it at the (dead) source again, so it
/// is a true standby for the proxy's next request. Before, it stayed
/// orphaned: `NoStandby` until the old source returned.
#[test]
fn the_keeper_killed_after_the_promotion() {
    keeper_killed_after("promote", true);
}

/// Killed after persisting the topology, before publishing it: the next
/// keeper hands it out at registration.
#[test]
fn the_keeper_killed_after_persisting_the_topology() {
    keeper_killed_after("persist", false);
}

/// Killed right after publishing: the proxy writes to the new source,
/// whose agent has not heard the new topology yet and finds the keeper
/// gone. It must not fence the server a keeper promoted under a newer
/// epoch than the topology it holds; before, it did, and with nothing to
/// lift that fence every write failed read-only for good.
#[test]
fn the_keeper_killed_after_publishing_the_topology() {
    keeper_killed_after("publish", false);
}

/// A planned switchover, the keeper aborted right after `phase`: the
/// proxy holds statements, and from the fence on the source is read-only.
/// The next keeper rolls back: the source's fence lifted (`unfence`), a
/// promoted target fenced and pointed back at the source, and its
/// topology, newer than the proxy's, ends the hold. Writes go on at the
/// source, every acknowledged one there once; the standby is a read-only
/// replica of the source again.
fn keeper_killed_during_a_switchover(phase: &str, source_fenced: bool) {
    let (_bins, m1, m11, mut keeper, _a1, _a11, p1) = cluster_without_unique_key();
    abort_after(&mut keeper, phase);
    let writer = spawn_writer(p1.port, 10, 1);
    std::thread::sleep(Duration::from_millis(1500));
    // The keeper dies before it answers.
    let _ = http(
        keeper.admin_port,
        "POST",
        "/switchover",
        Some(r#"{"datahost": "dh1"}"#),
        Some(TOKEN),
    );
    wait_for("the keeper aborted", Duration::from_secs(20), || {
        !keeper.is_running()
    });
    let read_only = if source_fenced { "1" } else { "0" };
    assert_eq!(m1.sql("SELECT @@read_only"), read_only, "{phase}");
    std::thread::sleep(Duration::from_secs(1));
    keeper.restart();
    keeper.wait_healthy();
    wait_for("mysql_1 writable", Duration::from_secs(15), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("0")
    });
    assert!(keeper.log().contains("rolling it back"), "{phase}");
    let acked = writer.join().expect("writer").acked;
    assert_each_ack_once(&m1, &acked);
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");
    wait_for("mysql_11 a replica again", Duration::from_secs(15), || {
        m11.try_sql("SHOW SLAVE STATUS")
            .is_ok_and(|s| s.contains(&format!("\t{}\t", m1.port)))
    });
    assert_eq!(m11.sql("SELECT @@read_only"), "1");
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m11.catch_up(&m1);
    assert_eq!(m11.sql("SELECT COUNT(*) FROM app.acks WHERE id = 1"), "1");
}

#[test]
fn the_keeper_killed_while_a_switchover_holds_the_proxies() {
    keeper_killed_during_a_switchover("hold", false);
}

#[test]
fn the_keeper_killed_after_a_switchover_fenced_the_source() {
    keeper_killed_during_a_switchover("fence", true);
}

#[test]
fn the_keeper_killed_after_a_switchover_caught_up() {
    keeper_killed_during_a_switchover("catch_up", true);
}

#[test]
fn the_keeper_killed_after_a_switchover_promoted_the_target() {
    keeper_killed_during_a_switchover("promote", true);
}

/// SPEC §7, back online through the keeper: the keeper is killed; then
/// the source dies. The proxy cannot reach the keeper and goes offline.
/// When the keeper is back, the proxy re-registers, requests the switch
/// (its active datasource still does not answer) and serves the new
/// source. Before, the cluster stayed down until the old source returned.
#[test]
fn keeper_down_then_source_killed_then_keeper_back() {
    let (_bins, mut m1, m11, mut keeper, _a1, _a11, p1) = cluster_without_unique_key();
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m11.catch_up(&m1);
    keeper.kill();
    m1.kill();
    wait_for("p1 offline", Duration::from_secs(20), || {
        p1.status()["cluster"]["mode"] == "offline_lost_keeper"
    });
    keeper.restart();
    keeper.wait_healthy();
    wait_for("p1 on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11"
    });
    wait_for("p1 online", Duration::from_secs(10), || {
        p1.status()["cluster"]["mode"] == "online"
    });
    p1.sql("INSERT INTO acks VALUES (2, 0)");
    assert_eq!(m11.sql("SELECT COUNT(*) FROM app.acks"), "2");
    m1.restart();
    wait_for("mysql_1 read-only", Duration::from_secs(15), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
}

/// SPEC §7 rule 4: the proxy is cut off from the source, whose server
/// still answers its agent but refuses the fence (the agent's login lost
/// `SUPER` and `READ_ONLY ADMIN`). The failover is rejected `FenceFailed`
/// and the target is untouched: still a read-only replica of the source.
#[test]
fn a_source_that_answers_but_cannot_be_fenced_keeps_its_place() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let relay = Relay::start(&m1.addr());
    let (keeper, _a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "switch_backoff: 60s\n", "");
    let dhs = vec![dh("dh1", "app", vec![Ds::via(&m1, &relay), Ds::of(&m11)])];
    let p1 = fast_proxy(&bins, &keeper, &dhs, FAST_PROXY);
    wait_registered(&keeper, 1);
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m1.sql(&format!(
        "REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM '{BACKEND_USER}'@'%'"
    ));
    relay.cut();
    wait_for("FenceFailed", Duration::from_secs(20), || {
        keeper.reasons().iter().any(|r| r == "FenceFailed")
    });
    assert!(
        !keeper.reasons().iter().any(|r| r == "approve"),
        "{:?}",
        keeper.decisions()
    );
    assert_eq!(m11.sql("SELECT @@read_only"), "1", "the target untouched");
    assert!(
        m11.sql("SHOW SLAVE STATUS")
            .contains(&format!("\t{}\t", m1.port)),
        "still replicating from the source"
    );
    assert_eq!(m1.sql("SELECT @@read_only"), "0");
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");
}

/// SPEC §7, a slow keeper is not an absent one: the proxy's
/// `request_timeout` (100 ms) is shorter than the keeper's decision (the
/// target's agent is paused: its report waits out `agent_timeout`, 1 s).
/// The keeper acknowledges each request at once, so every request gets
/// its answer (`NoStandby`: the only standby's agent did not answer), none
/// counts as a lost keeper, and the
/// proxy stays online. Before, three such requests took it offline.
#[test]
fn a_slow_keeper_is_not_an_absent_one() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let (keeper, _a1, a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let impatient = FAST_PROXY.replace("request_timeout: 1s", "request_timeout: 100ms");
    let p1 = fast_proxy(&bins, &keeper, &dhs, &impatient);
    wait_registered(&keeper, 1);
    a11.signal(SIGSTOP);
    m1.kill();
    wait_for("three rejections", Duration::from_secs(20), || {
        keeper
            .reasons()
            .iter()
            .filter(|r| *r == "NoStandby")
            .count()
            >= 3
    });
    let (_, metrics) = p1.http_get("/metrics").expect("metrics");
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("zerodb_switch_requests_total"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("NoStandby")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|l| l.contains("KeeperUnreachable")),
        "{requests:?}"
    );
    assert_eq!(p1.status()["cluster"]["mode"], "online");
    a11.signal(SIGCONT);
}
