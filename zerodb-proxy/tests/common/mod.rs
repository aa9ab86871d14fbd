//! The shared harness, bound to this package's proxy binary.

#![allow(dead_code, unused_imports)]

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;
use zerodb_proxy::backend::{BackendConn, BackendKey, ConnectParams};
pub use zerodb_testkit::cluster::*;
pub use zerodb_testkit::relay::Relay;
pub use zerodb_testkit::*;

/// Starts zerodb-proxy with `yaml` (see [`Proxy::start`]).
pub fn start_proxy(yaml: &str) -> Proxy {
    Proxy::start(env!("CARGO_BIN_EXE_zerodb-proxy").as_ref(), yaml)
}

pub fn bins() -> Bins {
    Bins::beside(env!("CARGO_BIN_EXE_zerodb-proxy").as_ref())
}

/// A source and a GTID replica with the `app.acks` table.
pub fn pair(source_opts: &[&str], replica_opts: &[&str]) -> (MariaDb, MariaDb) {
    let o1 = [REPLICATION_OPTIONS, source_opts].concat();
    let o11 = [REPLICATION_OPTIONS, replica_opts].concat();
    let m1 = MariaDb::start_with("mysql_1", 1, &o1);
    let m11 = MariaDb::start_with("mysql_11", 11, &o11);
    m11.replicate_from(&m1);
    m1.sql("CREATE TABLE app.acks (id BIGINT PRIMARY KEY, writer INT)");
    m11.catch_up(&m1);
    (m1, m11)
}

pub fn one_dh(m1: &MariaDb, m11: &MariaDb) -> Vec<Dh> {
    vec![dh("dh1", "app", vec![Ds::of(m1), Ds::of(m11)])]
}

/// Waits until `n` proxies are registered and connected.
pub fn wait_registered(keeper: &Keeper, n: usize) {
    wait_for(
        &format!("{n} proxies registered"),
        Duration::from_secs(15),
        || {
            keeper.json("/status")["proxies"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() == n)
        },
    );
}

/// A keeper over [`one_dh`]`(m1, m11)` with an agent beside each server;
/// `keeper_extra` goes into the keeper's config, `replica_agent` into
/// mysql_11's agent's (top-level keys, one per line).
pub fn keeper_and_agents(
    bins: &Bins,
    m1: &MariaDb,
    m11: &MariaDb,
    keeper_extra: &str,
    replica_agent: &str,
) -> (Keeper, Agent, Agent) {
    let (a1p, a11p) = (agent_port(), agent_port());
    let agents = [(m1.name.as_str(), a1p), (m11.name.as_str(), a11p)];
    let keeper = start_keeper(bins, &one_dh(m1, m11), &agents, keeper_extra);
    let a1 = start_agent(bins, m1, a1p, keeper.port);
    let a11 = start_agent_with(bins, m11, a11p, keeper.port, "", replica_agent);
    (keeper, a1, a11)
}

/// What a writer saw: the ids it was told OK for, and its errors by
/// MySQL error code.
pub struct WriterReport {
    pub acked: Vec<u64>,
    pub errors: serde_json::Value,
}

/// One writer (tests/clients/failover_load.py) through `port` for
/// `seconds`, inserting unique ids into `app.acks`.
pub fn spawn_writer(port: u16, seconds: u32, id: u32) -> std::thread::JoinHandle<WriterReport> {
    std::thread::spawn(move || {
        let out = scratch("writer").join("writer.json");
        let run = Command::new("python3")
            .arg(repo_tests_dir().join("clients").join("failover_load.py"))
            .args([
                "127.0.0.1",
                &port.to_string(),
                APP_USER,
                APP_PASSWORD,
                &seconds.to_string(),
                &id.to_string(),
                "write",
            ])
            .arg(&out)
            .output()
            .expect("python3 writer");
        let v: serde_json::Value = std::fs::read(&out)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| panic!("writer: {}", String::from_utf8_lossy(&run.stderr)));
        // Errors by MySQL error code, from the statement log.
        let mut errors = serde_json::Map::new();
        for e in v["events"].as_array().into_iter().flatten() {
            if let Some(code) = e[2].as_i64().filter(|c| *c != 0) {
                let n = errors
                    .get(&code.to_string())
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                errors.insert(code.to_string(), (n + 1).into());
            }
        }
        WriterReport {
            acked: v["acked"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default(),
            errors: errors.into(),
        }
    })
}

/// Semi-sync, so that every write a client was told OK for is on the
/// standby whatever the keeper does.
pub const SEMI_SYNC_SOURCE: &[&str] = &[
    "--rpl-semi-sync-master-enabled=ON",
    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-timeout=5000",
];
pub const SEMI_SYNC_REPLICA: &[&str] = &["--rpl-semi-sync-slave-enabled=ON"];

/// Every acknowledged id is on `db`, and no row is there twice (the table
/// has no unique key, so a statement run twice would show).
pub fn assert_each_ack_once(db: &MariaDb, acked: &[u64]) {
    let on: HashSet<u64> = db
        .sql("SELECT id FROM app.acks")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !on.contains(id)).collect();
    assert!(!acked.is_empty(), "the writer was never told OK");
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing on {}: {:?}",
        missing.len(),
        db.name,
        &missing[..missing.len().min(10)]
    );
    let twice = db.sql("SELECT COUNT(*) - COUNT(DISTINCT id) FROM app.acks");
    assert_eq!(twice, "0", "rows present twice on {}", db.name);
}

/// Where the app user logs in to the proxy at `port`.
pub fn params(port: u16) -> ConnectParams {
    ConnectParams {
        addr: format!("127.0.0.1:{port}"),
        user: APP_USER.into(),
        password: APP_PASSWORD.into(),
        connect_timeout: Duration::from_secs(5),
        tls: None,
    }
}

/// Reads until the peer closes or `limit` passes; returns what came.
pub fn read_all(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// An ERR packet's code at the start of a frame stream.
pub fn err_code(frames: &[u8]) -> Option<u16> {
    (frames.len() >= 7 && frames[4] == 0xff).then(|| u16::from_le_bytes([frames[5], frames[6]]))
}

/// Logs in through the proxy and returns the raw socket (greeting, response
/// and OK consumed by zerodb-core's own client).
pub fn logged_in(rt: &tokio::runtime::Runtime, port: u16) -> TcpStream {
    let mut conn = rt
        .block_on(BackendConn::connect(&params(port), BackendKey::default()))
        .expect("login");
    // The socket goes on as a blocking one of its own (a duplicate
    // descriptor); the client is dropped without its goodbye.
    use std::os::fd::AsFd as _;
    let fd = conn.conn.stream.as_fd().try_clone_to_owned().expect("dup");
    conn.broken = true;
    drop(conn);
    let std = TcpStream::from(fd);
    std.set_nonblocking(false).expect("blocking");
    std.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std
}

/// The mariadb CLI through 127.0.0.1:`port` as `user` with `extra`
/// options (TLS, auth plugin), running `sql` in `app`.
pub fn cli_with(
    port: u16,
    user: &str,
    password: &str,
    extra: &[&str],
    sql: &str,
) -> std::process::Output {
    Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{password}"))
        .args(extra)
        .args(["app", "-e", sql])
        .output()
        .expect("run mariadb")
}

/// The stdout of a run that must succeed (its stderr in the panic).
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The stderr of a run that must fail.
pub fn err(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `tests/clients/{script}` against the proxy as the app user in
/// `app`; panics unless it ends by printing `done` (its stdout, its stderr
/// and the proxy's log in the message).
pub fn run_client_script(script: &str, proxy: &Proxy, done: &str) {
    let out = Command::new("python3")
        .arg(repo_tests_dir().join("clients").join(script))
        .args([
            "127.0.0.1",
            &proxy.port.to_string(),
            APP_USER,
            APP_PASSWORD,
            "app",
        ])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed:\n{stdout}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
}
