//! Clients that hold the proxy's resources without using them: 2,000
//! connections that never answer the greeting and 500 that ask for a large
//! result and never read it, while well-behaved clients run sysbench. The
//! stalled ones must be closed by their timeouts, the others served, and
//! the proxy's memory must stay bounded.
//!
//!     cargo bench -p zerodb-benches --bench slow_clients
//!
//! Settings (environment): ZERODB_SLOW_SILENT (2000), ZERODB_SLOW_UNREAD
//! (500), ZERODB_SLOW_TIMEOUT (the proxy's connect_timeout and
//! net_write_timeout, seconds, default 10), ZERODB_SLOW_RSS_LIMIT_MIB (64).
//! The figures are printed and written to target/bench/slow_clients.md;
//! the run fails when a limit is not met.

mod common;

use common::{env_or, release_binaries, rss_kib, workspace_root};
use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerodb_proxy::backend::{BackendConn, ConnectParams};
use zerodb_testkit::*;

fn num(name: &str, default: &str) -> u64 {
    env_or(name, default).parse().expect(name)
}

/// Connections that read the greeting and then say nothing.
fn silent(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).ok()?;
            Some(s)
        })
        .collect()
}

/// Logged-in sessions that each ask for ~100 MB and read none of it.
fn unread(rt: &tokio::runtime::Runtime, port: u16, n: usize) -> Vec<BackendConn> {
    let params = ConnectParams {
        addr: format!("127.0.0.1:{port}"),
        user: APP_USER.into(),
        password: APP_PASSWORD.into(),
        connect_timeout: Duration::from_secs(10),
        tls: None,
    };
    rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(mut c) = BackendConn::connect(&params, Default::default()).await else {
                continue;
            };
            let mut q = vec![zerodb_proxy::protocol::cmd::QUERY];
            q.extend_from_slice(b"SELECT REPEAT('x', 1000000) FROM mysql.seq_1_to_100");
            if c.conn.send(0, &q).await.is_ok() {
                held.push(c);
            }
        }
        held
    })
}

/// How many connections of `silent` the proxy closed (each reads its end
/// of stream).
fn all_closed(silent: &mut [TcpStream]) -> usize {
    silent
        .iter_mut()
        .map(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e) => {
                        return !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        )
                    }
                }
            }
        })
        .count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rlimit::increase_nofile_limit(65_536);
    std::env::set_var("ZERODB_TEST_LOG", "warn");
    let n_silent = num("ZERODB_SLOW_SILENT", "2000") as usize;
    let n_unread = num("ZERODB_SLOW_UNREAD", "500") as usize;
    let timeout = num("ZERODB_SLOW_TIMEOUT", "10");
    let rss_limit_mib = num("ZERODB_SLOW_RSS_LIMIT_MIB", "64");

    let bin = release_binaries(&["zerodb-proxy"]).remove(0);
    let db = MariaDb::start("slow", 1);
    db.sql("SET GLOBAL max_connections = 5000");
    let proxy = Proxy::start(
        &bin,
        &format!(
            // Each silent connection is a failed login of 127.0.0.1: left
            // on, max_connect_errors would block the bench's own address.
            "{}max_connections: 10000\nlimits: {{connect_timeout: {timeout}s, net_write_timeout: {timeout}s, max_connect_errors: 0}}\n",
            one_datahost_config(&[&db])
        ),
    );
    let sysbench = |step: &str, seconds: u64| {
        Command::new("sysbench")
            .args(["oltp_point_select", "--tables=2", "--table-size=10000"])
            .args([
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                "--mysql-db=app",
            ])
            .arg(format!("--mysql-port={}", proxy.port))
            .arg(format!("--mysql-user={APP_USER}"))
            .arg(format!("--mysql-password={APP_PASSWORD}"))
            .args(["--threads=8", &format!("--time={seconds}"), step])
            .output()
            .expect("sysbench")
    };
    assert!(sysbench("prepare", 0).status.success(), "sysbench prepare");
    let baseline = qps(&sysbench("run", 5));
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(proxy.pid());

    // Sample the proxy's memory all along.
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), proxy.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut stalled = silent(proxy.port, n_silent);
    let opened_silent = stalled.len();
    let held = unread(&rt, proxy.port, n_unread);
    let opened_unread = held.len();
    let stalled_at = started.elapsed();
    // Well-behaved clients meanwhile.
    let during = qps(&sysbench("run", timeout.min(8)));

    // Every stalled connection is closed by its timeout.
    let deadline = Instant::now() + Duration::from_secs(timeout * 3 + 120);
    let mut closed_silent = 0;
    while Instant::now() < deadline {
        closed_silent = all_closed(&mut stalled);
        let sessions = proxy.status()["sessions"].as_u64().unwrap_or(u64::MAX);
        if closed_silent == opened_silent && sessions == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_gone_after = started.elapsed();
    let sessions_left = proxy.status()["sessions"].as_u64().unwrap_or(u64::MAX);
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    drop(held);
    drop(stalled);
    let after = qps(&sysbench("run", 5));
    let peak = peak.load(Ordering::Relaxed);
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;

    let metrics = proxy.http_get("/metrics").map(|r| r.1).unwrap_or_default();
    let hits = |limit: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("zerodb_limit_hits_total{{limit=\"{limit}\"}} ")))
            .unwrap_or("0")
            .trim()
            .to_string()
    };
    let report = format!(
        "# Slow clients\n\n\
         | figure | value |\n|---|---|\n\
         | silent connections opened / closed by connect_timeout | {opened_silent} / {closed_silent} (metric: {}) |\n\
         | non-reading sessions opened | {opened_unread} (closed by net_write_timeout: sessions left at the end {sessions_left}) |\n\
         | timeouts | {timeout} s |\n\
         | all opened after | {:.1} s |\n\
         | all closed after | {:.1} s |\n\
         | sysbench point_select qps before / during / after | {baseline:.0} / {during:.0} / {after:.0} |\n\
         | proxy RSS before / peak | {} / {} MiB |\n\
         | RSS growth | {growth_mib:.1} MiB (limit {rss_limit_mib}) |\n",
        hits("connect_timeout"),
        stalled_at.as_secs_f64(),
        all_gone_after.as_secs_f64(),
        before / 1024,
        peak / 1024,
    );
    println!("{report}");
    let out = workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("slow_clients.md"), &report);
    assert_eq!(
        closed_silent, opened_silent,
        "every silent connection closed"
    );
    assert_eq!(sessions_left, 0, "every non-reading session closed");
    assert!(during > 0.0, "other clients were served meanwhile");
    assert!(
        growth_mib <= rss_limit_mib as f64,
        "RSS grew {growth_mib:.1} MiB"
    );
}

/// Queries per second from a sysbench report (0 when it failed).
fn qps(out: &std::process::Output) -> f64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("queries:")?;
            let inner = rest.split('(').nth(1)?;
            inner.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}
