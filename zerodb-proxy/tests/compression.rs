//! The compressed protocol between clients and the proxy: the mariadb CLI
//! (`--compress`, alone and over TLS) and MySQL Connector/Python
//! (`compress=True`) run statements through it; a recording relay shows
//! the bytes on the wire really are deflated; `compression: false` stops
//! offering it.

mod common;

use common::*;
use std::process::Command;
use zerodb_testkit::certs;
use zerodb_testkit::tap::Tap;

/// Whether the CLI's `status` says the compressed protocol is in use.
fn says_compressed(status: &str) -> bool {
    status
        .lines()
        .any(|l| l.contains("Protocol:") && l.contains("Compressed"))
}

/// Bytes the server side sent on every connection the tap saw.
fn bytes_to_client(tap: &Tap) -> usize {
    tap.conversations()
        .iter()
        .flatten()
        .filter(|c| !c.from_client)
        .map(|c| c.bytes.len())
        .sum()
}

#[test]
fn the_mariadb_cli_runs_compressed_and_the_wire_shows_it() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));

    // The CLI says the protocol it agreed to.
    let status = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        "status",
    ));
    assert!(says_compressed(&status), "{status}");

    // Statements, errors, several result sets, a schema change.
    ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        "CREATE TABLE t (id INT PRIMARY KEY, v MEDIUMTEXT); INSERT INTO t VALUES (1, REPEAT('a', 100000)), (2, 'b')",
    ));
    let out = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        "SELECT id, LENGTH(v) FROM t ORDER BY id; SELECT 'x'; USE mysql; SELECT DATABASE()",
    ));
    assert_eq!(out, "1\t100000\n2\t1\nx\nmysql");
    let e = err(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        "SELECT * FROM no_such_table",
    ));
    assert!(e.contains("1146"), "{e}");

    // A statement over 16 MiB (frames split inside compressed packets),
    // given on standard input, its answer checked by the server.
    let big = "z".repeat(17 << 20);
    let mut cli = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B", "--compress"])
        .arg("--max-allowed-packet=64M")
        .arg(format!("-P{}", proxy.port))
        .arg(format!("-u{APP_USER}"))
        .arg(format!("-p{APP_PASSWORD}"))
        .arg("app")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mariadb");
    let sql = format!("SELECT LENGTH('{big}'), MD5('{big}') = MD5(REPEAT('z', 17 << 20));\n");
    let mut stdin = cli.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, sql.as_bytes()));
    let out = cli.wait_with_output().expect("mariadb");
    writer.join().expect("writer").expect("write the statement");
    // (Not `ok`: the CLI repeats the statement in its error.)
    let said = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == format!("{}\t1", 17 << 20),
        "{}",
        said.lines().last().unwrap_or_default()
    );

    // Through a recording relay: a 5 MB result of repeated text crosses
    // the wire in a small fraction of its size, and the same result
    // uncompressed does not.
    let tap = Tap::start(&format!("127.0.0.1:{}", proxy.port));
    let sql = "SELECT REPEAT('zeroDB ', 700000)";
    let out = ok(&cli_with(
        tap.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        sql,
    ));
    assert_eq!(out.len(), 7 * 700_000 - 1, "the trailing space is trimmed");
    let compressed = bytes_to_client(&tap);
    let tap = Tap::start(&format!("127.0.0.1:{}", proxy.port));
    ok(&cli_with(tap.port, APP_USER, APP_PASSWORD, &[], sql));
    let plain = bytes_to_client(&tap);
    assert!(
        compressed * 20 < plain && plain > 4_900_000,
        "bytes to the client: {compressed} compressed, {plain} plain"
    );
}

#[test]
fn connector_python_runs_compressed() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    run_client_script(
        "compressed_client.py",
        &proxy,
        "all compressed checks passed",
    );
    // What the sessions wrote reached the server.
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.zload"), "20000");
}

#[test]
fn compressed_over_tls_and_not_offered_when_turned_off() {
    let db = MariaDb::start("m1", 1);
    let c = certs::make("compress-tls");
    let yaml = one_datahost_config(&[&db]).replace(
        "users:\n",
        &format!(
            "tls: {{cert: '{}', key: '{}'}}\nusers:\n",
            c.cert.display(),
            c.key.display()
        ),
    );
    let proxy = start_proxy(&yaml);
    let ca = format!("--ssl-ca={}", c.ca.display());
    let both = [
        "--compress",
        "--ssl",
        ca.as_str(),
        "--ssl-verify-server-cert",
    ];
    let status = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &both,
        "status",
    ));
    assert!(status.contains("Cipher in use is TLS"), "{status}");
    assert!(says_compressed(&status), "{status}");
    let out = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &both,
        "SELECT LENGTH(REPEAT('x', 20000000)), MD5(REPEAT('y', 3000000)) = MD5(REPEAT('y', 3000000)); SELECT REPEAT('w', 3000000)",
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("20000000\t1"));
    assert_eq!(lines.next().map(str::len), Some(3_000_000));

    // `compression: false`: not in the greeting, so the CLI goes on
    // uncompressed.
    let proxy = start_proxy(&format!(
        "compression: false\n{}",
        one_datahost_config(&[&db])
    ));
    let status = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--compress"],
        "status",
    ));
    assert!(!says_compressed(&status), "not offered, not used: {status}");
    assert_eq!(
        ok(&cli_with(
            proxy.port,
            APP_USER,
            APP_PASSWORD,
            &["--compress"],
            "SELECT 2"
        )),
        "2"
    );
}
