//! What an operator touches: config files and overrides, the admin HTTP
//! endpoints, metrics, and a graceful stop on SIGTERM.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn admin_endpoints_and_metrics() {
    let db = MariaDb::start("mysql_1", 1);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    proxy.sql("SELECT 1; SELECT 2");
    let _ = proxy.cli(APP_USER, "wrong", "app", "SELECT 1");

    let (code, body) = proxy.http_get("/health").expect("health");
    assert_eq!((code, body.trim()), (200, "serving"));

    let st = proxy.status();
    assert_eq!(st["serving"], "serving");
    assert_eq!(st["datahosts"][0]["name"], "dh1");
    assert_eq!(st["datahosts"][0]["active"], "mysql_1");
    assert_eq!(st["datahosts"][0]["datasources"][0]["health"]["up"], true);
    assert!(
        st["datahosts"][0]["datasources"][0]["health"]["probes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    // Let the pool's upkeep and the probes report.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, m) = proxy.http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "zerodb_client_connections_total",
        "zerodb_statements_total",
        "zerodb_statement_seconds_bucket",
        "zerodb_login_failures_total{code=\"1045\"}",
        "zerodb_probes_total{datasource=\"mysql_1\",result=\"ok\"}",
        "zerodb_pool_open{datasource=\"mysql_1\"}",
        "zerodb_pool_idle{datasource=\"mysql_1\"}",
        "zerodb_client_sessions",
    ] {
        assert!(m.contains(name), "no {name} in /metrics:\n{m}");
    }

    // The probes notice a dead datasource and say so.
    let mut db = db;
    db.kill();
    let started = Instant::now();
    loop {
        let st = proxy.status();
        if st["datahosts"][0]["datasources"][0]["health"]["up"] == false {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "probes never marked mysql_1 down: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        proxy.log().contains("datasource is down"),
        "{}",
        proxy.log()
    );
    let (_, m) = proxy.http_get("/metrics").expect("metrics");
    assert!(
        m.contains(r#"zerodb_datasource_state_changes_total{datasource="mysql_1",to="down"} 1"#),
        "{m}"
    );
}

#[test]
fn caching_sha2_password_clients() {
    let db = MariaDb::start("m1", 1);
    let proxy = start_proxy(&format!(
        "{}auth_plugin: caching_sha2_password\n",
        one_datahost_config(&[&db])
    ));
    // PyMySQL and mysql-connector follow the greeting's caching_sha2 method
    // and expect the fast-auth answer; a wrong password is 1045.
    let script = format!(
        "import pymysql, mysql.connector\n\
         c = pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', database='app')\n\
         cur = c.cursor(); cur.execute('SELECT 7'); assert cur.fetchone() == (7,)\n\
         assert c._auth_plugin_name == 'caching_sha2_password', c._auth_plugin_name\n\
         m = mysql.connector.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='{APP_PASSWORD}', use_pure=True)\n\
         cur = m.cursor(); cur.execute('SELECT 8'); assert cur.fetchone() == (8,)\n\
         try:\n    pymysql.connect(host='127.0.0.1', port={port}, user='{APP_USER}', password='nope')\n    raise SystemExit('wrong password accepted')\n\
         except pymysql.err.OperationalError as e:\n    assert e.args[0] == 1045, e\n\
         print('sha2 ok')\n",
        port = proxy.port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sha2 ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_files_overrides_and_check() {
    let dir = scratch("cfg");
    let toml = dir.join("proxy.toml");
    std::fs::write(
        &toml,
        r#"
listen = "127.0.0.1:0"
"need_vote.approve_ratio" = 75
[[users]]
name = "app"
password = "pw"
[[datahosts]]
name = "dh1"
user = "u"
datasources = [{ name = "a", addr = "127.0.0.1:1" }]
"#,
    )
    .expect("write");
    let bin = env!("CARGO_BIN_EXE_zerodb-proxy");
    let out = Command::new(bin)
        .arg("--config")
        .arg(&toml)
        .arg("--check")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    // An override that breaks validation shows it came from the environment.
    let out = Command::new(bin)
        .arg("--config")
        .arg(&toml)
        .arg("--check")
        .env("ZERODB_NEED_VOTE__APPROVE_RATIO", "150")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approve_ratio"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A typo in a key is refused with its name.
    let yaml = dir.join("typo.yaml");
    std::fs::write(&yaml, "lisen: 127.0.0.1:1\nusers: [{name: a}]\ndatahosts: [{name: d, user: u, datasources: [{name: a, addr: 'x:1'}]}]\n").expect("write");
    let out = Command::new(bin)
        .arg("--config")
        .arg(&yaml)
        .arg("--check")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_lets_the_running_statement_finish() {
    let db = MariaDb::start("m1", 1);
    let mut proxy = start_proxy(&one_datahost_config(&[&db]));
    let port = proxy.port;
    let slow = app_query_in_background(port, "SELECT SLEEP(1.5), 'done'");
    let started = Instant::now();
    while db
        .sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'")
        != "1"
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = proxy.terminate();
    assert!(status.success(), "exit status {status:?}");
    let out = slow.join().expect("slow client");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "the running statement was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The listener is closed.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// SPEC §7, fencing that cannot hold is reported: a proxy whose backend
/// login holds `READ_ONLY ADMIN` (here through `ALL PRIVILEGES`) says so
/// at start, in `/status` and as a metric; one whose login holds plain
/// data privileges does not.
#[test]
fn a_login_that_can_write_despite_read_only_is_reported() {
    let db = MariaDb::start("mysql_1", 1);
    db.sql_script(
        "CREATE USER 'plain'@'%' IDENTIFIED BY 'plain-pw'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'plain'@'%'",
    )
    .expect("a login without READ_ONLY ADMIN");
    let all = start_proxy(&one_datahost_config(&[&db]));
    assert_eq!(
        all.status()["datahosts"][0]["login_bypasses_read_only"],
        true
    );
    let (_, metrics) = all.http_get("/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("zerodb_login_bypasses_read_only{datahost=\"dh1\"} 1")),
        "{metrics}"
    );
    assert!(all.log().contains("holds SUPER or READ_ONLY ADMIN"));

    let plain_config = one_datahost_config(&[&db])
        .replace(&format!("user: {BACKEND_USER}"), "user: plain")
        .replace(
            &format!("password: {BACKEND_PASSWORD}"),
            "password: plain-pw",
        );
    let plain = start_proxy(&plain_config);
    assert_eq!(
        plain.status()["datahosts"][0]["login_bypasses_read_only"],
        false
    );
}
