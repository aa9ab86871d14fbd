//! The fuzz corpus, replayed: every committed input under `fuzz/corpus/`
//! and `fuzz/regressions/` goes through the same harness functions the
//! AFL++ targets call (`zerodb_proxy::fuzz`), so what fuzzing once found
//! stays fixed and the invariants hold for every input that reached new
//! code.
//!
//! `capture_seed_corpus` (ignored; `scripts/fuzz.sh seeds` runs it)
//! records what real clients and a real MariaDB say to each other through
//! a recording relay and writes it as seeds for the four targets.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use zerodb_proxy::fuzz;
use zerodb_testkit::tap::{Chunk, Tap};
use zerodb_testkit::{MariaDb, BACKEND_PASSWORD, BACKEND_USER};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("client_stream", fuzz::client_stream),
    ("server_response", fuzz::server_response),
    ("sql_text", fuzz::sql_text),
    ("handshake", fuzz::handshake),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[test]
fn committed_fuzz_inputs_keep_their_invariants() {
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "{name}: a corpus is committed");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let bytes = std::fs::read(path).expect("corpus file");
            if catch_unwind(AssertUnwindSafe(|| target(&bytes))).is_err() {
                failed.push(path.display().to_string());
            }
        }
        eprintln!(
            "{name}: {} corpus and {} regression inputs replayed",
            corpus.len(),
            regressions.len()
        );
    }
    assert!(
        failed.is_empty(),
        "inputs that break an invariant: {failed:#?}"
    );
}

/// The harness must be able to fail: inputs built to break each decoder's
/// contract are caught (a split that loses bytes would, a frame after the
/// end would), and well-formed ones pass.
#[test]
fn the_harness_accepts_real_packets() {
    // A COM_QUERY in one frame, then a PING.
    let mut stream = vec![9, 0, 0, 0, 3];
    stream.extend_from_slice(b"SELECT 1");
    stream.extend_from_slice(&[1, 0, 0, 0, 0x0e]);
    fuzz::client_stream(&stream);
    // An OK packet answering a query, on a connection without
    // CLIENT_DEPRECATE_EOF, followed by a second response.
    let ok = [7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
    let mut response = vec![0u8];
    response.extend_from_slice(&ok);
    response.extend_from_slice(&ok);
    fuzz::server_response(&response);
    fuzz::sql_text(b"SET @a = CONNECTION_ID(); SELECT CONNECTION_ID() /* x */");
    fuzz::handshake(&[0; 40]);
}

// ---- seed capture -------------------------------------------------------

const MAX_SEED: usize = 4096;

#[test]
#[ignore = "captures the seed corpus from real clients: scripts/fuzz.sh seeds"]
fn capture_seed_corpus() {
    let out = std::env::var_os("ZERODB_SEEDS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir().join("seeds"));
    let db = MariaDb::start("seeds", 1);
    let tap = Tap::start(&db.addr());
    let port = tap.port.to_string();
    db.sql(
        "CREATE TABLE app.t (id INT PRIMARY KEY, name VARCHAR(20) CHARACTER SET gbk, \
         price DECIMAL(8,2), ratio DOUBLE, at DATETIME(3), data BLOB);
         INSERT INTO app.t VALUES (1, 'one', 1.50, 0.25, '2026-12-04 10:00:00.123', x'00ff'),
           (2, NULL, -3.00, 1e300, NULL, NULL);",
    );
    db.sql_script(
        "DELIMITER //\nCREATE PROCEDURE app.two() BEGIN SELECT 1; SELECT id FROM app.t; END//\n",
    )
    .expect("procedure");
    let csv = std::env::temp_dir().join(format!("zerodb-seeds-{}.csv", std::process::id()));
    std::fs::write(&csv, "3,three\n4,four\n").expect("csv");
    let script = format!(
        "SELECT 1; SELECT * FROM t ORDER BY id; SET NAMES utf8mb4; \
         SET @a = 1, @@session.sql_mode = 'ANSI', autocommit = 0; SET @id = CONNECTION_ID(); \
         BEGIN; UPDATE t SET ratio = ratio + 1 WHERE id = 1; COMMIT; \
         USE app; CALL two(); SELECT CONNECTION_ID(), /* c */ 'str;ing' -- tail\n; \
         KILL QUERY 999999; SHOW WARNINGS; SELECT * FROM missing; \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ',' (id, name); \
         SELECT @@version, NOW(6), 1.5e3; DELETE FROM t WHERE id > 2;",
        csv.display()
    );
    let cli = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            "--local-infile=1",
            "--force",
            "app",
            "-e",
            &script,
        ])
        .arg(format!("-P{port}"))
        .arg(format!("-u{BACKEND_USER}"))
        .arg(format!("-p{BACKEND_PASSWORD}"))
        .output()
        .expect("mariadb");
    eprintln!("mariadb: {}", String::from_utf8_lossy(&cli.stderr));
    for case in [
        "test_prepare_simple",
        "test_long_data",
        "test_fetch_nobuffs",
        "test_cursors_with_union",
        "test_change_user",
        "test_bug17667",
        "test_mdev_26145",
        "test_explain_meta",
        "test_mdev19838",
    ] {
        let _ = Command::new("timeout")
            .args([
                "60",
                "mariadb-client-test",
                "-h127.0.0.1",
                "-uroot",
                "--silent",
            ])
            .arg(format!("-P{port}"))
            .arg(case)
            .output();
    }
    let py = format!(
        r#"
import mysql.connector, pymysql
c = mysql.connector.connect(host="127.0.0.1", port={port}, user="{BACKEND_USER}", password="{BACKEND_PASSWORD}", database="app")
cur = c.cursor(prepared=True)
cur.execute("SELECT id, name, price, ratio, at, data FROM t WHERE id = %s", (1,))
cur.fetchall()
cur.execute("INSERT INTO t (id, name, data) VALUES (%s, %s, %s)", (9, "nine", b"\x00\x01"))
c.rollback()
c.cmd_change_user(username="{BACKEND_USER}", password="{BACKEND_PASSWORD}", database="app")
c.close()
p = pymysql.connect(host="127.0.0.1", port={port}, user="{BACKEND_USER}", password="{BACKEND_PASSWORD}", database="app")
with p.cursor() as k:
    k.execute("SELECT * FROM t WHERE name = %s", ("one",))
    k.fetchall()
p.ping()
p.select_db("mysql")
p.close()
"#
    );
    let py = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    eprintln!("python: {}", String::from_utf8_lossy(&py.stderr));
    let sysbench = |cmd: &str| {
        Command::new("sysbench")
            .args([
                "oltp_read_write",
                "--mysql-host=127.0.0.1",
                "--mysql-db=app",
                "--tables=1",
                "--table-size=20",
                "--events=3",
                "--db-ps-mode=auto",
            ])
            .arg(format!("--mysql-port={port}"))
            .arg(format!("--mysql-user={BACKEND_USER}"))
            .arg(format!("--mysql-password={BACKEND_PASSWORD}"))
            .arg(cmd)
            .output()
            .expect("sysbench")
    };
    sysbench("prepare");
    sysbench("run");
    let _ = std::fs::remove_file(&csv);
    // Connections close asynchronously: let the last bytes be recorded.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut seeds = Seeds::default();
    seeds.mtr_statements();
    for conversation in tap.conversations() {
        seeds.conversation(&conversation);
    }
    for (name, inputs) in &seeds.by_target {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).expect("seed dir");
        for input in inputs {
            let mut h = DefaultHasher::new();
            input.hash(&mut h);
            std::fs::write(dir.join(format!("{:016x}", h.finish())), input).expect("seed");
        }
        eprintln!("{name}: {} seeds in {}", inputs.len(), dir.display());
    }
    for (name, _) in TARGETS {
        assert!(
            seeds.by_target.get(name).is_some_and(|s| s.len() >= 5),
            "{name}: seeds captured"
        );
    }
}

#[derive(Default)]
struct Seeds {
    by_target: std::collections::BTreeMap<&'static str, std::collections::BTreeSet<Vec<u8>>>,
}

/// A physical frame's sequence id and payload.
fn frames(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16;
        let Some(payload) = b.get(4..4 + len) else {
            break;
        };
        out.push((b[3], payload));
        b = &b[4 + len..];
    }
    out
}

impl Seeds {
    fn add(&mut self, target: &'static str, input: Vec<u8>) {
        if !input.is_empty() && input.len() <= MAX_SEED {
            self.by_target.entry(target).or_default().insert(input);
        }
    }

    /// Statements of MariaDB's own test suite that the proxy reads more
    /// than the first word of: SET, USE, KILL, CONNECTION_ID(), executable
    /// comments, several statements in one text.
    fn mtr_statements(&mut self) {
        let main = Path::new("/usr/share/mysql/mysql-test/main");
        let mut picked = 0;
        for test in files(main) {
            if test.extension().is_none_or(|e| e != "test") {
                continue;
            }
            let Ok(text) = std::fs::read(&test) else {
                continue;
            };
            for line in text.split(|&c| c == b'\n') {
                let upper = line.to_ascii_uppercase();
                let wanted = [&b"SET "[..], b"USE ", b"KILL "]
                    .iter()
                    .any(|k| upper.starts_with(k))
                    || [&b"CONNECTION_ID"[..], b"/*!", b"BEGIN NOT ATOMIC"]
                        .iter()
                        .any(|k| upper.windows(k.len()).any(|w| w == *k));
                if wanted && picked < 400 {
                    picked += 1;
                    self.add("sql_text", line.to_vec());
                }
            }
        }
    }

    /// Splits one recorded connection into exchanges (what the client sent,
    /// then what the server answered) and each into seeds.
    fn conversation(&mut self, chunks: &[Chunk]) {
        let mut exchanges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for c in chunks {
            match (exchanges.last_mut(), c.from_client) {
                (Some((_, answer)), false) => answer.extend_from_slice(&c.bytes),
                (Some((ask, answer)), true) if answer.is_empty() => ask.extend_from_slice(&c.bytes),
                (_, true) => exchanges.push((c.bytes.clone(), Vec::new())),
                (None, false) => exchanges.push((Vec::new(), c.bytes.clone())),
            }
        }
        let mut flags = 0u8;
        let mut client_stream = Vec::new();
        for (ask, answer) in &exchanges {
            let commands = frames(ask).iter().filter(|(seq, _)| *seq == 0).count();
            let mut nth = 0;
            for (seq, p) in frames(ask) {
                if seq != 0 {
                    // The handshake response, or an answer to an
                    // authentication switch.
                    self.add("handshake", p.to_vec());
                    if let Some(caps) = p.get(..4) {
                        let caps = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
                        if seq == 1 && caps & (1 << 9) != 0 {
                            flags = deprecate_and_cache(caps, p);
                        }
                    }
                    continue;
                }
                nth += 1;
                let Some(&command) = p.first() else { continue };
                if matches!(command, 0x03 | 0x16) {
                    self.add("sql_text", p[1..].to_vec());
                }
                let kind = match command {
                    0x03 => Some(0),
                    0x17 => Some(
                        1 | if p.get(5).is_some_and(|f| f & 1 != 0) {
                            8
                        } else {
                            0
                        },
                    ),
                    0x1c => Some(2),
                    0x04 => Some(3),
                    0x16 => Some(4),
                    0x01 | 0x18 | 0x19 | 0x11 => None,
                    _ => Some(5),
                };
                // Commands sent together: the answer ends with the last's.
                if let Some(kind) = kind.filter(|_| nth == commands && !answer.is_empty()) {
                    let mut seed = vec![kind | flags];
                    seed.extend_from_slice(answer);
                    self.add("server_response", seed);
                }
            }
            if frames(ask).first().is_some_and(|(seq, _)| *seq == 0) {
                if client_stream.len() + ask.len() > MAX_SEED {
                    self.add("client_stream", std::mem::take(&mut client_stream));
                }
                client_stream.extend_from_slice(ask);
                self.add("client_stream", ask.clone());
            }
        }
        self.add("client_stream", client_stream);
    }
}

/// The server_response flag bits for a connection whose handshake response
/// has `caps`: CLIENT_DEPRECATE_EOF (bit 24) and, for a MariaDB client
/// (CLIENT_MYSQL, bit 0, clear), MARIADB_CLIENT_CACHE_METADATA (bit 4 of the
/// extended capabilities in bytes 28..32).
fn deprecate_and_cache(caps: u32, p: &[u8]) -> u8 {
    let mut flags = 0;
    if caps & (1 << 24) != 0 {
        flags |= 16;
    }
    if caps & 1 == 0 {
        if let Some(ext) = p.get(28..32) {
            if u32::from_le_bytes([ext[0], ext[1], ext[2], ext[3]]) & (1 << 4) != 0 {
                flags |= 32;
            }
        }
    }
    flags
}
