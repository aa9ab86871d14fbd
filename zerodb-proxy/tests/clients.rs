//! Real clients through the proxy: the mariadb CLI, Python drivers, sysbench.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn mariadb_cli_queries_and_errors() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));

    assert_eq!(proxy.sql("SELECT 1+1"), "2");
    proxy.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1,'a'),(2,'b')",
    );
    assert_eq!(proxy.sql("SELECT v FROM t ORDER BY id"), "a\nb");
    // The write reached the real server.
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.t"), "2");

    // A server error passes through unchanged.
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "SELECT * FROM no_such_table");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("1146"), "{err}");

    // A wrong password gets 1045 from the proxy itself.
    let out = proxy.cli(APP_USER, "nope", "app", "SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1045") && err.contains("Access denied"),
        "{err}"
    );

    // USE switches schema; the session state keeps it.
    db.sql("CREATE DATABASE other; CREATE TABLE other.o (x INT); INSERT INTO other.o VALUES (7)");
    assert_eq!(
        proxy.sql("USE other; SELECT x FROM o; SELECT DATABASE()"),
        "7\nother"
    );

    // MariaDB's extended column metadata (a column's type name and format)
    // is offered, and passes through as the server sent it: the CLI shows
    // `(type=point)` and `(format=json)` through the proxy as it does
    // directly.
    let column_types = |port: u16, user: &str, password: &str| {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "--column-type-info", "-t"])
            .arg(format!("-P{port}"))
            .arg(format!("-u{user}"))
            .arg(format!("-p{password}"))
            .args(["app", "-e", "SELECT * FROM g"])
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("Type:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    proxy.sql("CREATE TABLE g (p POINT, j JSON); INSERT INTO g VALUES (POINT(1, 2), '{}')");
    let direct = column_types(db.port, BACKEND_USER, BACKEND_PASSWORD);
    assert!(
        direct.contains("(type=point)") && direct.contains("(format=json)"),
        "{direct}"
    );
    assert_eq!(column_types(proxy.port, APP_USER, APP_PASSWORD), direct);
}

#[test]
fn connection_id_and_kill_speak_proxy_ids() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));

    // CONNECTION_ID() is the proxy's id (the one in the handshake), not the
    // backend thread's: two queries in one session agree with each other and
    // differ from the server's own thread id.
    let out = proxy.sql("SELECT CONNECTION_ID(); SELECT ID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "the backend has no thread with the proxy's id: {out}"
    );
    // ... with CONNECTION_ID()'s own type (INT UNSIGNED, width 10), as the
    // column metadata and a value built from it show.
    let describe = |port: u16, user: &str, password: &str| {
        let script = format!(
            "import pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port={port}, user='{user}', password='{password}', database='app')\n\
             cur = c.cursor(); cur.execute('SELECT CONNECTION_ID(), CONCAT(CONNECTION_ID()), CONNECTION_ID() + 0')\n\
             print([d[1:] for d in cur.description])\n"
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let direct = describe(db.port, BACKEND_USER, BACKEND_PASSWORD);
    assert!(direct.contains("(3, None, 10, 10, 0, False)"), "{direct}");
    assert_eq!(describe(proxy.port, APP_USER, APP_PASSWORD), direct);
    // DDL keeps the function: a default runs later, in other sessions.
    let create = proxy.sql("CREATE TABLE d (a INT DEFAULT CONNECTION_ID()); SHOW CREATE TABLE d");
    assert!(create.contains("DEFAULT connection_id()"), "{create}");

    // KILL CONNECTION_ID() ends the session itself, as on MariaDB (1927).
    let out = proxy.cli(
        APP_USER,
        APP_PASSWORD,
        "app",
        "KILL CONNECTION_ID(); SELECT 'still here'",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1927"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("still here"));

    // KILL QUERY <proxy id> from another session cancels a running statement,
    // as Ctrl-C in the mariadb client does.
    let port = proxy.port;
    let sleeper = std::thread::spawn(move || {
        let started = Instant::now();
        let script = format!(
            "import pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='app')\n\
             cur = c.cursor()\n\
             try:\n    cur.execute('SELECT SLEEP(30)'); print('sleep returned', cur.fetchone())\n\
             except pymysql.err.OperationalError as e:\n    print('interrupted', e.args[0])\n\
             cur.execute(\"SELECT 'after'\"); print(cur.fetchone()[0])\n"
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        (out, started.elapsed())
    });
    // Find the sleeper's proxy id from the admin status' session count and
    // the backend processlist.
    let started = Instant::now();
    let victim = loop {
        let ids = db.sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'",
        );
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sleeper never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Translate with the proxy's processlist: which proxy id holds it.
    let rows: serde_json::Value =
        serde_json::from_str(&proxy.http_get("/sessions").expect("sessions").1).expect("json");
    let proxy_id = rows
        .as_array()
        .and_then(|r| {
            r.iter().find(|x| {
                x["backend_thread"].as_u64().map(|t| t.to_string()) == Some(victim.clone())
            })
        })
        .and_then(|x| x["id"].as_u64())
        .unwrap_or_else(|| panic!("no session holds backend thread {victim}: {rows}"));
    assert_ne!(proxy_id.to_string(), victim, "ids must be the proxy's own");
    let aborted = || db.sql("SHOW GLOBAL STATUS LIKE 'Aborted_clients'");
    let aborted_before = aborted();
    // The target is an expression, as MTR's tests write it (`KILL QUERY
    // @id`): the server evaluates it in the session, the proxy translates
    // the id it names.
    let out = proxy.cli(
        APP_USER,
        APP_PASSWORD,
        "app",
        &format!("SET @victim = {proxy_id} - 1; KILL QUERY @victim + 1"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, took) = sleeper.join().expect("sleeper thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        took < Duration::from_secs(20),
        "KILL QUERY did not cancel the statement ({took:?})"
    );
    // The statement was interrupted (1317, or SLEEP returning 1 on servers
    // that report it that way); the session survives and runs the next one.
    assert!(
        stdout.contains("interrupted 1317") || stdout.contains("sleep returned (1,)"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("after"),
        "session did not survive KILL QUERY: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The connection that carried the KILL said goodbye: the server counts
    // no aborted client and logs no "Aborted connection".
    assert_eq!(aborted(), aborted_before);

    // KILL of an unknown id is error 1094, as on MySQL.
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "KILL 4000000000");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1094"));
    // An expression naming nobody (NULL is thread 0), and one the server
    // cannot evaluate, fail as they do on MariaDB.
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "KILL @nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1094") && stderr.contains("id: 0"),
        "{stderr}"
    );
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "KILL no_such_column");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1054"), "{stderr}");
    // A prepared KILL is run by the proxy too, in its ids, at each
    // execution: an unknown id is 1094 (the server would have been asked
    // to kill whichever of its threads has that number); executed again,
    // the same; and KILL QUERY of the session's own id succeeds.
    let script = format!(
        "import mysql.connector\n\
         c = mysql.connector.connect(host='127.0.0.1', port={}, user='{APP_USER}', password='{APP_PASSWORD}', database='app', use_pure=True)\n\
         cur = c.cursor(prepared=True)\n\
         for _ in range(2):\n    try:\n        cur.execute('KILL 4000000000'); print('killed?')\n    except mysql.connector.Error as e:\n        print('refused', e.errno)\n\
         cur.execute('SELECT CONNECTION_ID()'); own = cur.fetchone()[0]\n\
         cur.execute(f'KILL QUERY {{own}}'); print('own query killed')\n\
         cur.execute('SELECT 1'); print('after', cur.fetchone()[0])\n",
        proxy.port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "refused 1094\nrefused 1094\nown query killed\nafter 1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A target reading a table is refused, as by MariaDB, not evaluated.
    let out = proxy.cli(
        APP_USER,
        APP_PASSWORD,
        "app",
        "KILL (SELECT COUNT(*) FROM mysql.user)",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1970"), "{stderr}");
    // Another user's session cannot be killed: 1095.
    let port = proxy.port;
    let holder = std::thread::spawn(move || {
        mariadb_cli(port, APP_USER, APP_PASSWORD, "app", "SELECT SLEEP(3)")
    });
    // The holder's session: the one whose backend thread runs its SLEEP
    // (sessions of earlier clients may still be closing).
    let started = Instant::now();
    let app_id = loop {
        let thread = db.sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(3)%'",
        );
        let rows: serde_json::Value =
            serde_json::from_str(&proxy.http_get("/sessions").expect("sessions").1).expect("json");
        if let Some(id) = rows
            .as_array()
            .and_then(|r| {
                r.iter().find(|x| {
                    x["user"] == APP_USER
                        && x["backend_thread"].as_u64().map(|t| t.to_string())
                            == Some(thread.clone())
                })
            })
            .and_then(|x| x["id"].as_u64())
        {
            break id;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = proxy.cli("other", "other-pw", "app", &format!("KILL {app_id}"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1095"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = holder.join();
}

#[test]
fn python_drivers() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    run_client_script("python_client.py", &proxy, "all python checks passed");
}

#[test]
fn sysbench_read_write_with_prepared_statements() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    let common = [
        "oltp_read_write",
        "--tables=2",
        "--table-size=2000",
        "--db-ps-mode=auto",
    ];
    let out = sysbench(proxy.port, &[&common[..], &["prepare"]].concat());
    assert!(
        out.status.success(),
        "prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sysbench(
        proxy.port,
        &[&common[..], &["--threads=8", "--time=5", "run"]].concat(),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tx = sysbench_count(&report, "transactions:");
    assert!(tx > 100, "too few transactions: {report}");
    // Deadlocks show as "ignored errors" and are normal for this workload;
    // anything else makes sysbench fail, which the status check above catches.
    let q = sysbench_count(&report, "queries:");
    assert!(q >= tx * 18, "each transaction is 18+ statements: {report}");
}

#[test]
fn schemas_route_to_their_datahost() {
    let a = MariaDb::start("mysql_a", 1);
    let b = MariaDb::start("mysql_b", 2);
    b.sql("CREATE DATABASE logs");
    a.sql("CREATE DATABASE logs"); // present on both: only routing decides
    let proxy = start_proxy(&format!(
        "users:\n  - {{name: {APP_USER}, password: {APP_PASSWORD}}}\n\
         datahosts:\n\
         \x20 - name: main\n    schemas: [app]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    datasources: [{{name: mysql_a, addr: \"{}\"}}]\n\
         \x20 - name: logging\n    schemas: [logs]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    datasources: [{{name: mysql_b, addr: \"{}\"}}]\n",
        a.addr(),
        b.addr()
    ));
    // One session: app on main, USE logs moves it to the other dataHost,
    // USE app brings it back.
    let out = proxy.sql(
        "SELECT @@server_id; USE logs; SELECT @@server_id; CREATE TABLE l (x INT); INSERT INTO l VALUES (1); \
         USE app; SELECT @@server_id",
    );
    assert_eq!(out, "1\n2\n1");
    assert_eq!(b.sql("SELECT COUNT(*) FROM logs.l"), "1");
    assert!(
        a.try_sql("SELECT COUNT(*) FROM logs.l").is_err(),
        "the table went to the other server"
    );
    // Connecting with a schema routes the login too.
    assert_eq!(
        String::from_utf8_lossy(
            &proxy
                .cli(APP_USER, APP_PASSWORD, "logs", "SELECT @@server_id")
                .stdout
        )
        .trim(),
        "2"
    );
    // Changing dataHost inside a transaction is refused (9105).
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "BEGIN; SELECT 1; USE logs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("9105"), "{err}");
}

/// A client that disconnects with an `XA PREPARE`d transaction leaves it
/// to be recovered, as on a direct connection: the server lists it in `XA
/// RECOVER` and any connection may commit it. (A pooled connection given
/// back with a reset would keep it attached, holding its locks and leaving
/// the next session in the PREPARED state.)
#[test]
fn a_prepared_xa_transaction_outlives_its_client() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    proxy.sql("CREATE TABLE xa_t (a INT) ENGINE=InnoDB");
    proxy.sql("XA START 'x1'; INSERT INTO xa_t VALUES (1); XA END 'x1'; XA PREPARE 'x1'");
    proxy.wait_idle();
    // Detached: a connection of the server's own commits it.
    assert!(db.sql("XA RECOVER").contains("x1"));
    db.sql("XA COMMIT 'x1'");
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.xa_t"), "1");
    // Sessions through the proxy start outside any transaction.
    for _ in 0..3 {
        assert_eq!(
            proxy.sql("SELECT @@in_transaction; INSERT INTO xa_t VALUES (2)"),
            "0"
        );
    }
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.xa_t"), "4");
}

/// `SHOW PROFILES` survives a connection reset on MariaDB, statement texts
/// included: a pooled connection must not carry one client's profile to the
/// next.
#[test]
fn profiles_do_not_leak_to_the_next_session() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    proxy.sql("SET profiling = 1; SELECT 'secret of session A'");
    proxy.wait_idle();
    for _ in 0..3 {
        let seen = proxy.sql("SET profiling = 1; SHOW PROFILES");
        assert!(!seen.contains("secret"), "{seen}");
    }
}
