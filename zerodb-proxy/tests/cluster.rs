//! Failover end to end (SPEC §3–§6): real keeper, agents and proxies as
//! processes, real MariaDB replication (GTID), and caused faults —
//! `SIGKILL`, `SIGSTOP`/`SIGCONT`, and a relay that cuts one link.
//! docs/failover.md lists each scenario and how its fault is caused.

mod common;

use common::*;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// The last GTID sequence number server `server_id` wrote on `db`.
fn own_seq(db: &MariaDb, server_id: u32) -> u64 {
    db.sql("SELECT @@gtid_binlog_state")
        .split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let (_, s, n) = (it.next()?, it.next()?, it.next()?);
            (s.parse::<u32>().ok()? == server_id).then(|| n.parse().ok())?
        })
        .max()
        .unwrap_or(0)
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ids_on(db: &MariaDb) -> HashSet<u64> {
    db.sql("SELECT id FROM app.acks")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILL of the active mariadbd, its agent alive, lenient binlog check:
/// the switch is approved, writes through every proxy reach the new
/// source, and the old one, restarted, comes back read-only (and rejoins
/// as a replica when it holds nothing the new source lacks).
#[test]
fn sigkill_of_the_source_fails_over_and_the_old_source_returns_read_only() {
    let bins = bins();
    // Semi-sync, its master side on the source only; both may ack.
    let (mut m1, m11) = pair(
        &[
            "--rpl-semi-sync-master-enabled=ON",
            "--rpl-semi-sync-slave-enabled=ON",
            "--rpl-semi-sync-master-timeout=1000",
        ],
        &["--rpl-semi-sync-slave-enabled=ON"],
    );
    let dhs = one_dh(&m1, &m11);
    let (keeper, _a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m11.catch_up(&m1);

    // A read in flight when the source dies is run again on the new one.
    let read = app_query_in_background(p1.port, "SELECT SLEEP(2), @@server_id");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    m1.kill();
    wait_for("both proxies on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    eprintln!("SIGKILL → both proxies switched in {:?}", t0.elapsed());
    let read = read.join().expect("reader");
    assert!(
        read.status.success(),
        "the read was not retried: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "0\t11");
    assert!(
        keeper.reasons().iter().any(|r| r == "approve"),
        "{:?}",
        keeper.decisions()
    );
    let epoch = keeper.json("/status")["epoch"].as_u64().unwrap_or(0);
    assert!(epoch >= 2, "a switch takes a new epoch: {epoch}");
    assert_eq!(p1.status()["epoch"].as_u64(), Some(epoch));

    // Writes through every proxy reach the new source.
    p1.sql("INSERT INTO acks VALUES (2, 1)");
    p2.sql("INSERT INTO acks VALUES (3, 2)");
    assert_eq!(
        m11.sql("SELECT COUNT(*) FROM app.acks WHERE id IN (1,2,3)"),
        "3"
    );
    assert_eq!(m11.sql("SELECT @@read_only"), "0");
    assert_eq!(
        m11.sql("SELECT @@rpl_semi_sync_master_enabled"),
        "1",
        "the new source waits for ACKs"
    );

    // The old source comes back: fenced at once, then a replica.
    m1.restart();
    wait_for("old source read-only", Duration::from_secs(10), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
    wait_for(
        "old source replicating from the new one",
        Duration::from_secs(15),
        || {
            m1.try_sql("SHOW SLAVE STATUS")
                .is_ok_and(|s| s.contains(&format!("\t{}\t", m11.port)))
        },
    );
    // As a replica its semi-sync master side is off: otherwise its SQL
    // thread would wait out the semi-sync timeout at every commit.
    assert_eq!(m1.sql("SELECT @@rpl_semi_sync_master_enabled"), "0");
    p2.sql("INSERT INTO acks VALUES (4, 2)");
    m1.catch_up(&m11);
    assert_eq!(m1.sql("SELECT COUNT(*) FROM app.acks WHERE id = 4"), "1");
}

/// A write the dead server never read is run on the new source. The source
/// is frozen while the write waits, unread, in its socket; then killed,
/// which resets the connection (a socket closed with unread data sends a
/// RST). The proxy tells that from a server that died after reading: the
/// client sees a slow INSERT that succeeded, and the row is on the new
/// source exactly once.
#[test]
fn a_write_the_dead_server_never_read_runs_on_the_new_source() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    wait_registered(&keeper, 1);
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m11.catch_up(&m1);

    // A session bound to mysql_1 before the freeze.
    let script = format!(
        "import pymysql, sys\n\
         c = pymysql.connect(host='127.0.0.1', port={}, user='{APP_USER}', password='{APP_PASSWORD}', database='app', autocommit=True)\n\
         cur = c.cursor(); cur.execute('SELECT @@server_id'); print(cur.fetchone()[0], flush=True)\n\
         sys.stdin.readline()\n\
         try:\n    cur.execute('INSERT INTO acks VALUES (2, 1)'); print('ok')\n\
         except pymysql.err.MySQLError as e:\n    print('error', e.args)\n",
        p1.port
    );
    let mut client = Scripted::start(&script);
    assert_eq!(client.line(), "1");

    m1.signal(SIGSTOP);
    client.go();
    std::thread::sleep(Duration::from_millis(150));
    m1.kill();
    let answer = client.line();
    assert_eq!(
        answer,
        "ok",
        "the unread write failed\nproxy log:\n{}",
        p1.log()
    );
    let _ = client.finish();
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    assert_eq!(
        m11.sql("SELECT COUNT(*) FROM app.acks WHERE id = 2"),
        "1",
        "the write is on the new source once"
    );
    let (_, metrics) = p1.http_get("/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("zerodb_statements_retried_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// SIGSTOP of the active mariadbd ("pseudo-death") long enough to switch,
/// then SIGCONT. Semi-synchronous replication, so that every acknowledged
/// write is on the replica. No statement sent after the switch reaches the
/// old server, no client is told "OK" for a write the new source lacks, and
/// the old server ends up read-only with the sessions of users that could
/// write despite `read_only` ended.
#[test]
fn sigstop_pseudo_death_switches_and_the_old_server_is_fenced() {
    let bins = bins();
    let (m1, m11) = pair(
        &[
            "--rpl-semi-sync-master-enabled=ON",
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
            "--rpl-semi-sync-master-timeout=30000",
        ],
        &["--rpl-semi-sync-slave-enabled=ON"],
    );
    let dhs = one_dh(&m1, &m11);
    let (keeper, a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);

    // A session of a user holding READ_ONLY ADMIN, straight to the source.
    let holder = Command::new("python3")
        .args([
            "-c",
            "import pymysql,sys,time\n\
             c=pymysql.connect(host='127.0.0.1',port=int(sys.argv[1]),user=sys.argv[2],password=sys.argv[3])\n\
             print('connected',flush=True)\n\
             time.sleep(600)",
            &m1.port.to_string(),
            BACKEND_USER,
            BACKEND_PASSWORD,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut holder = KillOnDrop(holder);
    let holder_id: String = {
        wait_for("direct session open", Duration::from_secs(10), || {
            m1.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='zerodb' AND COMMAND='Sleep'") != "0"
        });
        m1.sql("SELECT MAX(ID) FROM information_schema.PROCESSLIST WHERE USER='zerodb' AND COMMAND='Sleep'")
    };

    let w1 = spawn_writer(p1.port, 12, 1);
    let w2 = spawn_writer(p2.port, 12, 2);
    std::thread::sleep(Duration::from_secs(2));
    m1.signal(SIGSTOP);
    let paused_at = Instant::now();
    wait_for("both proxies on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    eprintln!(
        "SIGSTOP → both proxies switched in {:?}",
        paused_at.elapsed()
    );
    // Writes go on against the new source while the old one sleeps.
    std::thread::sleep(Duration::from_secs(2));
    m1.signal(SIGCONT);
    let (r1, r2) = (w1.join().expect("writer 1"), w2.join().expect("writer 2"));
    eprintln!("writer errors: {} / {}", r1.errors, r2.errors);
    // Statements between the fault and the switch waited (buffering); the
    // only error a writer may see is for the write in flight at the pause,
    // which may have committed on the old server and so is not retried.
    for r in [&r1, &r2] {
        let errors = r.errors.as_object().cloned().unwrap_or_default();
        let in_flight = errors.get("9102").and_then(|v| v.as_u64()).unwrap_or(0);
        assert!(
            errors.keys().all(|k| k == "9102") && in_flight <= 1,
            "errors beyond the one statement in flight: {errors:?}"
        );
    }

    wait_for("old server read-only", Duration::from_secs(20), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
    wait_for(
        "the READ_ONLY ADMIN session ended",
        Duration::from_secs(10),
        || {
            m1.sql(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {holder_id}"
            )) == "0"
        },
    );
    let _ = holder.0.kill();

    // No client was told OK for a write the new source lacks.
    let on_new = ids_on(&m11);
    let acked: Vec<u64> = r1.acked.iter().chain(&r2.acked).copied().collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !on_new.contains(id)).collect();
    assert!(!acked.is_empty());
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing on the new source: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // No statement sent after the switch reached the old server: besides
    // the two writers' statements in flight at the pause, nothing new was
    // written there under its own server id.
    let on_old = ids_on(&m1);
    let only_old: Vec<&u64> = on_old.difference(&on_new).collect();
    assert!(
        only_old.len() <= 2,
        "the old server holds writes the new one lacks beyond the 2 in flight: {only_old:?}"
    );
    if !only_old.is_empty() {
        // Those writes are errant transactions: the old server must not
        // rejoin; its agent keeps it fenced and says why.
        wait_for(
            "the agent reports errant transactions",
            Duration::from_secs(10),
            || a1.json("/status")["errant"].is_string(),
        );
        assert!(!m1
            .sql("SHOW SLAVE STATUS")
            .contains(&format!("\t{}\t", m11.port)));
    }
    eprintln!("old server kept {} in-flight writes", only_old.len());
    let seq_before = own_seq(&m1, 1);
    p1.sql("INSERT INTO acks VALUES (99, 9)");
    p2.sql("INSERT INTO acks VALUES (100, 9)");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        own_seq(&m1, 1),
        seq_before,
        "a write reached the old server"
    );
}

/// A forged peer without the token can neither register, heartbeat,
/// request a switch, nor order an agent.
#[test]
fn requests_without_the_token_are_refused() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let a1p = agent_port();
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[("mysql_1", a1p)], "");
    let _a1 = start_agent(&bins, &m1, a1p, keeper.port);
    let forged = |port: u16, method: &str, path: &str, body: &str, token: Option<&str>| {
        zerodb_testkit::http(port, method, path, Some(body), token)
            .map(|(c, _)| c)
            .unwrap_or(0)
    };
    // The proxies' WebSocket and the agents' heartbeat.
    assert_eq!(forged(keeper.port, "GET", "/v1/proxy", "", None), 401);
    assert_eq!(
        forged(keeper.port, "GET", "/v1/proxy", "", Some("wrong")),
        401
    );
    let hb =
        r#"{"datasource":"mysql_1","listen":"x","report":{"datasource":"mysql_1","alive":true}}"#;
    assert_eq!(
        forged(keeper.port, "POST", "/v1/agent/heartbeat", hb, None),
        401
    );
    assert_eq!(
        forged(keeper.port, "POST", "/v1/agent/heartbeat", hb, Some(TOKEN)),
        200
    );
    // An operator's switchover and maintenance.
    let sw = r#"{"datahost":"dh1","target":"mysql_11"}"#;
    assert_eq!(
        forged(keeper.admin_port, "POST", "/switchover", sw, None),
        401
    );
    assert_eq!(
        forged(
            keeper.admin_port,
            "POST",
            "/maintenance",
            r#"{"datahost":"dh1","on":true}"#,
            None
        ),
        401
    );
    // An agent's orders.
    let promote = r#"{"epoch":99,"order":"fence"}"#;
    assert_eq!(forged(a1p, "POST", "/v1/order", promote, None), 401);
    assert_eq!(forged(a1p, "GET", "/v1/report", "", Some("nope")), 401);
    assert_eq!(m1.sql("SELECT @@read_only"), "0", "nothing was fenced");
    // With the token, an order under an old epoch is refused too.
    let (code, _) = zerodb_testkit::http(a1p, "POST", "/v1/order", Some(r#"{"epoch":5,"order":"catch_up","position":{"file":"x.000001","pos":4},"timeout_ms":1}"#), Some(TOKEN)).expect("agent");
    assert_ne!(code, 401);
    let (code, body) = zerodb_testkit::http(
        a1p,
        "POST",
        "/v1/order",
        Some(r#"{"epoch":1,"order":"fence"}"#),
        Some(TOKEN),
    )
    .expect("agent");
    assert_eq!(code, 409, "{body}");
    assert_eq!(m1.sql("SELECT @@read_only"), "0");
    assert!(
        keeper.json("/status")["proxies"]
            .as_array()
            .is_some_and(|p| p.is_empty()),
        "nobody registered"
    );
}

/// A planned switchover under write load: proxies hold new statements,
/// open ones finish, the old source is fenced, the target catches up and is
/// promoted, and the held statements run there. Writers see a pause and
/// no error; every acknowledged write is on the new source.
#[test]
fn planned_switchover_pauses_writers_without_errors() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);
    let w1 = spawn_writer(p1.port, 6, 1);
    let w2 = spawn_writer(p2.port, 6, 2);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let (code, body) = keeper.act("/switchover", r#"{"datahost":"dh1","target":"mysql_11"}"#);
    assert_eq!(code, 200, "{body}");
    eprintln!("switchover answered in {:?}", t.elapsed());
    let (r1, r2) = (w1.join().expect("writer 1"), w2.join().expect("writer 2"));
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    assert_eq!(active_of(&p2, "dh1"), "mysql_11");
    for r in [&r1, &r2] {
        assert!(
            r.errors.as_object().is_some_and(|e| e.is_empty()),
            "a writer saw errors: {}",
            r.errors
        );
    }
    let on_new = ids_on(&m11);
    let acked: Vec<u64> = r1.acked.iter().chain(&r2.acked).copied().collect();
    assert!(acked.len() > 20);
    assert!(
        acked.iter().all(|id| on_new.contains(id)),
        "acknowledged writes missing"
    );
    let d = keeper.decisions().pop().expect("decision");
    eprintln!("phases: {}", d["phases_ms"]);
    assert!(d["phases_ms"]["hold"].is_u64(), "{d}");
    assert_eq!(m1.sql("SELECT @@read_only"), "1");
}

/// With `load_measure: threads_running`, what the keeper's `safe_load`
/// check reads is the client statements a server runs: 0 on an idle
/// replica and an idle source (MySQL's `Threads_running` says 3 and 2 there,
/// counting replication threads and its own query, which would make any
/// `safe_load` below 3 refuse every switch), and one per running statement.
#[test]
fn threads_running_load_counts_client_statements_only() {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let raw = m11.sql("SHOW GLOBAL STATUS LIKE 'Threads_running'");
    assert_eq!(
        raw, "Threads_running\t3",
        "an idle replica: this query, Slave_IO, Slave_SQL"
    );
    let extra = "load_measure: threads_running\n";
    let no_keeper = free_port();
    let a1 = start_agent_with(&bins, &m1, agent_port(), no_keeper, "", extra);
    let a11 = start_agent_with(&bins, &m11, agent_port(), no_keeper, "", extra);
    let load = |a: &Agent| a.json("/status")["load"].as_f64();
    wait_for("idle loads of 0", Duration::from_secs(10), || {
        load(&a1) == Some(0.0) && load(&a11) == Some(0.0)
    });
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let port = m11.port;
            std::thread::spawn(move || {
                mariadb_cli(
                    port,
                    BACKEND_USER,
                    BACKEND_PASSWORD,
                    "app",
                    "SELECT SLEEP(4)",
                )
            })
        })
        .collect();
    wait_for("two running statements", Duration::from_secs(3), || {
        load(&a11) == Some(2.0)
    });
    for s in sleepers {
        let out = s.join().expect("sleeper");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("idle again", Duration::from_secs(10), || {
        load(&a11) == Some(0.0)
    });
}

/// SPEC §7, only a true standby is promoted: a double failover. The source
/// is SIGSTOPped under write load with a write in flight; the proxies
/// switch to the standby; the old source resumes, commits that write (an
/// errant transaction the new source lacks) and stays fenced, not
/// replicating. Then the new source is SIGKILLed: the keeper must refuse
/// (`NoStandby`, naming why) rather than promote the stale old source,
/// and once the new source is back every acknowledged write is on it.
#[test]
fn double_failover_never_promotes_a_fenced_stale_source() {
    let bins = bins();
    // Semi-sync, so that every write a client was told OK for is on the
    // standby (asynchronous replication could lose the last ones to the
    // pause itself, whatever the keeper does).
    let (m1, mut m11) = pair(
        &[
            "--rpl-semi-sync-master-enabled=ON",
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
            "--rpl-semi-sync-master-timeout=5000",
        ],
        &["--rpl-semi-sync-slave-enabled=ON"],
    );
    let dhs = one_dh(&m1, &m11);
    let (keeper, a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);

    let w1 = spawn_writer(p1.port, 16, 1);
    let w2 = spawn_writer(p2.port, 16, 2);
    std::thread::sleep(Duration::from_secs(2));
    // A write the server has read when it is paused: it commits there on
    // resume, before the agent can fence (its SLEEP is long over by then).
    let in_flight = app_query_in_background(p1.port, "INSERT INTO acks SELECT 900000, SLEEP(1)");
    std::thread::sleep(Duration::from_millis(300));
    m1.signal(SIGSTOP);
    wait_for("both proxies on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    let switched = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    m1.signal(SIGCONT);
    wait_for(
        "the old source's agent reports errant transactions",
        Duration::from_secs(15),
        || a1.json("/status")["errant"].is_string(),
    );
    assert_eq!(
        m1.sql("SELECT @@read_only"),
        "1",
        "the old source is fenced"
    );

    // Past the cooldown, the new source dies.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(switched.elapsed()));
    m11.kill();
    wait_for(
        "the keeper refuses NoStandby",
        Duration::from_secs(15),
        || keeper.reasons().iter().any(|r| r == "NoStandby"),
    );
    let refusal = keeper
        .decisions()
        .into_iter()
        .find(|d| d["decision"]["rejection"]["reason"] == "NoStandby")
        .expect("a NoStandby decision");
    let why = refusal["decision"]["rejection"]["standbys"]["mysql_1"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("fenced") || why.contains("lacks") || why.contains("nobody"),
        "the refusal names why mysql_1 is no standby: {refusal}"
    );
    let approvals = keeper.reasons().iter().filter(|r| *r == "approve").count();
    assert_eq!(
        approvals,
        1,
        "only the first switch: {:?}",
        keeper.reasons()
    );
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    assert_eq!(m1.sql("SELECT @@read_only"), "1", "still fenced");

    // The new source comes back; the proxies serve it again.
    m11.restart();
    let (r1, r2) = (w1.join().expect("writer 1"), w2.join().expect("writer 2"));
    let _ = in_flight.join();
    eprintln!("writer errors: {} / {}", r1.errors, r2.errors);
    let on_new = ids_on(&m11);
    let acked: Vec<u64> = r1.acked.iter().chain(&r2.acked).copied().collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !on_new.contains(id)).collect();
    assert!(!acked.is_empty());
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing on the source: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let only_old: Vec<u64> = ids_on(&m1).difference(&on_new).copied().collect();
    assert!(
        only_old.contains(&900000) && only_old.len() <= 3,
        "the old source holds the in-flight writes only: {only_old:?}"
    );
}

/// SPEC §7, start is like coming back online: a proxy restarted after a
/// failover starts from its config, whose `active` is the old source, now
/// fenced (and writable to the backend user, who holds READ_ONLY ADMIN).
/// With the keeper paused it must hold statements and answer 503 rather
/// than serve the config's topology; past `cluster.start_timeout` the old
/// source is still read-only, so it keeps holding; once the keeper
/// answers it serves the new source. A writer on another proxy runs
/// throughout; no write reaches the old source.
#[test]
fn a_restarted_proxy_never_serves_the_config_topology() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let (keeper, _a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let timings = "health: {interval: 150ms, timeout: 500ms, fall: 3, rise: 2}\n\
        cluster: {heartbeat_interval: 200ms, switch_retry_interval: 300ms, request_timeout: 2s, \
        reconnect_interval: 300ms, start_timeout: 2s}\nbuffer: {window: 4s}\n";
    let y = proxy_yaml_with(
        "p1",
        &format!("127.0.0.1:{}", keeper.port),
        &dhs,
        timings,
        "",
    );
    let mut p1 = Proxy::start(&bins.proxy, &y);
    let p2 = start_member(&bins, "p2", keeper.port, &dhs, "");
    wait_registered(&keeper, 2);
    let writer = spawn_writer(p2.port, 14, 2);

    m1.kill();
    wait_for("both proxies on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11" && active_of(&p2, "dh1") == "mysql_11"
    });
    m1.restart();
    wait_for("the old source fenced", Duration::from_secs(20), || {
        m1.try_sql("SELECT @@read_only").as_deref() == Ok("1")
    });
    let m1_seq = own_seq(&m1, 1);

    // The keeper pauses; p1 restarts from its config (active: mysql_1).
    keeper.signal(SIGSTOP);
    p1.kill();
    p1.restart();
    wait_for("p1 listening", Duration::from_secs(10), || {
        p1.http_get("/health").is_some()
    });
    let starting = p1
        .http_get("/health")
        .map(|(c, b)| (c, b.trim().to_string()));
    let held = p1.cli(
        APP_USER,
        APP_PASSWORD,
        "app",
        "INSERT INTO acks VALUES (77, 7)",
    );
    assert!(
        !held.status.success(),
        "a write through a proxy without the keeper's topology succeeded"
    );
    assert_eq!(starting, Some((503, "starting".to_string())));
    // Past start_timeout: the config's active is read-only, still held.
    assert_eq!(p1.http_get("/health").map(|(c, _)| c), Some(503));
    assert_eq!(
        own_seq(&m1, 1),
        m1_seq,
        "a write reached the fenced old source"
    );

    keeper.signal(SIGCONT);
    wait_for("p1 serving", Duration::from_secs(20), || {
        p1.http_get("/health").map(|(c, _)| c) == Some(200)
    });
    assert_eq!(active_of(&p1, "dh1"), "mysql_11");
    p1.sql("INSERT INTO acks VALUES (78, 7)");
    let report = writer.join().expect("writer");
    assert_eq!(m11.sql("SELECT COUNT(*) FROM app.acks WHERE id = 78"), "1");
    assert_eq!(
        own_seq(&m1, 1),
        m1_seq,
        "a write reached the fenced old source"
    );
    let on_new = ids_on(&m11);
    let missing: Vec<&u64> = report
        .acked
        .iter()
        .filter(|id| !on_new.contains(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

/// SPEC §7, only a failure a switch can cure asks for one: the source
/// starts refusing the proxy's login (1045: its backend user's password
/// changed there alone) and every connection the proxy holds is cut, the
/// probe's included. The probes get an answer, an error: the datasource
/// stays up, no switch is requested, and the refusal is counted.
#[test]
fn a_probe_answered_with_an_error_asks_for_no_switch() {
    let (m1, _m11, keeper, p1) = keeper_without_agents_and_one_proxy();
    m1.sql_script(&format!(
        "SET sql_log_bin = 0; ALTER USER '{BACKEND_USER}'@'%' IDENTIFIED BY 'changed'; SET sql_log_bin = 1"
    ))
    .expect("password changed on the source alone");
    let ids = m1.sql(&format!(
        "SELECT GROUP_CONCAT(ID) FROM information_schema.PROCESSLIST WHERE USER = '{BACKEND_USER}'"
    ));
    for id in ids.split(',').filter(|s| !s.is_empty() && *s != "NULL") {
        let _ = m1.try_sql(&format!("KILL {id}"));
    }
    refused_without_a_switch(&keeper, &p1, 1045);
    m1.sql_script(&format!(
        "SET sql_log_bin = 0; ALTER USER '{BACKEND_USER}'@'%' IDENTIFIED BY '{BACKEND_PASSWORD}'; SET sql_log_bin = 1"
    ))
    .expect("password restored");
    assert_eq!(p1.sql("SELECT @@server_id"), "1", "served again");
}

/// A source and its replica, a keeper querying them itself (no agents),
/// proxy p1 registered.
fn keeper_without_agents_and_one_proxy() -> (MariaDb, MariaDb, Keeper, Proxy) {
    let bins = bins();
    let (m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let keeper = start_keeper(&bins, &dhs, &[], "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    wait_registered(&keeper, 1);
    (m1, m11, keeper, p1)
}

/// Waits well past `health.fall` probes and a switch's time, then: no
/// decision was asked for, p1 still serves mysql_1, and its refusals with
/// `code` were counted.
fn refused_without_a_switch(keeper: &Keeper, p1: &Proxy, code: u16) {
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        keeper.decisions().is_empty(),
        "no switch requested: {:?}",
        keeper.reasons()
    );
    assert_eq!(active_of(p1, "dh1"), "mysql_1");
    let (_, metrics) = p1.http_get("/metrics").expect("metrics");
    let counted = format!("code=\"{code}\"");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("zerodb_probe_refusals_total") && l.contains(&counted)),
        "the refusal counted: {metrics}"
    );
}

/// The same with 1040: the source has no connection left for anyone.
/// Sleeping sessions are opened first, then `max_connections` is lowered
/// below what is connected, so every new connection is refused "Too many
/// connections" (the slot kept for administrators included), and the
/// proxy's connections are killed so that its probes must reconnect.
/// Refused probes are an alert and a metric, never a switch.
#[test]
fn a_probe_answered_too_many_connections_asks_for_no_switch() {
    let (m1, _m11, keeper, p1) = keeper_without_agents_and_one_proxy();
    let sleepers: Vec<_> = (0..14)
        .map(|_| {
            let socket = m1.socket.clone();
            std::thread::spawn(move || {
                Command::new("mariadb")
                    .args(["--no-defaults", "-uroot", "-e", "SELECT SLEEP(10)"])
                    .arg(format!("--socket={}", socket.display()))
                    .output()
            })
        })
        .collect();
    wait_for("14 sleepers", Duration::from_secs(10), || {
        m1.try_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(10)'")
            .is_ok_and(|n| n == "14")
    });
    let ids = m1.sql(&format!(
        "SELECT GROUP_CONCAT(ID) FROM information_schema.PROCESSLIST WHERE USER = '{BACKEND_USER}'"
    ));
    // The smallest MariaDB takes; 14 sleepers keep the server over it.
    m1.sql_script(&format!(
        "SET GLOBAL max_connections = 10; {}",
        ids.split(',')
            .filter(|s| !s.is_empty() && *s != "NULL")
            .map(|id| format!("KILL {id};"))
            .collect::<String>()
    ))
    .expect("max_connections lowered, the proxy's connections killed");
    let full = || {
        m1.try_sql("SELECT 1")
            .is_err_and(|e| e.contains("Too many connections"))
    };
    assert!(full(), "new connections refused");
    refused_without_a_switch(&keeper, &p1, 1040);
    assert!(full(), "still full");
    for s in sleepers {
        let _ = s.join();
    }
    assert_eq!(p1.sql("SELECT @@server_id"), "1", "served again");
}

/// SPEC §7, a failed promotion changes nothing on the target: a session
/// on the standby locks the table the next replicated write goes to, so
/// the relay log cannot be applied within its agent's `promote_timeout`;
/// the source dies. The promotion fails (`PromotionFailed`); the standby
/// stays read-only and still replicates from the old source; automatic
/// requests back off (`Backoff`); once the lock is gone, the next attempt
/// promotes it with every row.
#[test]
fn a_failed_promotion_changes_nothing_on_the_target() {
    use std::io::BufRead;
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let (keeper, _a1, _a11) = keeper_and_agents(
        &bins,
        &m1,
        &m11,
        "switch_backoff: 3s\n",
        "promote_timeout: 1s\n",
    );
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    wait_registered(&keeper, 1);
    p1.sql("INSERT INTO acks VALUES (1, 0)");
    m11.catch_up(&m1);

    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import pymysql,sys,time\n\
             c=pymysql.connect(host='127.0.0.1',port=int(sys.argv[1]),user=sys.argv[2],password=sys.argv[3],database='app')\n\
             c.cursor().execute('LOCK TABLES acks WRITE')\n\
             print('locked',flush=True)\n\
             time.sleep(600)",
            &m11.port.to_string(),
            BACKEND_USER,
            BACKEND_PASSWORD,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(locker.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("locked");
    assert_eq!(line.trim(), "locked");
    let locker = KillOnDrop(locker);
    p1.sql("INSERT INTO acks VALUES (2, 0)");
    std::thread::sleep(Duration::from_millis(500)); // received, not applied
    m1.kill();

    wait_for("PromotionFailed", Duration::from_secs(20), || {
        keeper.reasons().iter().any(|r| r == "PromotionFailed")
    });
    assert_eq!(m11.sql("SELECT @@read_only"), "1", "still read-only");
    wait_for(
        "still replicating from mysql_1",
        Duration::from_secs(10),
        || {
            m11.sql("SHOW SLAVE STATUS")
                .contains(&format!("\t{}\t", m1.port))
        },
    );
    wait_for("requests backing off", Duration::from_secs(10), || {
        keeper.reasons().iter().any(|r| r == "Backoff")
    });
    drop(locker);
    wait_for("switched to mysql_11", Duration::from_secs(30), || {
        active_of(&p1, "dh1") == "mysql_11"
    });
    assert_eq!(p1.sql("SELECT COUNT(*) FROM acks"), "2", "every row");
    let failed = keeper
        .reasons()
        .iter()
        .filter(|r| *r == "PromotionFailed")
        .count();
    assert_eq!(
        failed,
        1,
        "one failed attempt, then backoff: {:?}",
        keeper.reasons()
    );
}

/// SPEC §5 with the keeper down: after a failover the keeper is paused;
/// the old source's agent restarts (its epoch and topology read back from
/// its `state_dir`) and the old source comes back writable. Its agent
/// fences it without the keeper, so no proxy that restarts and finds it
/// writable could send it writes.
#[test]
fn with_the_keeper_down_a_returning_old_source_is_fenced_by_its_agent() {
    let bins = bins();
    let (mut m1, m11) = pair(&[], &[]);
    let dhs = one_dh(&m1, &m11);
    let (keeper, mut a1, _a11) = keeper_and_agents(&bins, &m1, &m11, "", "");
    let p1 = start_member(&bins, "p1", keeper.port, &dhs, "");
    wait_registered(&keeper, 1);
    m1.kill();
    wait_for("p1 on mysql_11", Duration::from_secs(20), || {
        active_of(&p1, "dh1") == "mysql_11"
    });
    wait_for(
        "mysql_1's agent holds the new topology",
        Duration::from_secs(10),
        || a1.json("/status")["epoch"].as_u64().unwrap_or(0) >= 2,
    );

    keeper.signal(SIGSTOP);
    a1.kill();
    a1.restart();
    m1.restart();
    wait_for(
        "mysql_1 fenced by its agent",
        Duration::from_secs(15),
        || m1.try_sql("SELECT @@read_only").as_deref() == Ok("1"),
    );
    assert!(a1.log().contains("writable but not the active datasource"));
    keeper.signal(SIGCONT);
}
