//! zerodb-proxy against MariaDB directly and against HAProxy 2.6 in TCP mode,
//! interleaved round by round in one run, plus the proxy's memory per idle
//! client connection.
//!
//!     cargo bench -p zerodb-benches
//!
//! Settings (environment): ZERODB_BENCH_SECONDS (per run, default 6),
//! ZERODB_BENCH_ROUNDS (8), ZERODB_BENCH_THREADS ("1,16,64"),
//! ZERODB_BENCH_WORKLOADS ("oltp_point_select,oltp_read_only"),
//! ZERODB_BENCH_IDLE (idle connections for the memory figure, 5000; 0 skips),
//! ZERODB_BENCH_TLS (1: also run every target with sysbench over TLS —
//! MariaDB's own TLS directly and through HAProxy, which passes the bytes
//! on, and zeroDB terminating TLS and relaying in clear to MariaDB).
//! The table is printed and written to target/bench/proxy_vs_haproxy.md.

mod common;

use common::{env_or, median, quantile, release_binaries, rss_kib, workspace_root};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zerodb_testkit::certs::{self, Certs};
use zerodb_testkit::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    HaProxy,
    ZeroDb,
    DirectTls,
    HaProxyTls,
    ZeroDbTls,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::HaProxy => "haproxy",
            Target::ZeroDb => "zerodb",
            Target::DirectTls => "direct+tls",
            Target::HaProxyTls => "haproxy+tls",
            Target::ZeroDbTls => "zerodb+tls",
        }
    }

    fn tls(self) -> bool {
        matches!(
            self,
            Target::DirectTls | Target::HaProxyTls | Target::ZeroDbTls
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    qps: f64,
    p95_ms: f64,
    /// CPU time (user + system) the proxy process spent per query, in µs;
    /// NaN for the direct runs.
    cpu_us: f64,
}

/// CPU ticks (user + system) a process has used.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct HaProxy {
    child: Child,
    port: u16,
}

impl HaProxy {
    fn start(backend: &str) -> Self {
        let dir = scratch("haproxy");
        let port = free_port();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 9000\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
                 frontend mysql\n  bind 127.0.0.1:{port}\n  default_backend db\n\
                 backend db\n  server m1 {backend}\n"
            ),
        )
        .expect("haproxy.cfg");
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("haproxy not installed: apt-get install haproxy (scripts/deps.sh with WITH_HAPROXY=1)");
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).expect("haproxy.log"))
            .spawn()
            .expect("start haproxy");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy did not start: {}",
                std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sysbench run; over TLS when `tls` holds the certificates.
fn run_sysbench(
    port: u16,
    pid: Option<u32>,
    tls: Option<&Certs>,
    workload: &str,
    threads: u32,
    seconds: u32,
) -> Sample {
    let cpu_before = pid.and_then(cpu_ticks);
    let args = [
        workload,
        "--tables=4",
        "--table-size=10000",
        "--db-ps-mode=auto",
        &format!("--threads={threads}"),
        &format!("--time={seconds}"),
        "--percentile=95",
        "run",
    ];
    let out = match tls {
        Some(c) => c.sysbench(port, &args),
        None => sysbench(port, &args),
    };
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sysbench failed on port {port}:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qps = report
        .lines()
        .find(|l| l.trim_start().starts_with("queries:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("queries per second");
    let p95_ms = report
        .lines()
        .find(|l| l.trim_start().starts_with("95th percentile:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .expect("p95");
    let queries: f64 = report
        .lines()
        .find(|l| l.trim_start().starts_with("queries:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let cpu_us = match (cpu_before, pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => (b - a) as f64 / ticks_per_second() * 1e6 / queries,
        _ => f64::NAN,
    };
    Sample {
        qps,
        p95_ms,
        cpu_us,
    }
}

/// Opens `n` client connections through the proxy, each running one
/// statement (so it holds a backend connection too), and returns the proxy's
/// RSS before and after, in KiB.
fn idle_connections(proxy: &Proxy, n: usize) -> (u64, u64, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss_kib(proxy.pid());
    let params = zerodb_proxy::backend::ConnectParams {
        addr: format!("127.0.0.1:{}", proxy.port),
        user: APP_USER.into(),
        password: APP_PASSWORD.into(),
        connect_timeout: Duration::from_secs(10),
        tls: None,
    };
    let conns = rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let params = params.clone();
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.ok()?;
                let mut c =
                    zerodb_proxy::backend::BackendConn::connect(&params, Default::default())
                        .await
                        .ok()?;
                c.execute("SELECT 1").await.ok()?;
                c.conn.release_buffers();
                Some(c)
            }));
        }
        let mut held = Vec::with_capacity(n);
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                held.push(c);
            }
        }
        held
    });
    // Idle means idle: past the second after which a session gives its
    // buffers back (the proxy checks once a second).
    std::thread::sleep(Duration::from_secs(4));
    let after = rss_kib(proxy.pid());
    let opened = conns.len();
    drop(conns);
    drop(rt);
    (before, after, opened)
}

/// The side-by-side table of three targets (direct, HAProxy, zeroDB) for
/// every workload and thread count.
fn table(
    samples: &BTreeMap<(String, u32, Target), Vec<Sample>>,
    workloads: &[String],
    threads: &[u32],
    [direct, haproxy, zerodb]: [Target; 3],
) -> String {
    let mut md = String::new();
    md.push_str(
        "| workload | threads | direct qps | HAProxy qps | zeroDB qps | HAProxy/direct | zeroDB/direct | zeroDB/HAProxy per round: median (quartiles) | all rounds' queries, zeroDB/HAProxy | rounds zeroDB won | p95 ms direct / HAProxy / zeroDB | proxy CPU µs/query HAProxy / zeroDB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for w in workloads {
        for &t in threads {
            let get = |target| {
                samples
                    .get(&(w.clone(), t, target))
                    .cloned()
                    .unwrap_or_default()
            };
            let (d, h, z) = (get(direct), get(haproxy), get(zerodb));
            let q = |v: &[Sample]| median(v.iter().map(|s| s.qps).collect());
            let p = |v: &[Sample]| median(v.iter().map(|s| s.p95_ms).collect());
            let c = |v: &[Sample]| median(v.iter().map(|s| s.cpu_us).collect());
            // Ratios per round (the two runs of a round are minutes apart
            // at most), their median and quartiles, how many rounds
            // zeroDB won, and all queries of zeroDB over all of HAProxy's.
            let zh: Vec<f64> = z.iter().zip(&h).map(|(a, b)| a.qps / b.qps).collect();
            let wins = zh.iter().filter(|r| **r >= 1.0).count();
            let total = |v: &[Sample]| v.iter().map(|s| s.qps).sum::<f64>();
            md.push_str(&format!(
                "| {w} | {t} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} ({:.2}–{:.2}) | {:.2} | {wins}/{} | {:.2} / {:.2} / {:.2} | {:.1} / {:.1} |\n",
                q(&d),
                q(&h),
                q(&z),
                q(&h) / q(&d),
                q(&z) / q(&d),
                median(zh.clone()),
                quantile(zh.clone(), 0.25),
                quantile(zh.clone(), 0.75),
                total(&z) / total(&h),
                zh.len(),
                p(&d),
                p(&h),
                p(&z),
                c(&h),
                c(&z),
            ));
        }
    }
    md
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and test discovery: nothing to list.
        return;
    }
    let seconds: u32 = env_or("ZERODB_BENCH_SECONDS", "6")
        .parse()
        .expect("seconds");
    let rounds: usize = env_or("ZERODB_BENCH_ROUNDS", "8").parse().expect("rounds");
    let threads: Vec<u32> = env_or("ZERODB_BENCH_THREADS", "1,16,64")
        .split(',')
        .map(|t| t.trim().parse().expect("threads"))
        .collect();
    let workloads: Vec<String> =
        env_or("ZERODB_BENCH_WORKLOADS", "oltp_point_select,oltp_read_only")
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
    let idle: usize = env_or("ZERODB_BENCH_IDLE", "5000").parse().expect("idle");
    let tls = env_or("ZERODB_BENCH_TLS", "0") == "1";
    let _ = rlimit::increase_nofile_limit(65_536);
    std::env::set_var("ZERODB_TEST_LOG", "warn");

    let bin = release_binaries(&["zerodb-proxy"]).remove(0);
    // One certificate for MariaDB and zeroDB alike: both sides of a TLS
    // comparison then do the same handshake and cipher work.
    let certs = tls.then(|| certs::make("bench-certs"));
    let db = match &certs {
        Some(c) => {
            let opts = c.server_options();
            let extra: Vec<&str> = REPLICATION_OPTIONS
                .iter()
                .copied()
                .chain(opts.iter().map(String::as_str))
                .collect();
            MariaDb::start_with("bench", 1, &extra)
        }
        None => MariaDb::start("bench", 1),
    };
    db.sql("SET GLOBAL max_connections = 12000");
    let haproxy = HaProxy::start(&db.addr());
    let tls_config = certs
        .as_ref()
        .map(|c| {
            format!(
                "tls: {{cert: '{}', key: '{}'}}\n",
                c.cert.display(),
                c.key.display()
            )
        })
        .unwrap_or_default();
    let proxy = Proxy::start(
        &bin,
        &format!(
            "{}max_connections: 12000\n{tls_config}",
            one_datahost_config(&[&db]).replace(
                "pool: {min_idle: 2}",
                "pool: {min_idle: 8, max_size: 12000}"
            )
        ),
    );
    // The sysbench user must exist on the server for direct and HAProxy runs.
    db.sql(&format!(
        "CREATE USER IF NOT EXISTS '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; GRANT ALL ON app.* TO '{APP_USER}'@'%';"
    ));
    let out = sysbench(
        db.port,
        &[
            "oltp_read_only",
            "--tables=4",
            "--table-size=10000",
            "prepare",
        ],
    );
    assert!(
        out.status.success(),
        "prepare: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut targets = vec![
        (Target::Direct, db.port, None),
        (Target::HaProxy, haproxy.port, Some(haproxy.child.id())),
        (Target::ZeroDb, proxy.port, Some(proxy.pid())),
    ];
    if tls {
        targets.extend([
            (Target::DirectTls, db.port, None),
            (Target::HaProxyTls, haproxy.port, Some(haproxy.child.id())),
            (Target::ZeroDbTls, proxy.port, Some(proxy.pid())),
        ]);
    }
    let mut samples: BTreeMap<(String, u32, Target), Vec<Sample>> = BTreeMap::new();
    eprintln!(
        "benchmark: {rounds} rounds x {} workloads x {:?} threads x {} targets x {seconds}s",
        workloads.len(),
        threads,
        targets.len()
    );
    for round in 0..rounds {
        for w in &workloads {
            for &t in &threads {
                for i in 0..targets.len() {
                    // Rotate the order each round so no target always runs first.
                    let (target, port, pid) = targets[(i + round) % targets.len()];
                    let certs = certs.as_ref().filter(|_| target.tls());
                    let s = run_sysbench(port, pid, certs, w, t, seconds);
                    eprintln!(
                        "round {round} {w} {t:>2} threads {:>8}: {:>9.0} qps  p95 {:.2} ms  proxy CPU {:.1} us/query",
                        target.name(),
                        s.qps,
                        s.p95_ms,
                        s.cpu_us
                    );
                    samples.entry((w.clone(), t, target)).or_default().push(s);
                }
            }
        }
    }

    let mut md = table(
        &samples,
        &workloads,
        &threads,
        [Target::Direct, Target::HaProxy, Target::ZeroDb],
    );
    if tls {
        md.push_str(
            "\nOver TLS (sysbench --mysql-ssl=on): MariaDB's own TLS directly and through HAProxy, \
             which passes it on; zeroDB terminates TLS and relays in clear to MariaDB.\n\n",
        );
        md.push_str(&table(
            &samples,
            &workloads,
            &threads,
            [Target::DirectTls, Target::HaProxyTls, Target::ZeroDbTls],
        ));
    }
    if idle > 0 {
        let (before, after, opened) = idle_connections(&proxy, idle);
        let per = (after.saturating_sub(before) as f64) * 1024.0 / opened.max(1) as f64;
        md.push_str(&format!(
            "\nzerodb-proxy RSS: {before} KiB before, {after} KiB with {opened} idle client connections \
             (each holding a backend connection): {:.1} KiB per connection.\n",
            per / 1024.0
        ));
    }
    md.push_str(&format!(
        "\n{rounds} rounds, {seconds} s per run, targets interleaved and rotated each round; sysbench {} with \
         --db-ps-mode=auto, 4 tables x 10000 rows; {} CPUs.\n",
        String::from_utf8_lossy(&Command::new("sysbench").arg("--version").output().map(|o| o.stdout).unwrap_or_default()).trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    println!("\n{md}");
    let out_dir = workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&out_dir);
    let _ = std::fs::write(out_dir.join("proxy_vs_haproxy.md"), &md);
}
