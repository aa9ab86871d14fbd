//! MariaDB's own suites as the conformance yardstick: `mariadb-test-run
//! --extern` (SQL tests: text, prepared-statement and compressed protocol) and
//! `mariadb-client-test` (the C API), each run against MariaDB directly and
//! then through zerodb-proxy. A test that passes directly must pass through
//! the proxy, unless `tests/conformance/exclusions.txt` names it with its
//! reason.
//!
//! CI runs the lists in `tests/conformance/`. `ZERODB_CONFORMANCE=full` runs
//! every test of MTR's `main` suite and every client test instead (long) and
//! writes the counts to `target/conformance/full/report.md` (`full-text`:
//! the same with the text protocol only);
//! `ZERODB_CONFORMANCE=main.select,test_fetch_seek` runs just those MTR and
//! client tests, `ZERODB_CONFORMANCE=client-tests` every client test alone.
//! The proxy runs with `auth: backend` (the server's accounts, so tests that
//! create accounts log in as them); `ZERODB_CONFORMANCE_AUTH=static` runs
//! it with its own `users` instead.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const MTR_DIR: &str = "/usr/share/mysql/mysql-test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skipped,
}

fn read_list(name: &str) -> Vec<String> {
    std::fs::read_to_string(repo_tests_dir().join("conformance").join(name))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `exclusions.txt`: `<test> <reason>` lines. A reason many tests share is
/// written once as `@name <text>`; an entry's reason starting with `@name`
/// stands for that text (and may add its own details after it).
fn exclusions() -> BTreeMap<String, String> {
    let split = |l: &str| match l.split_once(char::is_whitespace) {
        Some((a, b)) => (a.to_string(), b.trim().to_string()),
        None => (l.to_string(), String::new()),
    };
    let (shared, entries): (Vec<String>, Vec<String>) = read_list("exclusions.txt")
        .into_iter()
        .partition(|l| l.starts_with('@'));
    let shared: BTreeMap<String, String> = shared.iter().map(|l| split(l)).collect();
    entries
        .iter()
        .map(|l| {
            let (test, why) = split(l);
            let (name, rest) = split(&why);
            let why = match shared.get(&name) {
                Some(text) if rest.is_empty() => text.clone(),
                Some(text) => format!("{text} ({rest})"),
                None => {
                    assert!(
                        !name.starts_with('@'),
                        "exclusions.txt: {name} is not defined"
                    );
                    why
                }
            };
            (test, why)
        })
        .collect()
}

/// The server options mariadb-test-run gives its own servers that tests
/// rely on (include/default_mysqld.cnf).
const MTR_SERVER_OPTIONS: &[&str] = &[
    "--character-set-server=latin1",
    "--collation-server=latin1_swedish_ci",
    "--local-infile",
    "--secure-file-priv=",
    "--log-bin-trust-function-creators=1",
    "--key-buffer-size=1M",
    "--sort-buffer-size=256K",
    "--max-heap-table-size=1M",
    "--plugin-maturity=unknown",
    "--disable-getopt-prefix-matching",
    "--connect-timeout=60",
    "--open-files-limit=1024",
    "--default-storage-engine=myisam",
    "--binlog-direct-non-transactional-updates",
    "--use-stat-tables=preferably",
    "--histogram-type=json_hb",
    "--enable-performance-schema",
    "--innodb-buffer-pool-size=8M",
    "--innodb-log-file-size=10M",
    "--slave-net-timeout=120",
];

/// A server set up as mariadb-test-run sets up its own: MTR's options, the
/// timezone test data, the `test` and `mtr` schemas with MTR's suppression
/// and check procedures, and a passwordless root over TCP.
///
/// The datadir sits where MTR keeps its own server's, `<vardir>/mysqld.1/data`,
/// and `secure_file_priv` is the vardir, because tests reach files through
/// those paths. Returns the server and its vardir.
fn mtr_server(tag: &str) -> (MariaDb, PathBuf) {
    let dir = scratch(tag);
    let vardir = dir.join("var");
    let data = vardir.join("mysqld.1").join("data");
    let secure = format!("--secure-file-priv={}", vardir.display());
    let opts: Vec<&str> = MTR_SERVER_OPTIONS
        .iter()
        .copied()
        .filter(|o| !o.starts_with("--secure-file-priv"))
        .chain([secure.as_str()])
        .collect();
    let db = MariaDb::start_at(tag, 1, dir, data, &opts);
    let share = Path::new("/usr/share/mysql");
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut sql = String::from(
        "CREATE DATABASE IF NOT EXISTS test CHARACTER SET latin1 COLLATE latin1_swedish_ci;\nUSE mysql;\n",
    );
    sql += &read(&share.join("mysql_test_data_timezone.sql"));
    sql += "\nALTER TABLE mysql.gtid_slave_pos ENGINE=Aria transactional=0;\n\
            DELETE FROM mysql.global_priv WHERE user = '';\n\
            DROP USER IF EXISTS zerodb, repl;\n\
            DROP DATABASE IF EXISTS app;\n\
            CREATE DATABASE mtr CHARSET=latin1;\n";
    for f in ["mtr_warnings.sql", "mtr_check.sql"] {
        // As MTR's sql_to_bootstrap: drop `--` lines (some lack the space
        // the server's comment syntax needs), keep the `||` delimiter.
        let text = read(&Path::new(MTR_DIR).join("include").join(f));
        for line in text.lines().filter(|l| !l.trim_start().starts_with("--")) {
            sql += &line.replace("delimiter ||;", "DELIMITER ||");
            sql.push('\n');
        }
        sql += "\nDELIMITER ;\n";
    }
    // Names resolve, as on MTR's servers: a TCP login from 127.0.0.1 is
    // user@localhost, so root needs a (passwordless) TCP login there.
    sql += "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;\n";
    db.sql_script(&sql)
        .unwrap_or_else(|e| panic!("MTR bootstrap: {e}"));
    (db, vardir)
}

fn proxy_in_front_of(db: &MariaDb) -> Proxy {
    // `auth: backend`: clients log in with the server's accounts (the ones
    // the tests create included), each session as its own account.
    // `ZERODB_CONFORMANCE_AUTH=static`: the proxy's own `root` instead.
    let accounts = match std::env::var("ZERODB_CONFORMANCE_AUTH").as_deref() {
        Ok("static") => "users:\n  - {name: root, password: ''}\n",
        _ => "auth: backend\n",
    };
    start_proxy(&format!(
        "{accounts}\
         datahosts:\n  - name: dh1\n    user: root\n    password: ''\n    datasources:\n      - {{name: {}, addr: \"{}\"}}\n\
         max_allowed_packet: 1073741824\n",
        db.name,
        db.addr()
    ))
}

/// How MTR's client speaks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// Statements as text.
    Text,
    /// `--ps-protocol`: statements prepared, then executed.
    Prepared,
    /// `--compress`: statements as text over the compressed protocol.
    Compressed,
}

impl Protocol {
    /// MTR's option for it.
    fn flag(self) -> Option<&'static str> {
        match self {
            Protocol::Text => None,
            Protocol::Prepared => Some("--ps-protocol"),
            Protocol::Compressed => Some("--compress"),
        }
    }

    /// What its runs' directories and regressions are marked with.
    fn mark(self) -> &'static str {
        match self {
            Protocol::Text => "",
            Protocol::Prepared => "ps",
            Protocol::Compressed => "compress",
        }
    }
}

/// What `ZERODB_CONFORMANCE` asks for.
enum Run {
    /// Unset: the lists in `tests/conformance/` (CI).
    Lists,
    /// `full` (both protocols) or `full-text`: all of `main`, every client
    /// test.
    Full { ps: bool },
    /// `client-tests`: every client test, no MTR test.
    ClientTests,
    /// `main.a,test_b`: just those MTR tests and client tests.
    Chosen(Vec<String>),
}

impl Run {
    fn from_env() -> Self {
        match std::env::var("ZERODB_CONFORMANCE")
            .unwrap_or_default()
            .as_str()
        {
            "" => Run::Lists,
            "full" => Run::Full { ps: true },
            "full-text" => Run::Full { ps: false },
            "client-tests" => Run::ClientTests,
            chosen => Run::Chosen(chosen.split(',').map(str::to_string).collect()),
        }
    }
}

/// Where a run keeps its MTR logs and report: `target/conformance/` for the
/// CI lists, `…/full/` and `…/chosen/` for the other runs, so that one run
/// does not overwrite the logs of another going on at the same time.
fn report_dir() -> PathBuf {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance");
    match Run::from_env() {
        Run::Full { .. } => dir.push("full"),
        Run::Chosen(_) | Run::ClientTests => dir.push("chosen"),
        Run::Lists => {}
    }
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn mtr(
    port: u16,
    vardir: &Path,
    tests: &[String],
    proto: Protocol,
) -> (BTreeMap<String, Outcome>, String) {
    // MTR writes its logs there; with --extern it will not create them.
    for sub in ["log", "tmp"] {
        let _ = std::fs::create_dir_all(vardir.join(sub));
    }
    let mut cmd = Command::new("perl");
    cmd.current_dir(MTR_DIR)
        .arg("mariadb-test-run.pl")
        .arg(format!("--vardir={}", vardir.display()))
        .args([
            "--extern",
            "host=127.0.0.1",
            "--extern",
            &format!("port={port}"),
            "--extern",
            "user=root",
            "--extern",
            "protocol=tcp",
            "--force",
            "--max-test-fail=0",
            "--retry=0",
            "--testcase-timeout=3",
            "--nocheck-testcases",
            "--parallel=1",
        ]);
    cmd.args(proto.flag());
    cmd.args(tests);
    let out = cmd.output().expect("run mariadb-test-run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut r = BTreeMap::new();
    for line in text.lines() {
        let outcome = if line.contains("[ pass ]") {
            Outcome::Pass
        } else if line.contains("[ fail ]") {
            Outcome::Fail
        } else if line.contains("[ skipped ]") {
            Outcome::Skipped
        } else {
            continue;
        };
        if let Some(name) = line.split_whitespace().next() {
            r.insert(name.to_string(), outcome);
        }
    }
    (r, text)
}

fn client_tests_all() -> Vec<String> {
    let out = Command::new("mariadb-client-test")
        .arg("-T")
        .output()
        .expect("mariadb-client-test -T");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("test_") || w.starts_with("client_"))
        .map(str::to_string)
        .collect()
}

fn client_test(port: u16, name: &str) -> Outcome {
    let out = Command::new("timeout")
        .args([
            "120",
            "mariadb-client-test",
            "-h127.0.0.1",
            "-uroot",
            "--silent",
        ])
        .arg(format!("-P{port}"))
        .arg(name)
        .output()
        .expect("mariadb-client-test");
    if out.status.success() {
        Outcome::Pass
    } else {
        // Kept for reading: the report directory, by test and port.
        let log = report_dir().join(format!("{name}-{port}.txt"));
        let _ = std::fs::write(log, [out.stdout, out.stderr].concat());
        Outcome::Fail
    }
}

fn count(r: &BTreeMap<String, Outcome>, o: Outcome) -> usize {
    r.values().filter(|x| **x == o).count()
}

/// The tests of MTR's `main` suite, as `main.<name>`.
fn main_suite() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(MTR_DIR).join("main"))
        .expect("MTR's main suite")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(format!("main.{}", name.strip_suffix(".test")?))
        })
        .collect();
    names.sort();
    names
}

/// What a test's text, and the files it sources, show it does to the
/// server that `--extern` cannot undo: it shuts the server down, kills or
/// crashes it, or restarts it with other options. Such tests would take the
/// server away from every test after them; neither run gets them.
fn restarts_the_server(test: &str) -> bool {
    const MARKS: &[&str] = &[
        "restart_mysqld",
        "shutdown_server",
        "shutdown_mysqld",
        "kill_mysqld",
        "kill_and_restart",
        "crash_mysqld",
        "expect_crash",
        "start_mysqld",
        "mysqladmin_shutdown",
        "rpl_restart_server",
    ];
    let name = test.trim_start_matches("main.");
    let mut files = vec![Path::new(MTR_DIR).join("main").join(format!("{name}.test"))];
    let mut seen = BTreeSet::new();
    while let Some(file) = files.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        // Comments say what other files do ("--shutdown_server" in an
        // example), not what this one does.
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let stmt = line.trim_start_matches("--send").trim_start();
            if stmt == "shutdown;" || stmt == "shutdown" || MARKS.iter().any(|m| line.contains(m)) {
                return true;
            }
            // `--source path` and `source path;`, with MTR's own paths
            // (relative to its directory or to the test's suite).
            if let Some(path) = line.trim_start_matches("--").strip_prefix("source ") {
                let path = path.trim().trim_end_matches(';').trim();
                if !path.contains('$') {
                    files.push(Path::new(MTR_DIR).join(path));
                    files.push(Path::new(MTR_DIR).join("main").join(path));
                }
            }
        }
    }
    false
}

/// One side of a run (direct, or through the proxy): tests in batches on a
/// server of its own set up as MTR's. Before each batch the server is put
/// back as it was set up (MTR's own servers are checked and restarted for
/// this): a failing test can leave tables, users, schemas and changed global
/// variables behind. A batch that leaves the server dead is run once more on
/// a restarted server. MTR's output goes to `target/conformance/<tag>.txt`
/// as it comes.
struct Side {
    db: MariaDb,
    vardir: PathBuf,
    proxy: Option<Proxy>,
    log: std::fs::File,
    baseline: Baseline,
}

/// What a test may change on the server and [`Side`] puts back.
#[derive(Default)]
struct Baseline {
    globals: BTreeMap<String, String>,
    users: BTreeSet<(String, String)>,
    schemas: BTreeSet<String>,
}

impl Baseline {
    fn read(db: &MariaDb) -> Self {
        let rows = |q: &str| -> Vec<Vec<String>> {
            db.try_sql(q)
                .unwrap_or_default()
                .lines()
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect()
        };
        let pair = |mut r: Vec<String>| (r.remove(0), r.pop().unwrap_or_default());
        Baseline {
            globals: rows("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME NOT LIKE 'GTID%'")
                .into_iter()
                .filter(|r| r.len() == 2)
                .map(pair)
                .collect(),
            users: rows("SELECT User, Host FROM mysql.global_priv")
                .into_iter()
                .filter(|r| r.len() == 2)
                .map(pair)
                .collect(),
            schemas: rows("SHOW DATABASES")
                .into_iter()
                .filter_map(|mut r| r.pop())
                .collect(),
        }
    }

    /// The statements that turn the server as it is now (`now`) back into
    /// this baseline.
    fn restore_from(&self, now: &Baseline) -> Vec<String> {
        let ident = |s: &str| format!("`{}`", s.replace('`', "``"));
        let text = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut sql = Vec::new();
        for (name, value) in &self.globals {
            if now.globals.get(name).is_some_and(|v| v != value) {
                let v = if value.parse::<f64>().is_ok() {
                    value.clone()
                } else {
                    text(value)
                };
                sql.push(format!("SET GLOBAL {name} = {v}"));
            }
        }
        for (user, host) in now.users.difference(&self.users) {
            // A role is a name without a host (`DROP ROLE 'r'@''` is a
            // syntax error).
            sql.push(if host.is_empty() {
                format!("DROP ROLE IF EXISTS {}", text(user))
            } else {
                format!("DROP USER IF EXISTS {}@{}", text(user), text(host))
            });
        }
        for schema in now.schemas.difference(&self.schemas) {
            sql.push(format!("DROP DATABASE IF EXISTS {}", ident(schema)));
        }
        sql
    }
}

impl Side {
    fn start(tag: &str, proxied: bool) -> Self {
        let (db, vardir) = mtr_server(&format!("mtr_{tag}"));
        let proxy = proxied.then(|| proxy_in_front_of(&db));
        let path = report_dir().join(format!("{tag}.txt"));
        let log =
            std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let baseline = Baseline::read(&db);
        Side {
            db,
            vardir,
            proxy,
            log,
            baseline,
        }
    }

    /// Puts the server back as it was set up; the `test` schema is made
    /// anew. XA transactions a test left prepared are rolled back first:
    /// they outlive their connection and hold their tables' locks. A
    /// statement that fails (a variable that cannot be set back) or waits
    /// for a lock longer than 10 s is skipped.
    fn restore(&self) {
        let prepared = self
            .db
            .try_sql("XA RECOVER FORMAT='SQL'")
            .unwrap_or_default();
        let mut sql: Vec<String> = prepared
            .lines()
            .filter_map(|l| l.split('\t').nth(3))
            .map(|xid| format!("XA ROLLBACK {xid}"))
            .collect();
        sql.extend(self.baseline.restore_from(&Baseline::read(&self.db)));
        sql.push("DROP DATABASE IF EXISTS test".into());
        sql.push("CREATE DATABASE test CHARACTER SET latin1".into());
        for q in sql {
            let _ = self
                .db
                .try_sql(&format!("SET SESSION lock_wait_timeout = 10; {q}"));
        }
    }

    fn port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.db.port, |p| p.port)
    }

    fn note(&mut self, text: &str) {
        use std::io::Write as _;
        let _ = self.log.write_all(text.as_bytes());
    }

    fn batch(&mut self, tests: &[String], proto: Protocol) -> BTreeMap<String, Outcome> {
        let mut result = BTreeMap::new();
        for attempt in 1..=2 {
            self.restore();
            let text;
            (result, text) = mtr(self.port(), &self.vardir, tests, proto);
            self.note(&text);
            if self.db.try_sql("SELECT 1").is_ok() {
                break;
            }
            self.note(&format!(
                "\n*** the server died during this batch (attempt {attempt}); restarted\n"
            ));
            self.db.restart();
        }
        result
    }

    fn run(
        &mut self,
        tests: &[String],
        batch: usize,
        proto: Protocol,
    ) -> BTreeMap<String, Outcome> {
        tests
            .chunks(batch)
            .flat_map(|chunk| self.batch(chunk, proto))
            .collect()
    }

    /// Runs one test by itself.
    fn alone(&mut self, test: &str, proto: Protocol) -> Outcome {
        self.note(&format!("\n*** {test} alone\n"));
        let r = self.batch(&[test.to_string()], proto);
        r.get(test).copied().unwrap_or(Outcome::Fail)
    }
}

/// `tests` directly and through the proxy, side by side (two servers, two
/// MTR processes), `batch` tests per MTR run. A test that passed directly
/// but not through the proxy is run again by itself on both sides: it
/// counts as a regression only if it then passes directly and fails through
/// the proxy, so one test's leftovers in a batch cannot pass for the
/// proxy's fault.
fn side_by_side(
    tests: &[String],
    batch: usize,
    proto: Protocol,
    label: &str,
    excluded: &BTreeMap<String, String>,
    report: &mut String,
    notes: &mut String,
) -> Vec<String> {
    let sfx = match proto.mark() {
        "" => String::new(),
        mark => format!("-{mark}"),
    };
    let (mut direct_run, mut proxy_run) = std::thread::scope(|s| {
        let d = s.spawn(|| Side::start(&format!("direct{sfx}"), false));
        let p = s.spawn(|| Side::start(&format!("proxy{sfx}"), true));
        (
            d.join().expect("direct server"),
            p.join().expect("proxied server"),
        )
    });
    let (direct, proxied) = std::thread::scope(|s| {
        let d = s.spawn(|| direct_run.run(tests, batch, proto));
        let p = s.spawn(|| proxy_run.run(tests, batch, proto));
        (
            d.join().expect("direct run"),
            p.join().expect("proxied run"),
        )
    });
    assert!(
        count(&direct, Outcome::Pass) > 0,
        "{label}: nothing passed directly; is the server set up like MTR's?"
    );
    let suspects: Vec<&String> = direct
        .iter()
        .filter(|(t, o)| {
            **o == Outcome::Pass
                && proxied.get(*t) != Some(&Outcome::Pass)
                && !excluded.contains_key(*t)
        })
        .map(|(t, _)| t)
        .collect();
    let excluded_passing: Vec<&str> = proxied
        .iter()
        .filter(|(t, o)| **o == Outcome::Pass && excluded.contains_key(*t))
        .map(|(t, _)| t.as_str())
        .collect();
    if !excluded_passing.is_empty() {
        notes.push_str(&format!(
            "\n{label}: excluded, yet passing through zeroDB in this run: {}\n",
            excluded_passing.join(", ")
        ));
    }
    // Both sides re-run the suspects at the same time, each on its own
    // server, as the batches were.
    let (direct_alone, proxy_alone): (Vec<Outcome>, Vec<Outcome>) = std::thread::scope(|s| {
        let d = s.spawn(|| {
            suspects
                .iter()
                .map(|t| direct_run.alone(t, proto))
                .collect()
        });
        let p = s.spawn(|| suspects.iter().map(|t| proxy_run.alone(t, proto)).collect());
        (
            d.join().expect("direct re-runs"),
            p.join().expect("proxied re-runs"),
        )
    });
    let mut reg = Vec::new();
    let mut batch_only = Vec::new();
    for ((t, d), p) in suspects.iter().zip(direct_alone).zip(proxy_alone) {
        if d == Outcome::Pass && p != Outcome::Pass {
            reg.push(match proto.mark() {
                "" => t.to_string(),
                mark => format!("{t} ({mark})"),
            });
        } else {
            batch_only.push(format!("{t} (alone: direct {d:?}, proxy {p:?})"));
        }
    }
    report.push_str(&format!(
        "| {label} ({} tests) | {} / {} / {} | {} / {} / {} | {} |\n",
        tests.len(),
        count(&direct, Outcome::Pass),
        count(&direct, Outcome::Fail),
        count(&direct, Outcome::Skipped),
        count(&proxied, Outcome::Pass),
        count(&proxied, Outcome::Fail),
        count(&proxied, Outcome::Skipped),
        reg.len()
    ));
    if !batch_only.is_empty() {
        notes.push_str(&format!(
            "\n{label}: passed directly but not through the proxy in the batch run, and not a regression when run alone:\n"
        ));
        for b in batch_only {
            notes.push_str(&format!("- {b}\n"));
        }
    }
    reg
}

#[test]
fn mariadb_suites_pass_through_the_proxy() {
    assert!(
        Path::new(MTR_DIR).join("mariadb-test-run.pl").exists(),
        "Debian's mariadb-test package is needed (scripts/deps.sh installs it)"
    );
    let run = Run::from_env();
    let excluded = exclusions();
    let mut report = String::from("| run | direct pass / fail / skipped | through zeroDB pass / fail / skipped | regressions |\n|---|---|---|---|\n");
    let mut notes = String::new();
    let mut regressions = BTreeSet::new();
    let protocols: &[Protocol] = match run {
        Run::Full { ps: false } => &[Protocol::Text],
        Run::Full { ps: true } => &[Protocol::Text, Protocol::Prepared],
        _ => &[Protocol::Text, Protocol::Prepared, Protocol::Compressed],
    };
    let (tests, batch, client_tests) = match run {
        Run::Full { .. } => {
            let (restarting, tests): (Vec<String>, Vec<String>) = main_suite()
                .into_iter()
                .partition(|t| restarts_the_server(t));
            notes.push_str(&format!(
                "\nNot run: {} tests that shut down, kill or restart the server, which `--extern` cannot give back.\n",
                restarting.len()
            ));
            (tests, 40, client_tests_all())
        }
        Run::ClientTests => (Vec::new(), 1, client_tests_all()),
        Run::Chosen(names) => {
            let (mtr, client): (Vec<String>, Vec<String>) =
                names.into_iter().partition(|t| t.contains('.'));
            (mtr, 1, client)
        }
        Run::Lists => (read_list("fast.list"), 1, read_list("client_tests.list")),
    };
    for &proto in protocols.iter().filter(|_| !tests.is_empty()) {
        let label = match proto.flag() {
            Some(flag) => format!("mariadb-test-run {flag}"),
            None => "mariadb-test-run".to_string(),
        };
        regressions.extend(side_by_side(
            &tests,
            batch,
            proto,
            &label,
            &excluded,
            &mut report,
            &mut notes,
        ));
    }

    let (db, _) = mtr_server("client_tests");
    let proxy = proxy_in_front_of(&db);
    let (mut d_pass, mut p_pass, mut reg) = (0, 0, Vec::new());
    for t in &client_tests {
        let d = client_test(db.port, t);
        if d != Outcome::Pass {
            continue;
        }
        d_pass += 1;
        if client_test(proxy.port, t) == Outcome::Pass {
            p_pass += 1;
        } else if !excluded.contains_key(t) {
            reg.push(t.clone());
        }
    }
    report.push_str(&format!(
        "| mariadb-client-test ({} cases) | {d_pass} pass | {p_pass} pass | {} |\n",
        client_tests.len(),
        reg.len()
    ));
    regressions.extend(reg);
    report.push_str(&notes);
    if !excluded.is_empty() {
        report.push_str("\nExcluded:\n");
        for (t, why) in &excluded {
            report.push_str(&format!("- {t}: {why}\n"));
        }
    }
    eprintln!("{report}");
    let _ = std::fs::write(report_dir().join("report.md"), &report);
    assert!(
        regressions.is_empty(),
        "pass directly, fail through zerodb-proxy: {regressions:?}\n{report}\nproxy log: {}",
        proxy.dir.display()
    );
}

#[test]
fn tests_that_restart_the_server_are_told_by_what_they_source() {
    // Restarts from an include of the binlog suite, not its own text.
    assert!(restarts_the_server("main.xa_prepared_binlog_off"));
    assert!(restarts_the_server("main.shutdown"));
    // Sources search_pattern_in_file.inc, whose comments show
    // "--shutdown_server" as an example.
    assert!(!restarts_the_server("main.view"));
    assert!(!restarts_the_server("main.select"));
}
