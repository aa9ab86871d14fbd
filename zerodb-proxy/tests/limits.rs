//! Accounts given as hashes, files and variables; the limits on each
//! client (`limits:`, `users[].max_connections`): every one answered with
//! its MySQL error or a closed connection, while other clients go on.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use zerodb_proxy::backend::{BackendConn, BackendKey};
use zerodb_proxy::protocol::{cmd, ResponseKind};

/// The stderr of a failed CLI run (panics if it succeeded).
fn cli_error(proxy: &Proxy, user: &str, password: &str, sql: &str) -> String {
    let out = proxy.cli(user, password, "app", sql);
    assert!(!out.status.success(), "{user}: `{sql}` should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The counter `zerodb_limit_hits_total{limit="…"}` from /metrics.
fn limit_hits(proxy: &Proxy, limit: &str) -> u64 {
    let (_, body) = proxy.http_get("/metrics").expect("metrics");
    let key = format!("zerodb_limit_hits_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn accounts_from_a_hash_a_file_and_the_environment_and_their_session_limit() {
    let db = MariaDb::start("m1", 1);
    let hash = db.sql("SELECT PASSWORD('hashed-pw')");
    let dir = scratch("limits-users");
    let file = dir.join("batch-pw");
    std::fs::write(&file, "file-pw\n").expect("write password file");
    // The proxy inherits this process's environment.
    std::env::set_var("ZERODB_TEST_ENV_PW", "env-pw");
    let config = one_datahost_config(&[&db]).replace(
        "users:\n",
        &format!(
            "users:\n  - {{name: hashed, password_hash: '{hash}', max_connections: 2}}\n  \
             - {{name: batch, password_file: '{}'}}\n  - {{name: envy, password_env: ZERODB_TEST_ENV_PW}}\n",
            file.display()
        ),
    );
    let proxy = start_proxy(&config);
    for (user, pw) in [
        ("hashed", "hashed-pw"),
        ("batch", "file-pw"),
        ("envy", "env-pw"),
    ] {
        let out = proxy.cli(user, pw, "app", "SELECT CURRENT_USER() IS NOT NULL");
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = cli_error(&proxy, user, "wrong", "SELECT 1");
        assert!(err.contains("1045"), "{user}: {err}");
    }
    // A client asking for caching_sha2_password is switched to
    // mysql_native_password for an account held as a hash.
    let sha2 = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{}", proxy.port))
        .args([
            "-uhashed",
            "-phashed-pw",
            "--default-auth=caching_sha2_password",
        ])
        .args(["app", "-e", "SELECT 7"])
        .output()
        .expect("mariadb");
    assert_eq!(
        String::from_utf8_lossy(&sha2.stdout).trim(),
        "7",
        "{}",
        String::from_utf8_lossy(&sha2.stderr)
    );

    // `hashed` may hold two sessions: a third is refused with 1226 while
    // two sleep, and let in once they are done.
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let port = proxy.port;
            std::thread::spawn(move || {
                mariadb_cli(port, "hashed", "hashed-pw", "app", "SELECT SLEEP(3)")
            })
        })
        .collect();
    wait_for("two sessions of `hashed`", Duration::from_secs(10), || {
        proxy.status()["sessions"].as_u64() == Some(2)
    });
    let err = cli_error(&proxy, "hashed", "hashed-pw", "SELECT 1");
    assert!(
        err.contains("1226") && err.contains("max_connections"),
        "{err}"
    );
    assert_eq!(proxy.sql("SELECT 1"), "1", "other accounts are not limited");
    for s in sleepers {
        assert!(s.join().expect("sleeper").status.success());
    }
    proxy.wait_idle();
    let out = proxy.cli("hashed", "hashed-pw", "app", "SELECT 1");
    assert!(out.status.success(), "slots came free");
    assert_eq!(limit_hits(&proxy, "user_max_connections"), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn silent_idle_and_unreading_clients_are_closed_by_their_timeouts() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&format!(
        "{}limits: {{connect_timeout: 1s, wait_timeout: 2s, net_write_timeout: 1s}}\n",
        one_datahost_config(&[&db])
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    // Greeted, never answers: closed after connect_timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let started = Instant::now();
    let (greeting, closed) = read_all(&mut silent, Duration::from_secs(5));
    assert!(closed && greeting.len() > 4, "closed after the greeting");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // Logged in, then idle: error 4031, then closed.
    let mut idle = logged_in(&rt, proxy.port);
    let (frames, closed) = read_all(&mut idle, Duration::from_secs(6));
    assert!(closed, "closed after wait_timeout");
    assert_eq!(err_code(&frames), Some(4031), "{frames:?}");

    // Asks for a large result and reads none of it: closed after
    // net_write_timeout, its backend connection with it.
    let mut stuck = logged_in(&rt, proxy.port);
    stuck
        .set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let q = b"SELECT REPEAT('x', 1000000) FROM mysql.seq_1_to_200";
    let mut pkt = bytes::BytesMut::new();
    let mut query = vec![cmd::QUERY];
    query.extend_from_slice(q);
    zerodb_proxy::protocol::frame::put_packet(&mut pkt, 0, &query);
    stuck.write_all(&pkt).expect("send the query");
    // Meanwhile other clients are served.
    assert_eq!(proxy.sql("SELECT 2"), "2");
    wait_for(
        "the stuck session to be closed",
        Duration::from_secs(10),
        || proxy.status()["sessions"].as_u64() == Some(0),
    );
    // It got part of its answer, then the end of the stream.
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 20];
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    loop {
        match stuck.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 200 * 1_000_000, "only part of the result: {got}");
    assert_eq!(limit_hits(&proxy, "connect_timeout"), 1);
    assert_eq!(limit_hits(&proxy, "wait_timeout"), 1, "the idle one only");
    assert_eq!(limit_hits(&proxy, "net_write_timeout"), 1, "the stuck one");
    assert_eq!(proxy.sql("SELECT 3"), "3");
}

#[test]
fn prepared_statements_session_variables_and_failed_logins_are_bounded() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&format!(
        "{}limits: {{max_prepared_stmt_count: 3, max_session_vars: 2, max_connect_errors: 3, host_block_time: 3s}}\n",
        one_datahost_config(&[&db])
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = BackendConn::connect(&params(proxy.port), BackendKey::default())
            .await
            .expect("login");
        let prepare = |sql: &str| {
            let mut p = vec![cmd::STMT_PREPARE];
            p.extend_from_slice(sql.as_bytes());
            p
        };
        for i in 0..3 {
            let out = c
                .command(ResponseKind::Prepare, &prepare(&format!("SELECT {i}")))
                .await
                .expect("prepare");
            assert!(out.error.is_none(), "statement {i}");
        }
        let out = c
            .command(ResponseKind::Prepare, &prepare("SELECT 4"))
            .await
            .expect("answered");
        assert_eq!(out.error.map(|e| e.code), Some(1461));
        // Closing one makes room.
        // COM_STMT_CLOSE has no answer.
        c.conn
            .send(0, &[cmd::STMT_CLOSE, 1, 0, 0, 0])
            .await
            .expect("close");
        let out = c
            .command(ResponseKind::Prepare, &prepare("SELECT 5"))
            .await
            .expect("prepare");
        assert!(out.error.is_none());

        // Two session variables may be kept; a third is refused before it
        // runs; the two may be set again.
        let out = c.execute("SET @a = 1, @b = 2").await.expect("set");
        assert!(out.error.is_none());
        match c.execute("SET @c = 3").await {
            Err(zerodb_proxy::backend::BackendError::Server { code, .. }) => assert_eq!(code, 9107),
            other => panic!("{other:?}"),
        }
        let out = c.execute("SELECT @c IS NULL").await.expect("select");
        assert_eq!(out.first_value(), Some(&b"1"[..]), "it did not run");
        let out = c.execute("SET @a = 10").await.expect("set");
        assert!(out.error.is_none());
    });

    // Three wrong passwords in a row block the address; the right one is
    // then refused with 1129 until host_block_time passes.
    for _ in 0..3 {
        assert!(cli_error(&proxy, APP_USER, "wrong", "SELECT 1").contains("1045"));
    }
    let err = cli_error(&proxy, APP_USER, APP_PASSWORD, "SELECT 1");
    assert!(err.contains("1129") && err.contains("blocked"), "{err}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.sql("SELECT 1"), "1", "released after host_block_time");
    assert_eq!(limit_hits(&proxy, "max_prepared_stmt_count"), 1);
    assert_eq!(limit_hits(&proxy, "max_session_vars"), 1);
}
