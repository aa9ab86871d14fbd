//! MariaDB's own suites as the conformance yardstick: `mariadb-test-run
//! --extern` (SQL tests, text and prepared-statement protocol) and
//! `mariadb-client-test` (the C API), each run against MariaDB directly and
//! then through zerodb-proxy. A test that passes directly must pass through
//! the proxy, unless `tests/conformance/exclusions.txt` names it with its
//! reason.
//!
//! CI runs the lists in `tests/conformance/`. `ZERODB_CONFORMANCE=full` runs
//! every test of MTR's `main` suite and every client test instead (long) and
//! writes the counts to `target/conformance/report.md`.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
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

fn exclusions() -> BTreeMap<String, String> {
    read_list("exclusions.txt")
        .into_iter()
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((t, why)) => (t.to_string(), why.trim().to_string()),
            None => (l, String::new()),
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
];

fn mtr(port: u16, tests: &[String], ps: bool, tag: &str) -> BTreeMap<String, Outcome> {
    let vardir = scratch(tag);
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
    if ps {
        cmd.arg("--ps-protocol");
    }
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
    let _ = std::fs::write(vardir.join("mtr-output.txt"), &text);
    r
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
        Outcome::Fail
    }
}

fn count(r: &BTreeMap<String, Outcome>, o: Outcome) -> usize {
    r.values().filter(|x| **x == o).count()
}

#[test]
fn mariadb_suites_pass_through_the_proxy() {
    assert!(
        Path::new(MTR_DIR).join("mariadb-test-run.pl").exists(),
        "Debian's mariadb-test package is needed (scripts/deps.sh installs it)"
    );
    let full = std::env::var("ZERODB_CONFORMANCE").is_ok_and(|v| v == "full");
    let db = MariaDb::start_with("mtr", 1, MTR_SERVER_OPTIONS);
    db.sql("CREATE USER 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;");
    let proxy = start_proxy(&format!(
        "users:\n  - {{name: root, password: ''}}\n\
         datahosts:\n  - name: dh1\n    user: root\n    password: ''\n    datasources:\n      - {{name: mtr, addr: \"{}\"}}\n\
         max_allowed_packet: 1073741824\n",
        db.addr()
    ));

    let tests = if full {
        vec!["--suite=main".to_string()]
    } else {
        read_list("fast.list")
    };
    let excluded = exclusions();
    let mut report = String::from("| run | direct pass / fail / skipped | through zeroDB pass / fail / skipped | regressions |\n|---|---|---|---|\n");
    let mut regressions = BTreeSet::new();
    for ps in [false, true] {
        let label = if ps {
            "mariadb-test-run --ps-protocol"
        } else {
            "mariadb-test-run"
        };
        let direct = mtr(db.port, &tests, ps, "mtr-direct");
        let proxied = mtr(proxy.port, &tests, ps, "mtr-proxy");
        assert!(
            count(&direct, Outcome::Pass) > 0,
            "{label}: nothing passed directly; is the server set up like MTR's?"
        );
        let mut reg = Vec::new();
        for (t, o) in &direct {
            if *o == Outcome::Pass
                && proxied.get(t) != Some(&Outcome::Pass)
                && !excluded.contains_key(t)
            {
                reg.push(format!("{t}{}", if ps { " (ps)" } else { "" }));
            }
        }
        report.push_str(&format!(
            "| {label} | {} / {} / {} | {} / {} / {} | {} |\n",
            count(&direct, Outcome::Pass),
            count(&direct, Outcome::Fail),
            count(&direct, Outcome::Skipped),
            count(&proxied, Outcome::Pass),
            count(&proxied, Outcome::Fail),
            count(&proxied, Outcome::Skipped),
            reg.len()
        ));
        regressions.extend(reg);
    }

    let client_tests = if full {
        client_tests_all()
    } else {
        read_list("client_tests.list")
    };
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
    if !excluded.is_empty() {
        report.push_str("\nExcluded:\n");
        for (t, why) in &excluded {
            report.push_str(&format!("- {t}: {why}\n"));
        }
    }
    eprintln!("{report}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(if full { "report-full.md" } else { "report.md" }),
        &report,
    );
    assert!(
        regressions.is_empty(),
        "pass directly, fail through zerodb-proxy: {regressions:?}\n{report}\nproxy log: {}",
        proxy.dir.display()
    );
}
