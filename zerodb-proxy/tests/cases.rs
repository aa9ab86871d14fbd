//! The seed's CASEs (SPEC §6), each caused for real: a relay cuts exactly
//! one proxy's link to one datasource, `SIGSTOP` makes a proxy lost,
//! `SIGKILL` takes down servers, agents and the keeper.

mod common;

use common::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);

fn health(p: &Proxy) -> u16 {
    p.http_get("/health").map(|(c, _)| c).unwrap_or(0)
}

fn count(keeper: &Keeper, reason: &str) -> usize {
    keeper.reasons().iter().filter(|r| *r == reason).count()
}

/// Proxy CASE 1 and 2 on one dataHost, then the vote's ratio boundary.
/// p2 reaches mysql_1 through a relay; the relay is cut, so p2 alone sees
/// it down. Its requests are outvoted (1 of 2 is not more than 50 %):
/// alerts, then, at `unregister_switch_rejected_number`, it goes offline
/// and unregisters. Restored, it comes back. With the keeper restarted at
/// `approve_ratio` 49, the same 1 of 2 carries the vote and switches.
#[test]
fn outvoted_proxy_unregisters_and_the_ratio_boundary_decides() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let relay = Relay::start(&m1.addr());
    let mut keeper = start_keeper(&bins, &one_dh(&m1, &m11), &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &one_dh(&m1, &m11), "");
    let p2_view = vec![dh("dh1", "app", vec![Ds::via(&m1, &relay), Ds::of(&m11)])];
    let p2 = start_member(&bins, "p2", keeper.port, &p2_view, "");
    wait_registered(&keeper, 2);

    relay.cut();
    wait_for("p2 offline after being outvoted", LONG, || {
        health(&p2) == 503
    });
    let outvoted = count(&keeper, "VoteFailed");
    assert!(outvoted >= 3, "{:?}", keeper.reasons());
    assert_eq!(
        p2.status()["cluster"]["mode"],
        "unregistered",
        "{}",
        p2.status()
    );
    // Unregistered: the keeper forgot p2; p1 serves on, nothing switched.
    wait_registered(&keeper, 1);
    assert_eq!(health(&p1), 200);
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");
    assert_eq!(keeper.json("/status")["epoch"], 1);
    assert!(
        mariadb_cli(p2.port, APP_USER, APP_PASSWORD, "app", "SELECT 1")
            .status
            .code()
            .is_some_and(|c| c != 0)
    );

    // The link comes back: p2 re-registers and serves again.
    relay.restore();
    wait_for("p2 back online", LONG, || health(&p2) == 200);
    wait_registered(&keeper, 2);
    assert_eq!(p2.sql("SELECT 1"), "1");

    // One vote of two is more than 49 %: the cut now causes a switch.
    keeper.kill();
    keeper.restart_with(&[("ZERODB_NEED_VOTE__APPROVE_RATIO", "49")]);
    keeper.wait_healthy();
    wait_registered(&keeper, 2);
    relay.cut();
    wait_for("both proxies on mysql_11", LONG, || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    let last = keeper.decisions().pop().expect("a decision");
    assert_eq!(last["decision"]["decision"], "approve", "{last}");
    let votes = &last["votes"];
    assert_eq!(
        (votes["p1"].as_str(), votes["p2"].as_str()),
        (Some("up"), Some("down"))
    );
}

/// `down_host_num` over two dataHosts: p2 is cut from dh1's source only
/// (CASE 1: alerts, however often), then from dh2's too (CASE 2: it
/// unregisters once both reached `unregister_switch_rejected_number`).
#[test]
fn down_host_num_counts_datahosts() {
    let bins = bins();
    let (m1, m11) = (MariaDb::start("mysql_1", 1), MariaDb::start("mysql_11", 11));
    let (m2, m22) = (MariaDb::start("mysql_2", 2), MariaDb::start("mysql_22", 22));
    let (r1, r2) = (Relay::start(&m1.addr()), Relay::start(&m2.addr()));
    let direct = vec![
        dh("dh1", "app", vec![Ds::of(&m1), Ds::of(&m11)]),
        dh("dh2", "logs", vec![Ds::of(&m2), Ds::of(&m22)]),
    ];
    let cut_view = vec![
        dh("dh1", "app", vec![Ds::via(&m1, &r1), Ds::of(&m11)]),
        dh("dh2", "logs", vec![Ds::via(&m2, &r2), Ds::of(&m22)]),
    ];
    let policy =
        "unregister_switch_rejected_number: 2\nunregister_when_switch_rejected.down_host_num: 2\n";
    let keeper = start_keeper(&bins, &direct, &[], "");
    let _p1 = start_member(&bins, "p1", keeper.port, &direct, policy);
    let p2 = start_member(&bins, "p2", keeper.port, &cut_view, policy);
    wait_registered(&keeper, 2);

    r1.cut();
    wait_for("dh1 outvoted 4 times", LONG, || {
        count(&keeper, "VoteFailed") >= 4
    });
    assert_eq!(health(&p2), 200, "one dataHost of two: alerts only");
    assert_eq!(p2.status()["cluster"]["mode"], "online");
    let alerts = p2.status()["cluster"]["counters"]["dh1"]["vote_rejected"]
        .as_u64()
        .unwrap_or(0);
    assert!(alerts >= 2, "{}", p2.status());

    r2.cut();
    wait_for("p2 unregistered", LONG, || health(&p2) == 503);
    assert_eq!(p2.status()["cluster"]["mode"], "unregistered");
    wait_registered(&keeper, 1);
}

/// Proxy CASE 3: a lost proxy (paused: its session expires) blocks every
/// switch, even with the source dead. An operator's removal unblocks it;
/// the paused proxy, resumed, must register again and gets the new
/// topology.
#[test]
fn lost_proxy_blocks_switches_until_removed() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);

    p2.signal(SIGSTOP);
    wait_for("p2 lost", LONG, || {
        keeper.json("/status")["proxies"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "p2" && p["lost"] == true))
    });
    m1.kill();
    wait_for("LostProxy rejections", LONG, || {
        count(&keeper, "LostProxy") >= 2
    });
    assert_eq!(
        active_of(&p1, "dh1"),
        "mysql_1",
        "no switch with a lost proxy"
    );
    let d = keeper.decisions().pop().expect("decision");
    assert_eq!(d["decision"]["rejection"]["proxies"][0], "p2", "{d}");
    assert!(d["votes"].is_null(), "no vote is taken with a lost proxy");

    let (code, body) = zerodb_testkit::http(
        keeper.admin_port,
        "DELETE",
        "/proxies/p2",
        None,
        Some(TOKEN),
    )
    .expect("remove");
    assert_eq!(code, 200, "{body}");
    wait_for("p1 switched", LONG, || active_of(&p1, "dh1") == "mysql_11");
    p1.sql("INSERT INTO acks VALUES (1, 1)");

    p2.signal(SIGCONT);
    wait_for("p2 registered again, on the new topology", LONG, || {
        active_of(&p2, "dh1") == "mysql_11"
    });
    wait_registered(&keeper, 2);
    assert_eq!(p2.sql("SELECT COUNT(*) FROM acks WHERE id = 1"), "1");
}

/// Keeper CASE 1, then proxy CASE 4: with the keeper dead the proxy holds
/// still and serves; when its source dies too it cannot switch, so it goes
/// offline (listener closed, /health 503), and once the source answers
/// again (writable) it comes back without the keeper; a restarted keeper
/// gets it registered again.
#[test]
fn lost_keeper_holds_still_then_offline_until_hosts_answer() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let mut keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    wait_registered(&keeper, 1);

    keeper.kill();
    for i in 0..10 {
        p1.sql(&format!("INSERT INTO acks VALUES ({i}, 0)"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health(&p1), 200, "keeper dead: the proxy serves on");
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");

    m1.kill();
    wait_for("p1 offline", LONG, || health(&p1) == 503);
    assert_eq!(p1.status()["cluster"]["mode"], "offline_lost_keeper");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p1.port)).is_err(),
        "the client listener is closed"
    );

    let back = Instant::now();
    m1.restart();
    wait_for("p1 back online", LONG, || health(&p1) == 200);
    eprintln!(
        "back online {:?} after the source restarted",
        back.elapsed()
    );
    assert_eq!(p1.sql("SELECT COUNT(*) FROM acks"), "10");
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");

    keeper.restart();
    keeper.wait_healthy();
    wait_registered(&keeper, 1);
}

/// Agent CASE 2 then CASE 1 with the strict binlog check, then the binlog
/// end read from disk: mysql_1 is killed; with the target's agent dead the
/// switch is refused; with the source's agent dead (the machine off) it is
/// refused too; with the source's agent back (its server still dead) the
/// agent reads the binlog end from the files and the switch goes through.
#[test]
fn agent_cases_refuse_until_the_binlog_end_can_be_read_from_disk() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let (a1p, a11p) = (agent_port(), agent_port());
    let dhs = one_dh(&m1, &m11);
    let strict = "need_binlog_check.safe_binlog_delay: 1000\n";
    let keeper = start_keeper(&bins, &dhs, &[("mysql_1", a1p), ("mysql_11", a11p)], strict);
    let index = format!(
        ", binlog_index: \"{}\"",
        m1.data.join("mysql-bin.index").display()
    );
    let mut a1 = start_agent_with(&bins, &m1, a1p, keeper.port, &index, "");
    let mut a11 = start_agent(&bins, &m11, a11p, keeper.port);
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, strict);
    wait_registered(&keeper, 1);
    m1.sql("INSERT INTO app.acks VALUES (1, 0)");
    m11.catch_up(&m1);

    // Agent CASE 2: the target's agent is dead, so no standby is known
    // to be one (SPEC §7).
    a11.kill();
    m1.kill();
    wait_for("NoStandby", LONG, || count(&keeper, "NoStandby") >= 1);
    let d = keeper.decisions().pop().expect("decision");
    assert_eq!(
        d["decision"]["rejection"]["standbys"]["mysql_11"], "its agent did not answer",
        "{d}"
    );
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");

    // Agent CASE 1: the source machine is off (server and agent dead).
    a1.kill();
    a11.restart();
    a11.wait_healthy();
    wait_for("SourceAgentDown", LONG, || {
        count(&keeper, "SourceAgentDown") >= 1
    });
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");

    // The source's agent is back, its server still dead: the binlog end
    // comes from the files, the replica is within 1000 bytes of it.
    a1.restart();
    a1.wait_healthy();
    wait_for("switched to mysql_11", LONG, || {
        active_of(&p1, "dh1") == "mysql_11"
    });
    let d = keeper.decisions().pop().expect("decision");
    assert_eq!(d["decision"]["decision"], "approve", "{d}");
    let end = &d["reports"]["source"]["binlog_end"];
    assert_eq!(d["reports"]["source"]["alive"], false, "{d}");
    assert!(
        end["pos"].as_u64().unwrap_or(0) > 4,
        "binlog end from disk: {end}"
    );
    assert_eq!(p1.sql("SELECT COUNT(*) FROM acks WHERE id = 1"), "1");
}

/// A planned switchover and back, with the keeper restarted between:
/// epochs keep growing, proxies re-register and follow.
#[test]
fn keeper_restart_keeps_epochs_growing() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let mut keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);
    p1.sql("INSERT INTO acks VALUES (1, 1)");

    let (code, body) = keeper.act("/switchover", r#"{"datahost":"dh1","target":"mysql_11"}"#);
    assert_eq!(code, 200, "{body}");
    wait_for("both on mysql_11", LONG, || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    assert_eq!(
        m1.sql("SELECT @@read_only"),
        "1",
        "the old source is fenced"
    );
    assert_eq!(m11.sql("SELECT COUNT(*) FROM app.acks"), "1");
    let e1 = keeper.json("/status")["epoch"].as_u64().unwrap_or(0);

    keeper.kill();
    keeper.restart();
    keeper.wait_healthy();
    wait_registered(&keeper, 2);
    assert_eq!(keeper.json("/status")["epoch"].as_u64(), Some(e1));
    p2.sql("INSERT INTO acks VALUES (2, 2)");
    // mysql_1 rejoined as a replica (its SQL thread running: a true
    // standby, not just pointed at the source); switch back.
    wait_for("mysql_1 replicating", LONG, || {
        m1.try_sql("SHOW SLAVE STATUS").is_ok_and(|s| {
            let f: Vec<&str> = s.split('\t').collect();
            s.contains(&format!("\t{}\t", m11.port)) && f.get(11) == Some(&"Yes")
        })
    });
    let (code, body) = keeper.act("/switchover", r#"{"datahost":"dh1"}"#);
    assert_eq!(code, 200, "{body}");
    wait_for("both on mysql_1", LONG, || {
        active_of(&p1, "dh1") == "mysql_1" && active_of(&p2, "dh1") == "mysql_1"
    });
    let e2 = p1.status()["epoch"].as_u64().unwrap_or(0);
    assert!(e2 > e1, "epoch {e2} after {e1}");
    assert_eq!(p1.sql("SELECT COUNT(*) FROM acks"), "2");

    // A proxy that stops cleanly leaves the cluster: it cannot block a switch.
    let mut p2 = p2;
    assert!(p2.terminate().success());
    wait_for("p2 unregistered", LONG, || {
        keeper.json("/status")["proxies"]
            .as_array()
            .is_some_and(|ps| ps.len() == 1 && ps[0]["name"] == "p1")
    });
}

/// Maintenance: no automatic switch while it is on (persisted), however
/// dead the source; off again, the pending failover goes through.
#[test]
fn maintenance_stops_automatic_switches() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "buffer: {window: 2s}\n");
    wait_registered(&keeper, 1);
    let (code, body) = keeper.act("/maintenance", r#"{"datahost":"dh1","on":true}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(keeper.json("/status")["maintenance"][0], "dh1");

    m1.kill();
    wait_for("Maintenance rejections", LONG, || {
        count(&keeper, "Maintenance") >= 2
    });
    assert_eq!(active_of(&p1, "dh1"), "mysql_1");
    // A statement waits out the buffer window, then fails naming why.
    let t = Instant::now();
    let out = p1.cli(APP_USER, APP_PASSWORD, "app", "SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("9106") && err.contains("Maintenance"), "{err}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "it waited the window"
    );

    let (code, _) = keeper.act("/maintenance", r#"{"datahost":"dh1","on":false}"#);
    assert_eq!(code, 200);
    wait_for("switched after maintenance", LONG, || {
        active_of(&p1, "dh1") == "mysql_11"
    });
}

/// One proxy, the keeper inside it, no agents: it fails over alone.
#[test]
fn embedded_keeper_fails_over_alone() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let state = scratch("embedded-state");
    let extra = format!(
        "embedded_keeper: {{state_dir: \"{}\", session_timeout: 2s, cooldown: 2s}}\n\
         need_target_load_check.safe_load: 100\n",
        state.display()
    );
    let p = Proxy::start(
        &bins.proxy,
        &proxy_yaml("solo", "embedded", &one_dh(&m1, &m11), &extra),
    );
    wait_for("registered with its own keeper", LONG, || {
        p.status()["cluster"]["connected"] == true
    });
    p.sql("INSERT INTO acks VALUES (1, 1)");
    m11.catch_up(&m1);
    m1.kill();
    wait_for("switched", LONG, || active_of(&p, "dh1") == "mysql_11");
    assert_eq!(p.sql("SELECT COUNT(*) FROM acks"), "1");
    p.sql("INSERT INTO acks VALUES (2, 1)");
    let ks = p.json("/keeper/status");
    assert_eq!(ks["epoch"], 2, "{ks}");
    assert!(state.join("state.json").exists());
}

/// SPEC §7, epochs and topology never go backwards: after a failover the
/// keeper's state is deleted and the keeper restarted. It adopts the
/// topology the proxies and agents report (active mysql_11, not the
/// config's mysql_1), reserves epochs above theirs, and makes no
/// automatic switch until an operator confirms the membership; then the
/// next failover goes through under a higher epoch that every agent takes.
#[test]
fn keeper_state_lost_adopts_the_newest_topology() {
    let bins = bins();
    let (mut m1, mut m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let (mut keeper, _a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);
    p1.sql("INSERT INTO acks VALUES (1, 1)");
    m11.catch_up(&m1);

    m1.kill();
    wait_for("both on mysql_11", LONG, || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    let e1 = p1.status()["epoch"].as_u64().unwrap_or(0);
    assert!(e1 >= 2, "epoch {e1}");
    m1.restart();
    wait_for("mysql_1 rejoined as a replica", LONG, || {
        m1.try_sql("SHOW SLAVE STATUS")
            .is_ok_and(|s| s.contains(&format!("\t{}\t", m11.port)))
    });

    // The keeper loses its state.
    keeper.kill();
    std::fs::remove_dir_all(&keeper.state_dir).expect("delete the keeper's state");
    keeper.restart();
    keeper.wait_healthy();
    wait_registered(&keeper, 2);
    let status = keeper.json("/status");
    assert_eq!(
        status["topology"]["datahosts"][0]["active"], "mysql_11",
        "{status}"
    );
    assert!(status["epoch"].as_u64().unwrap_or(0) >= e1, "{status}");
    assert_eq!(status["membership_confirmed"], false, "{status}");
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    p2.sql("INSERT INTO acks VALUES (2, 2)");

    // No automatic switch until an operator confirms the membership.
    m11.kill();
    wait_for("MembershipUnconfirmed", LONG, || {
        count(&keeper, "MembershipUnconfirmed") >= 1
    });
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    let (code, body) = keeper.act("/bootstrap", "{}");
    assert_eq!(code, 200, "{body}");
    wait_for("both on mysql_1", LONG, || {
        active_of(&p1, "dh1") == "mysql_1" && active_of(&p2, "dh1") == "mysql_1"
    });
    let e2 = p1.status()["epoch"].as_u64().unwrap_or(0);
    assert!(e2 > e1, "epoch {e2} after {e1}");
    assert_eq!(p1.sql("SELECT COUNT(*) FROM acks"), "2", "no write lost");
}
