//! Swapping the active datasource under load: nobody reconnects, nobody
//! sees an error but a session inside a transaction.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn swap_under_load_moves_every_session() {
    let m1 = MariaDb::start("mysql_1", 1);
    let m11 = MariaDb::start("mysql_11", 11);
    m11.replicate_from(&m1);
    let proxy = start_proxy(&one_datahost_config(&[&m1, &m11]));

    let sb = ["oltp_read_only", "--tables=2", "--table-size=1000"];
    let out = sysbench(proxy.port, &[&sb[..], &["prepare"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m11.catch_up(&m1);

    let mut client = Command::new("python3")
        .arg(repo_tests_dir().join("clients").join("swap_client.py"))
        .args([
            "127.0.0.1",
            &proxy.port.to_string(),
            APP_USER,
            APP_PASSWORD,
            "1",
            "11",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "ready", "client did not get ready");

    let port = proxy.port;
    let bench = std::thread::spawn(move || {
        sysbench(
            port,
            &[
                &sb[..],
                &[
                    "--skip-trx=on",
                    "--db-ps-mode=auto",
                    "--threads=8",
                    "--time=6",
                    "run",
                ],
            ]
            .concat(),
        )
    });
    std::thread::sleep(Duration::from_secs(2));

    // A swap with an epoch not newer than the one in force is refused.
    let (code, _) = proxy.swap("mysql_11", 0);
    assert_eq!(code, 409, "epoch 0 is not newer than 0");
    let (code, body) = proxy.swap("mysql_11", 1);
    assert_eq!(code, 200, "{body}");
    let st = proxy.status();
    assert_eq!(st["datahosts"][0]["active"], "mysql_11");
    assert_eq!(st["datahosts"][0]["epoch"], 1);
    // A planned swap keeps the new source from replicating the old one.
    m11.sql("STOP SLAVE");

    std::thread::sleep(Duration::from_millis(500));
    writeln!(client.stdin.as_mut().expect("stdin"), "go").expect("write go");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = client.wait().expect("wait client");
    let mut stderr = String::new();
    if let Some(mut e) = client.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "client failed: {rest:?}\n{stderr}\nproxy log:\n{}",
        proxy.log()
    );
    let summary: serde_json::Value =
        serde_json::from_str(rest.last().expect("summary")).expect("summary JSON");
    assert_eq!(summary["transaction_error"], 9103);
    assert!(
        summary["writer_acked"].as_u64().unwrap_or(0) > 100,
        "{summary}"
    );

    let out = bench.join().expect("sysbench thread");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sysbench failed across the swap: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sysbench_count(&report, "ignored errors:"), 0, "{report}");
    assert!(sysbench_count(&report, "queries:") > 1000, "{report}");

    // Every acknowledged write is on one of the two servers: ids up to the
    // old source's highest, plus those above it on the new source (written
    // after the swap).
    let acked = summary["writer_acked"].as_u64().unwrap_or(0);
    let count = |db: &MariaDb, q: &str| -> u64 { db.sql(q).parse().unwrap_or(0) };
    let on_old = count(&m1, "SELECT COUNT(*) FROM app.w");
    let old_max = count(&m1, "SELECT COALESCE(MAX(id),0) FROM app.w");
    let after_swap = count(
        &m11,
        &format!("SELECT COUNT(*) FROM app.w WHERE id > {old_max}"),
    );
    assert!(
        after_swap > 0,
        "nothing written to the new source after the swap"
    );
    assert!(
        on_old + after_swap >= acked,
        "acknowledged {acked}, found {on_old} + {after_swap}"
    );

    // Sessions really re-bound on the new datasource (sysbench's 8, the
    // writer, the stateful and the transaction sessions).
    let (_, metrics) = proxy.http_get("/metrics").expect("metrics");
    let binds: f64 = metrics
        .lines()
        .find(|l| l.starts_with("zerodb_session_binds_total") && l.contains("mysql_11"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        binds >= 10.0,
        "only {binds} sessions bound to mysql_11:\n{metrics}"
    );

    // The old source holds no session of the proxy's any more.
    let st = proxy.status();
    let old = &st["datahosts"][0]["datasources"][0];
    assert_eq!(old["name"], "mysql_1");
    assert_eq!(old["sessions"], 0, "{st}");
}

/// The server closes a session's backend connection while the session sits
/// between statements (here `KILL`, as a DBA or `wait_timeout` would; a
/// restarted server does the same). Outside a transaction the next
/// statement, a write included, runs on a fresh connection with the
/// session's state replayed; inside one it gets 9103 until ROLLBACK.
#[test]
fn backend_connection_closed_between_statements() {
    let db = MariaDb::start("m1", 1);
    db.sql("CREATE TABLE app.k (id INT PRIMARY KEY)");
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    let script = format!(
        "import pymysql, sys\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='app', autocommit=True)\n\
         cur = c.cursor()\n\
         cur.execute('SET SESSION wait_timeout = 1234')\n\
         cur.execute('SELECT CONNECTION_ID()'); print(cur.fetchone()[0], flush=True)\n\
         sys.stdin.readline()\n\
         cur.execute('INSERT INTO k VALUES (1)')\n\
         cur.execute('SELECT @@session.wait_timeout'); print('timeout', cur.fetchone()[0], flush=True)\n\
         cur.execute('BEGIN'); cur.execute('INSERT INTO k VALUES (2)'); print('in trx', flush=True)\n\
         sys.stdin.readline()\n\
         try:\n    cur.execute('INSERT INTO k VALUES (3)'); print('no error')\n\
         except pymysql.err.MySQLError as e:\n    print('error', e.args[0])\n\
         cur.execute('ROLLBACK')\n\
         cur.execute('SELECT COUNT(*) FROM k'); print('rows', cur.fetchone()[0])\n",
        port = proxy.port
    );
    let mut client = Scripted::start(&script);
    let id: u64 = client.line().parse().expect("proxy connection id");

    // The backend thread that serves this session, from the proxy's list.
    let backend_thread = || -> u64 {
        let (_, body) = proxy.http_get("/sessions").expect("sessions");
        let rows: serde_json::Value = serde_json::from_str(&body).expect("json");
        rows.as_array()
            .and_then(|r| r.iter().find(|x| x["id"].as_u64() == Some(id)))
            .and_then(|x| x["backend_thread"].as_u64())
            .unwrap_or_else(|| panic!("session {id} holds no backend: {rows}"))
    };
    let kill = |thread: u64| {
        db.sql(&format!("KILL {thread}"));
        // The server closes the socket right after the KILL returns.
        std::thread::sleep(Duration::from_millis(200));
    };
    let first = backend_thread();
    kill(first);
    client.go();
    assert_eq!(
        client.line(),
        "timeout 1234",
        "state replayed on the new connection"
    );
    assert_ne!(backend_thread(), first, "the session was not rebound");
    assert_eq!(client.line(), "in trx");

    kill(backend_thread());
    client.go();
    assert_eq!(
        client.line(),
        "error 9103",
        "a transaction on a closed connection"
    );
    assert_eq!(
        client.line(),
        "rows 1",
        "only the write outside the transaction"
    );
    let (status, stderr) = client.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.k"), "1");
}

/// Session replay runs only the client's assignments (SPEC §7): after the
/// backend connection is lost, the next statement replays `SET @a=1` of
/// `SET @a=1; INSERT …` without the INSERT, and user variables set from
/// expressions (`NEXTVAL`, `LAST_INSERT_ID()`) come back with the values
/// they had, without running those expressions again.
#[test]
fn replayed_state_runs_only_the_assignments() {
    let db = MariaDb::start("m1", 1);
    db.sql_script(
        "CREATE TABLE app.r (v INT); CREATE SEQUENCE app.s; \
         CREATE TABLE app.ai (id INT AUTO_INCREMENT PRIMARY KEY)",
    )
    .expect("schema");
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    let script = format!(
        "import pymysql, sys\n\
         from pymysql.constants import CLIENT\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='app', autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)\n\
         cur = c.cursor()\n\
         def run(q):\n    cur.execute(q)\n    while cur.nextset(): pass\n\
         run('SET @a=1; INSERT INTO r VALUES (1)')\n\
         run(\"INSERT INTO r VALUES (2); SET @b = 'x;y'\")\n\
         run('SET @n = NEXTVAL(s)')\n\
         run(\"SET @t = CONCAT('it''s ', CHAR(92 USING utf8mb4), ';')\")\n\
         run('INSERT INTO ai VALUES (NULL), (NULL), (NULL); SET @id = LAST_INSERT_ID() + 0.5')\n\
         cur.execute('SELECT CONNECTION_ID()'); print(cur.fetchone()[0], flush=True)\n\
         sys.stdin.readline()\n\
         cur.execute('SELECT @a, @b, @n, @id, (SELECT COUNT(*) FROM r), NEXTVAL(s), @t')\n\
         print(' '.join(str(x) for x in cur.fetchone()), flush=True)\n",
        port = proxy.port
    );
    let mut client = Scripted::start(&script);
    let id: u64 = client.line().parse().expect("proxy connection id");
    let (_, body) = proxy.http_get("/sessions").expect("sessions");
    let rows: serde_json::Value = serde_json::from_str(&body).expect("json");
    let thread = rows
        .as_array()
        .and_then(|r| r.iter().find(|x| x["id"].as_u64() == Some(id)))
        .and_then(|x| x["backend_thread"].as_u64())
        .unwrap_or_else(|| panic!("session {id} holds no backend: {rows}"));
    db.sql(&format!("KILL {thread}"));
    std::thread::sleep(Duration::from_millis(200));
    client.go();
    assert_eq!(
        client.line(),
        "1 x;y 1 1.5 2 2 it's \\;",
        "@a, @b, @n, @id, rows of r, the next sequence value, @t (read back as hex)"
    );
    let (status, stderr) = client.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM app.r"),
        "2",
        "no INSERT ran twice"
    );
}
