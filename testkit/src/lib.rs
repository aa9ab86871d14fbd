//! Test and benchmark harness: real MariaDB servers on their own datadirs
//! and ports, the real proxy binaries, and real clients (mariadb CLI,
//! sysbench, Python drivers).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BACKEND_USER: &str = "zerodb";
pub const SIGSTOP: i32 = libc::SIGSTOP;
pub const SIGCONT: i32 = libc::SIGCONT;
pub const BACKEND_PASSWORD: &str = "zerodb-pw";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pw";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A scratch directory for this test process.
pub fn scratch(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("zerodb-test-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Whether a server's log says it could not bind its port.
fn port_taken(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("bind on tcp/ip port")
}

/// A TCP port nobody listens on now, handed out once per test process.
///
/// Ports come from below the kernel's ephemeral range: a port the kernel
/// picked for `bind(0)` is one it may pick again a moment later as the
/// local end of any outgoing connection (a client, a backend connection),
/// which then makes the server meant for it fail with "address already in
/// use". Each process starts at its own offset and counts up, so tests
/// running side by side do not share ports either. Another process may
/// still take one first: MariaDB and etcd started here retry on a fresh one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if let Some((lo, hi)) = private_ports() {
        let span = u32::from(hi - lo);
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = lo + ((start + n) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Ports `[lo, hi)` the kernel never hands out as ephemeral ones.
fn private_ports() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (low, high) = (it.next()??, it.next()??);
    if low >= 12_000 {
        Some((10_000, low))
    } else if high <= 63_000 {
        Some((high + 1, 65_535))
    } else {
        None
    }
}

fn need(cmd: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(cmd);
        if p.exists() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("`{cmd}` not found: run scripts/deps.sh (Debian's mariadb-server, mariadb-client, sysbench, etcd-server, etcd-client)");
}

/// A freshly initialised datadir, made once per test process and copied
/// for each server.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = scratch("template");
        let out = Command::new(need("mariadb-install-db"))
            .args([
                "--no-defaults",
                &format!("--datadir={}", dir.display()),
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Options of the servers most tests use: binlog with GTID for
/// replication, room for many connections and 256 MiB packets, and relaxed
/// durability (test data need not survive a power cut).
pub const REPLICATION_OPTIONS: &[&str] = &[
    "--skip-name-resolve",
    "--log-bin=mysql-bin",
    "--log-slave-updates",
    "--binlog-format=ROW",
    "--gtid-strict-mode=1",
    "--max-connections=3000",
    "--max-allowed-packet=256M",
    "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
];

fn child_pid(child: &Option<Child>) -> u32 {
    child.as_ref().map(|c| c.id()).unwrap_or(0)
}

/// Sends `sig` to a child process (a plain kill(2) through the `kill`
/// command: no unsafe code).
fn signal_child(child: &Option<Child>, sig: i32) {
    if let Some(c) = child {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), c.id().to_string()])
            .status();
    }
}

/// SIGKILL and wait.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One mariadbd process.
pub struct MariaDb {
    pub name: String,
    pub port: u16,
    pub server_id: u32,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub data: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl MariaDb {
    /// Starts a server with binlog and GTID on, and the proxy's backend user.
    pub fn start(name: &str, server_id: u32) -> Self {
        Self::start_with(name, server_id, REPLICATION_OPTIONS)
    }

    /// Starts a server with only the essential options (datadir, port,
    /// socket, server id, loopback) plus `extra`.
    pub fn start_with(name: &str, server_id: u32, extra: &[&str]) -> Self {
        let dir = scratch(name);
        let data = dir.join("data");
        Self::start_at(name, server_id, dir, data, extra)
    }

    /// [`MariaDb::start_with`] with the scratch directory `dir` (sockets,
    /// logs; removed on drop) and the datadir `data` chosen by the caller.
    pub fn start_at(
        name: &str,
        server_id: u32,
        dir: PathBuf,
        data: PathBuf,
        extra: &[&str],
    ) -> Self {
        Self::start_on(name, server_id, dir, data, extra, free_port())
    }

    /// [`MariaDb::start_at`], first trying `port`.
    fn start_on(
        name: &str,
        server_id: u32,
        dir: PathBuf,
        data: PathBuf,
        extra: &[&str],
        port: u16,
    ) -> Self {
        if let Some(parent) = data.parent() {
            std::fs::create_dir_all(parent).expect("datadir parent");
        }
        let st = Command::new("cp")
            .args(["-a", &template().to_string_lossy(), &data.to_string_lossy()])
            .status()
            .expect("cp");
        assert!(st.success());
        let mut db = Self {
            name: name.to_string(),
            port,
            server_id,
            socket: dir.join("mysqld.sock"),
            dir,
            data,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        // `free_port()` only says nobody listened a moment ago: another test
        // may take the port before mariadbd binds it. Then go again on a
        // fresh one.
        for attempt in 1..=3 {
            match db.try_spawn() {
                Ok(()) => break,
                Err(log) if attempt < 3 && port_taken(&log) => {
                    eprintln!(
                        "mariadbd {}: port {} taken, starting again on a fresh one",
                        db.name, db.port
                    );
                    db.port = free_port();
                }
                Err(log) => panic!("mariadbd {} exited at start: {log}", db.name),
            }
        }
        db.sql(&format!(
            "CREATE USER '{BACKEND_USER}'@'%' IDENTIFIED BY '{BACKEND_PASSWORD}';
             GRANT ALL ON *.* TO '{BACKEND_USER}'@'%';
             CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
             GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN ON *.* TO 'repl'@'%';
             CREATE DATABASE IF NOT EXISTS app;"
        ));
        db
    }

    /// Starts mariadbd; panics if it ends at start or does not answer.
    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("mariadbd {} exited at start: {log}", self.name);
        }
    }

    /// Starts mariadbd and waits until it answers; `Err(its log)` as soon
    /// as it has ended (e.g. its port was taken); panics if it still does
    /// not answer after 60 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let data = &self.data;
        let log = std::fs::File::create(self.dir.join("mysqld.err")).expect("log file");
        // Its own tmpdir: internal temporary tables of one server never
        // meet another's files (or a cleaner of the shared /tmp).
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("server tmpdir");
        let child = Command::new(need("mariadbd"))
            .args([
                "--no-defaults".to_string(),
                format!("--datadir={}", data.display()),
                format!("--port={}", self.port),
                format!("--socket={}", self.socket.display()),
                format!("--pid-file={}", self.dir.join("mysqld.pid").display()),
                format!("--tmpdir={}", tmp.display()),
                format!("--server-id={}", self.server_id),
                "--bind-address=127.0.0.1".into(),
                "--user=root".into(),
                "--skip-log-error".into(),
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            // Over its own socket: a server that took our port would answer
            // TCP but not there.
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.try_sql("SELECT 1").is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    let log =
                        std::fs::read_to_string(self.dir.join("mysqld.err")).unwrap_or_default();
                    return Err(format!("{status}\n{log}"));
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "mariadbd {} did not start: {}",
                self.name,
                std::fs::read_to_string(self.dir.join("mysqld.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn try_sql(&self, q: &str) -> Result<String, String> {
        let out = Command::new(need("mariadb"))
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-e", q])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Feeds a SQL script to the mariadb CLI as root (DELIMITER works).
    pub fn sql_script(&self, script: &str) -> Result<(), String> {
        use std::io::Write as _;
        let mut child = Command::new(need("mariadb"))
            .args(["--no-defaults", "-uroot", "--batch"])
            .arg(format!("--socket={}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            // A failing statement ends the client early: its stderr says why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL as root over the socket; panics on error.
    pub fn sql(&self, q: &str) -> String {
        self.try_sql(q)
            .unwrap_or_else(|e| panic!("{} on {}: {e}", q, self.name))
    }

    /// Makes this server a GTID replica of `source` and waits until it has
    /// caught up. Both ran the same setup statements, so replication starts
    /// at the source's current position, on a replica with a clean binlog.
    pub fn replicate_from(&self, source: &MariaDb) {
        self.replicate_at(source, source.port);
    }

    /// [`Self::replicate_from`], reaching the source through `relay` (so
    /// that cutting the relay cuts replication too).
    pub fn replicate_through(&self, source: &MariaDb, relay: &relay::Relay) {
        self.replicate_at(source, relay.port);
    }

    fn replicate_at(&self, source: &MariaDb, port: u16) {
        let pos = source.sql("SELECT @@gtid_binlog_pos");
        self.sql(&format!(
            "RESET MASTER; SET GLOBAL gtid_slave_pos = '{pos}';
             CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl',
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE;"
        ));
        self.catch_up(source);
    }

    /// Waits until this replica has applied everything `source` has.
    pub fn catch_up(&self, source: &MariaDb) {
        let pos = source.sql("SELECT @@gtid_binlog_pos");
        let r = self.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"));
        assert_eq!(r, "0", "replica {} did not reach {pos}", self.name);
    }

    pub fn pid(&self) -> u32 {
        child_pid(&self.child)
    }

    pub fn signal(&self, sig: i32) {
        signal_child(&self.child, sig);
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts the server again on its datadir and port (after a kill).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A zeroDB binary (proxy, keeper or agent) running with a config file
/// of its own, logging to `<dir>/<tag>.log`.
pub struct Daemon {
    pub tag: String,
    pub admin_port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `config` and starts `bin --config`; waits until `/health` on
    /// `admin_port` answers 200.
    pub fn start(bin: &Path, tag: &str, config: &str, admin_port: u16) -> Self {
        let mut d = Self::spawn(bin, tag, config, admin_port);
        d.wait_healthy();
        d
    }

    /// Like [`Daemon::start`] without waiting.
    pub fn spawn(bin: &Path, tag: &str, config: &str, admin_port: u16) -> Self {
        let dir = scratch(tag);
        std::fs::write(dir.join("config.yaml"), config).expect("write config");
        let mut d = Self {
            tag: tag.to_string(),
            admin_port,
            dir,
            bin: bin.to_path_buf(),
            child: None,
        };
        d.restart();
        d
    }

    /// Starts the binary again with the same config (after a kill), with
    /// `env` set; the log is appended to.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.tag)))
            .expect("log");
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .env(
                "ZERODB_LOG",
                std::env::var("ZERODB_TEST_LOG")
                    .unwrap_or_else(|_| "info,zerodb_core=debug,zerodb_proxy=debug,zerodb_keeper=debug,zerodb_agent=debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    pub fn wait_healthy(&mut self) {
        let started = Instant::now();
        while self.http_get("/health").map(|(c, _)| c) != Some(200) {
            assert!(self.is_running(), "{} exited: {}", self.tag, self.log());
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} did not start: {}",
                self.tag,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.tag))).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        child_pid(&self.child)
    }

    /// GET on the admin port: (status, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http(self.admin_port, "GET", path, None, None)
    }

    pub fn http_post(&self, path: &str, json: &str) -> Option<(u16, String)> {
        http(self.admin_port, "POST", path, Some(json), None)
    }

    /// GET on the admin port, decoded as JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self
            .http_get(path)
            .unwrap_or_else(|| panic!("{} {path}: no answer", self.tag));
        assert_eq!(code, 200, "{} {path}: {body}", self.tag);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub fn signal(&self, sig: i32) {
        signal_child(&self.child, sig);
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("{} log kept in {}", self.tag, self.dir.display());
        }
    }
}

/// The zerodb-proxy binary, running.
pub struct Proxy {
    pub port: u16,
    pub daemon: Daemon,
}

impl std::ops::Deref for Proxy {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// YAML for a proxy with one dataHost `dh1` (schemas `app`) over `servers`.
pub fn one_datahost_config(servers: &[&MariaDb]) -> String {
    let sources: Vec<String> = servers
        .iter()
        .map(|s| format!("      - {{name: {}, addr: \"{}\"}}", s.name, s.addr()))
        .collect();
    format!(
        "users:\n  - {{name: {APP_USER}, password: {APP_PASSWORD}}}\n  - {{name: other, password: other-pw}}\n\
         datahosts:\n  - name: dh1\n    schemas: [app]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    datasources:\n{}\n\
         health: {{interval: 100ms, timeout: 300ms}}\npool: {{min_idle: 2}}\n",
        sources.join("\n")
    )
}

impl Proxy {
    /// Starts the proxy binary `bin` with `yaml` plus listen/admin on free
    /// ports, and waits for /health.
    pub fn start(bin: &Path, yaml: &str) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let cfg = format!("listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin_port}\n{yaml}");
        Self {
            port,
            daemon: Daemon::start(bin, "proxy", &cfg, admin_port),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        self.json("/status")
    }

    /// Waits until no client session is open (its backend connection has
    /// been given back or closed).
    pub fn wait_idle(&self) {
        crate::cluster::wait_for("the sessions to end", Duration::from_secs(5), || {
            self.status()["sessions"] == 0
        });
    }

    /// Swaps dh1's active datasource through the admin API.
    pub fn swap(&self, datasource: &str, epoch: u64) -> (u16, String) {
        self.http_post(
            "/topology/swap",
            &format!(r#"{{"datahost":"dh1","datasource":"{datasource}","epoch":{epoch}}}"#),
        )
        .expect("swap call")
    }

    /// Runs SQL through the proxy with the mariadb CLI.
    pub fn cli(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        mariadb_cli(self.port, user, password, db, sql)
    }

    /// Runs SQL as the app user; panics on error; returns stdout.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.cli(APP_USER, APP_PASSWORD, "app", sql);
        assert!(
            out.status.success(),
            "{sql}: {}\nproxy log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}

/// Runs SQL with the mariadb CLI over TCP to 127.0.0.1:`port` (batch mode,
/// no column names). Usable from a thread: it borrows nothing.
pub fn mariadb_cli(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Output {
    Command::new(need("mariadb"))
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .arg(format!("-p{password}"))
        .arg(db)
        .args(["-e", sql])
        .output()
        .expect("run mariadb")
}

/// Runs `sql` as the app user through the proxy at `port` on a thread of
/// its own (for a statement that must be running while a test acts).
pub fn app_query_in_background(port: u16, sql: &str) -> std::thread::JoinHandle<Output> {
    let sql = sql.to_string();
    std::thread::spawn(move || mariadb_cli(port, APP_USER, APP_PASSWORD, "app", &sql))
}

/// One HTTP/1.1 request to 127.0.0.1:`port`, with the cluster token as a
/// bearer header when given: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A Python client script run step by step: it prints a line when it has
/// done something and reads a line from stdin before going on.
pub struct Scripted {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Scripted {
    /// Starts `python3 -c script`.
    pub fn start(script: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line it prints ("" once it has ended).
    pub fn line(&mut self) -> String {
        self.lines.next().and_then(Result::ok).unwrap_or_default()
    }

    /// Lets it go on past its next `sys.stdin.readline()`.
    pub fn go(&mut self) {
        writeln!(self.stdin, "go").expect("script stdin");
    }

    /// Waits for it to end; returns its exit status and stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin);
        let status = self.child.wait().expect("wait for the script");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

/// Path of a file under the repository's `tests/` folder.
pub fn repo_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
}

/// Runs sysbench against `port` with extra args; returns its stdout.
pub fn sysbench(port: u16, args: &[&str]) -> Output {
    sysbench_command(port, args).output().expect("run sysbench")
}

/// sysbench's command line for `args` as the app user on `port`.
fn sysbench_command(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(need("sysbench"));
    c.args(args).args([
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={port}"),
        &format!("--mysql-user={APP_USER}"),
        &format!("--mysql-password={APP_PASSWORD}"),
        "--mysql-db=app",
    ]);
    c
}

/// Reads a "name: N" counter from sysbench's report.
pub fn sysbench_count(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in sysbench output:\n{report}"))
}

pub mod certs;
pub mod cluster;
pub mod etcd;
pub mod relay;
pub mod tap;

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports handed out are distinct, bindable, and outside the range the
    /// kernel picks local ports of outgoing connections from.
    #[test]
    fn free_ports_are_distinct_and_never_ephemeral() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        if let Some((lo, hi)) = private_ports() {
            assert!(ports.iter().all(|p| (lo..hi).contains(p)), "{ports:?}");
        }
        for p in &ports[..10] {
            TcpListener::bind(("127.0.0.1", *p)).expect("bindable");
        }
    }

    /// mariadbd on a port another process holds ends at start: the server
    /// comes up on a fresh port at once, without waiting the 60 s timeout.
    #[test]
    fn mariadb_port_taken_at_start_retries_on_a_fresh_port() {
        let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let dir = scratch("squat");
        let data = dir.join("data");
        let started = Instant::now();
        let db = MariaDb::start_on("squat", 1, dir, data, REPLICATION_OPTIONS, taken);
        assert_ne!(db.port, taken);
        assert_eq!(db.sql("SELECT 1"), "1");
        assert_eq!(
            mariadb_cli(db.port, BACKEND_USER, BACKEND_PASSWORD, "app", "SELECT 2")
                .status
                .code(),
            Some(0)
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
    }
}
