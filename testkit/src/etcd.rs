//! A real etcd cluster for tests: `n` members of Debian's `etcd` on
//! loopback, each with a client and a peer port of its own and its data on
//! tmpfs, started by the test and killed, paused, restarted or wiped by it.
//!
//! Timings are those of fast failover tests: heartbeat 100 ms, election
//! timeout 500 ms. etcd's smallest lease TTL is then 1 s (it raises a TTL
//! to at least 1.5 election timeouts, rounded up to the second).

use crate::{free_port, kill_child, need, port_taken, scratch, signal_child};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long [`EtcdCluster::start`] and [`EtcdCluster::wipe`] wait for a
/// healthy cluster.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at starting a member whose port another process took.
const PORT_ATTEMPTS: u32 = 3;

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// One etcd process: its ports stay the same across restarts and wipes.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Holds `data/` (etcd's `--data-dir`) and `etcd.log`.
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Length of the log when the process was started.
    log_start: usize,
}

impl Member {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The last `lines` lines of its log.
    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What the current process has logged.
    fn log_since_spawn(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_start..).unwrap_or_default()).into_owned()
    }

    /// Whether the current process has bound its peer and client ports: etcd
    /// logs this once both listeners are open (and ends if a bind fails).
    fn bound(&self) -> bool {
        self.log_since_spawn()
            .contains("\"starting an etcd server\"")
    }

    /// Whether its process has ended (reaps it if so).
    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Why members did not come up.
enum StartError {
    /// Member `i` ended at start; its port was taken by another process.
    PortTaken(usize),
    /// Member `i` ended at start for another reason.
    Exited(usize),
}

/// A running etcd cluster (v3 API), members `0..n`. Dropping it kills every
/// member and removes their directories.
pub struct EtcdCluster {
    tag: String,
    /// Bumped at each (re)creation: every fresh cluster has its own token.
    generation: u32,
    seq: u32,
    members: Vec<Member>,
    /// `(user, password)` once [`EtcdCluster::enable_auth`] ran; root has
    /// the same password.
    auth: Option<(String, String)>,
}

fn etcd_bin() -> String {
    need("etcd")
}

/// Directory for member `i`: on tmpfs when there is one, so that a disk
/// stall cannot delay etcd's fsyncs past its election timeout.
fn member_dir(tag: &str, seq: u32, i: usize) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        remove_stale_dirs(shm);
        let dir = shm.join(format!(
            "zerodb-etcd-{tag}-{}-{seq}-{i}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(&dir).is_ok() {
            return dir;
        }
    }
    scratch(&format!("etcd-{tag}-{i}"))
}

/// Removes the /dev/shm directories of test processes that are gone (killed
/// before their `Drop` ran): tmpfs is memory. Once per process.
fn remove_stale_dirs(shm: &Path) {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(shm) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("zerodb-etcd-") {
                continue;
            }
            // zerodb-etcd-<tag>-<pid>-<seq>-<i>: the pid is third from the end.
            let pid = name.rsplit('-').nth(2).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
}

impl EtcdCluster {
    /// Starts `n` members as a new cluster and waits until every one of them
    /// is healthy. Panics, with the tail of every member's log, if that
    /// takes more than 30 s or a member ends. A member whose port another
    /// process took meanwhile is started again with fresh ports.
    pub fn start(tag: &str, n: usize) -> Self {
        let ports = (0..n).map(|_| (free_port(), free_port())).collect();
        Self::start_on(tag, ports)
    }

    /// [`EtcdCluster::start`] with the first attempt's (client, peer) ports.
    fn start_on(tag: &str, ports: Vec<(u16, u16)>) -> Self {
        assert!(!ports.is_empty(), "an etcd cluster needs a member");
        let seq = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let members = ports
            .into_iter()
            .enumerate()
            .map(|(i, (client_port, peer_port))| Member {
                name: format!("m{i}"),
                client_port,
                peer_port,
                dir: member_dir(tag, seq, i),
                child: None,
                paused: false,
                log_start: 0,
            })
            .collect();
        let mut c = Self {
            tag: tag.to_string(),
            generation: 0,
            seq,
            members,
            auth: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match c.create() {
                Ok(()) => return c,
                Err(StartError::PortTaken(i)) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "etcd {} member {i}: port taken, starting again on fresh ports",
                        c.tag
                    );
                    c.stop_all();
                    for m in &mut c.members {
                        m.client_port = free_port();
                        m.peer_port = free_port();
                    }
                }
                Err(StartError::PortTaken(i) | StartError::Exited(i)) => c.fail_exited(i),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Kills every member, empties every data dir and starts them all as a
    /// new cluster with a new token, then waits until it is healthy.
    fn create(&mut self) -> Result<(), StartError> {
        self.stop_all();
        self.generation += 1;
        self.auth = None;
        for i in 0..self.members.len() {
            self.spawn(i, "new");
        }
        self.wait_until("the cluster to be healthy", START_TIMEOUT, |c| {
            c.members.iter().all(Member::bound) && c.health_check()
        })
    }

    /// Kills every member and removes its data (its log stays).
    fn stop_all(&mut self) {
        for m in &mut self.members {
            kill_child(&mut m.child);
            m.paused = false;
            let _ = std::fs::remove_dir_all(m.data());
        }
    }

    fn token(&self) -> String {
        format!(
            "zerodb-{}-{}-{}-{}",
            self.tag,
            std::process::id(),
            self.seq,
            self.generation
        )
    }

    /// Starts member `i`'s process; `state` is `new` or `existing`.
    fn spawn(&mut self, i: usize, state: &str) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = self.token();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir)
            .unwrap_or_else(|e| panic!("etcd dir {}: {e}", m.dir.display()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_path())
            .unwrap_or_else(|e| panic!("etcd log {}: {e}", m.log_path().display()));
        m.log_start = log
            .metadata()
            .map(|md| md.len() as usize)
            .unwrap_or_default();
        let child = Command::new(etcd_bin())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.data())
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            // Fast failover: a dead leader is replaced within ~0.5-1 s and a
            // lease TTL may be 1 s.
            .args(["--heartbeat-interval", "100", "--election-timeout", "500"])
            // A paused or restarted member does not bump the term and depose
            // a healthy leader when it comes back (each election renews
            // every lease). The default from etcd 3.5 on.
            .args(["--pre-vote=true"])
            // zap: 3.4's default capnslog warns it is deprecated. stderr
            // goes to the log file, Go panics included.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCD_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start etcd member {i}: {e}"));
        m.child = Some(child);
        m.paused = false;
    }

    /// Polls `ok` every 100 ms until it holds; fails as soon as a member
    /// that should run has ended; panics with the logs after `limit`.
    fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut ok: impl FnMut(&Self) -> bool,
    ) -> Result<(), StartError> {
        let started = Instant::now();
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if m.exited() {
                    return Err(if port_taken(&m.log_since_spawn()) {
                        StartError::PortTaken(i)
                    } else {
                        StartError::Exited(i)
                    });
                }
            }
            if ok(self) {
                return Ok(());
            }
            if started.elapsed() > limit {
                panic!(
                    "etcd {}: timed out after {limit:?} waiting for {what}\n{}",
                    self.tag,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fail_exited(&mut self, i: usize) -> ! {
        let status = self.members[i]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        panic!(
            "etcd {} member {i} exited at start ({status:?})\n{}",
            self.tag,
            self.logs()
        )
    }

    /// `etcdctl endpoint health` on every running member (as root once auth
    /// is on: etcd 3.4 counts "user name is empty" as unhealthy).
    fn health_check(&self) -> bool {
        self.admin(&[
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "endpoint",
            "health",
        ])
        .status
        .success()
    }

    /// [`EtcdCluster::etcdctl`] as root once auth is on.
    fn admin(&self, args: &[&str]) -> Output {
        match &self.auth {
            Some((_, pw)) => self.etcdctl_as("root", pw, args),
            None => self.etcdctl(args),
        }
    }

    /// The member that is etcd's raft leader now, as the running members
    /// see it (`etcdctl endpoint status`); `None` without a leader. Of two
    /// members that both think they lead (one cut off), the one of the
    /// higher term.
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() || m.paused {
                continue;
            }
            let endpoint = format!("--endpoints=127.0.0.1:{}", m.client_port);
            let out = self.admin(&[
                &endpoint,
                "--dial-timeout=1s",
                "--command-timeout=1s",
                "endpoint",
                "status",
                "-w",
                "json",
            ]);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            let st = &v[0]["Status"];
            let (Some(me), Some(lead), Some(term)) = (
                st["header"]["member_id"].as_u64(),
                st["leader"].as_u64(),
                st["raftTerm"].as_u64(),
            ) else {
                continue;
            };
            if me == lead && best.is_none_or(|(t, _)| term > t) {
                best = Some((term, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// The tail of every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "--- etcd member {i} ({}) log tail:\n{}",
                    m.log_path().display(),
                    m.log_tail(30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has a member at least.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client address, `127.0.0.1:port`, in member order
    /// (whether it runs or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// [`EtcdCluster::endpoints`] joined with commas.
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Member `i`'s process id (0 when killed).
    pub fn pid(&self, i: usize) -> u32 {
        crate::child_pid(&self.members[i].child)
    }

    /// SIGKILLs member `i` and waits for it to end (no-op if not running).
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        kill_child(&mut m.child);
        m.paused = false;
    }

    /// SIGSTOPs member `i`: it holds its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) {
        signal_child(&self.members[i].child, libc::SIGSTOP);
        self.members[i].paused = true;
    }

    /// SIGCONTs member `i` after [`EtcdCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        signal_child(&self.members[i].child, libc::SIGCONT);
        self.members[i].paused = false;
    }

    /// Whether member `i`'s process is alive (paused counts as alive).
    pub fn is_running(&mut self, i: usize) -> bool {
        let m = &mut self.members[i];
        m.child.is_some() && !m.exited()
    }

    /// Starts member `i` again (killing it first if it runs) on its ports
    /// and data dir, and waits until it has bound them. It does not wait for
    /// a quorum: see [`EtcdCluster::wait_healthy`]. Panics with the logs if
    /// it ends at start (after two more tries if its port was taken).
    pub fn restart(&mut self, i: usize) {
        for attempt in 1..=PORT_ATTEMPTS {
            self.kill(i);
            self.spawn(i, "existing");
            let up = self.wait_until(
                &format!("member {i} to bind its ports"),
                START_TIMEOUT,
                |c| c.members[i].bound(),
            );
            match up {
                Ok(()) => return,
                // Taken while it was down, maybe by another test's
                // `free_port()` probe: that one lets go soon.
                Err(StartError::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(StartError::PortTaken(j) | StartError::Exited(j)) => self.fail_exited(j),
            }
        }
    }

    /// Waits until every running (not paused) member answers
    /// `etcdctl endpoint health` (a quorum read); panics after 30 s.
    pub fn wait_healthy(&mut self) {
        if let Err(StartError::PortTaken(i) | StartError::Exited(i)) =
            self.wait_until("the running members to be healthy", START_TIMEOUT, |c| {
                c.health_check()
            })
        {
            self.fail_exited(i)
        }
    }

    /// "etcd lost its data": kills every member, deletes every data dir and
    /// starts them all as a fresh, empty cluster (new token, no auth) on the
    /// same ports; waits until it is healthy.
    pub fn wipe(&mut self) {
        for attempt in 1..=PORT_ATTEMPTS {
            match self.create() {
                Ok(()) => return,
                Err(StartError::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(StartError::PortTaken(i) | StartError::Exited(i)) => self.fail_exited(i),
            }
        }
    }

    /// Turns authentication on. Creates `root` (password `password`, role
    /// `root`) and, unless `user` is `root`, `user` (password `password`)
    /// with a role of its name granting readwrite on the whole key space;
    /// then `auth enable`. Clients must then log in: use `user`/`password`
    /// (e.g. [`EtcdCluster::etcdctl_as`]); `root` is for admin commands.
    /// A [`EtcdCluster::wipe`] turns it off again.
    pub fn enable_auth(&mut self, user: &str, password: &str) {
        let pw = format!("--new-user-password={password}");
        let mut steps: Vec<Vec<&str>> = vec![
            vec!["user", "add", "root", &pw],
            vec!["role", "add", "root"],
            vec!["user", "grant-role", "root", "root"],
        ];
        if user != "root" {
            steps.extend([
                vec!["user", "add", user, &pw],
                vec!["role", "add", user],
                // Key "" with --prefix: from the first key to the end.
                vec![
                    "role",
                    "grant-permission",
                    user,
                    "--prefix=true",
                    "readwrite",
                    "",
                ],
                vec!["user", "grant-role", user, user],
            ]);
        }
        steps.push(vec!["auth", "enable"]);
        for args in steps {
            let out = self.etcdctl(&args);
            assert!(
                out.status.success(),
                "etcdctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.auth = Some((user.to_string(), password.to_string()));
    }

    /// Runs `etcdctl` (v3 API) with `args` against every member that runs
    /// and is not paused (all of them if none is; `--endpoints` in `args`
    /// overrides), without credentials. A write in flight when the leader
    /// dies or stops is lost and fails at `--command-timeout` (5 s by
    /// default): pass a shorter one and retry where a test expects a new
    /// leader.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some() && !m.paused)
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        let endpoints = if running.is_empty() {
            self.endpoints_csv()
        } else {
            running.join(",")
        };
        let mut cmd = Command::new(need("etcdctl"));
        cmd.env("ETCDCTL_API", "3");
        if !args.iter().any(|a| a.starts_with("--endpoints")) {
            cmd.arg(format!("--endpoints={endpoints}"));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run etcdctl: {e}"))
    }

    /// [`EtcdCluster::etcdctl`] as `user` (`--user user:password`).
    pub fn etcdctl_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        let u = format!("--user={user}:{password}");
        let mut all = vec![u.as_str()];
        all.extend_from_slice(args);
        self.etcdctl(&all)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for m in &mut self.members {
            kill_child(&mut m.child);
            if panicking {
                // tmpfs is memory: keep only the log.
                let _ = std::fs::remove_dir_all(m.data());
                eprintln!("etcd log kept in {}", m.log_path().display());
            } else {
                let _ = std::fs::remove_dir_all(&m.dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member whose client port another process holds ends at start; the
    /// cluster comes up on fresh ports instead of timing out.
    #[test]
    fn port_taken_at_start_retries_on_fresh_ports() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let started = Instant::now();
        let c = EtcdCluster::start_on("squat", vec![(taken, free_port())]);
        assert!(!c.endpoints()[0].ends_with(&format!(":{taken}")));
        let out = c.etcdctl(&["put", "k", "v"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
}
