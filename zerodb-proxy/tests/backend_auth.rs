//! `auth: backend`: clients log in with the datasource's own accounts and
//! each session reaches the server as its client's account, so grants
//! differ per user. Accounts created, changed and dropped on the server
//! are followed; `REQUIRE SSL`, `ACCOUNT LOCK` and plugins the proxy
//! cannot check are honoured, each with MariaDB's error.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use zerodb_testkit::certs;

#[test]
fn clients_log_in_as_the_datasources_accounts_with_their_grants() {
    let c = certs::make("backend-auth");
    let opts = c.server_options();
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let db = MariaDb::start_with("m1", 1, &opts);
    db.sql(
        "CREATE TABLE app.t (id INT PRIMARY KEY);
         CREATE USER alice@'%' IDENTIFIED BY 'alice-pw';
         GRANT SELECT, INSERT ON app.* TO alice@'%';
         CREATE USER bob@'%' IDENTIFIED BY 'bob-pw';
         GRANT SELECT ON app.* TO bob@'%';
         CREATE USER secure@'%' IDENTIFIED BY 'secure-pw' REQUIRE SSL;
         GRANT SELECT ON app.* TO secure@'%';
         CREATE USER locked@'%' IDENTIFIED BY 'locked-pw' ACCOUNT LOCK;
         GRANT SELECT ON app.* TO locked@'%';
         CREATE USER capped@'%' IDENTIFIED BY 'capped-pw' WITH MAX_USER_CONNECTIONS 1;
         GRANT SELECT ON app.* TO capped@'%';
         INSTALL SONAME 'auth_ed25519';
         CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw');
         GRANT SELECT ON app.* TO ed@'%';",
    );
    let config = one_datahost_config(&[&db])
        .replace(
            "users:\n  - {name: app, password: app-pw}\n  - {name: other, password: other-pw}\n",
            &format!(
                "auth: backend\nauth_refresh: 2s\ntls: {{cert: '{}', key: '{}'}}\n",
                c.cert.display(),
                c.key.display()
            ),
        )
        .replace(
            "    datasources:",
            &format!(
                "    tls: {{mode: verify_ca, ca: '{}'}}\n    datasources:",
                c.ca.display()
            ),
        );
    // A second dataHost whose server has an account the first lacks: the
    // accounts are the union of both.
    let db2 = MariaDb::start("m2", 2);
    db2.sql(
        "CREATE DATABASE logs; CREATE TABLE logs.l (id INT);
         CREATE USER dave@'%' IDENTIFIED BY 'dave-pw';
         GRANT SELECT ON logs.* TO dave@'%';",
    );
    let config = config.replace(
        "health:",
        &format!(
            "  - name: dh2\n    schemas: [logs]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    \
             datasources:\n      - {{name: m2, addr: \"{}\"}}\nhealth:",
            db2.addr()
        ),
    );
    assert!(config.contains("auth: backend") && !config.contains("users:"));
    let proxy = start_proxy(&config);
    let port = proxy.port;

    // Each session reaches the server as its client's account: the server
    // names it, and applies its grants.
    assert_eq!(
        ok(&cli_with(
            port,
            "alice",
            "alice-pw",
            &[],
            "SELECT CURRENT_USER()"
        )),
        "alice@%"
    );
    ok(&cli_with(
        port,
        "alice",
        "alice-pw",
        &[],
        "INSERT INTO t VALUES (1)",
    ));
    assert_eq!(
        ok(&cli_with(
            port,
            "bob",
            "bob-pw",
            &[],
            "SELECT CURRENT_USER(), COUNT(*) FROM t"
        )),
        "bob@%\t1"
    );
    let denied = err(&cli_with(
        port,
        "bob",
        "bob-pw",
        &[],
        "INSERT INTO t VALUES (2)",
    ));
    assert!(
        denied.contains("1142") && denied.contains("bob"),
        "{denied}"
    );

    let dave = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{port}"))
        .args([
            "-udave",
            "-pdave-pw",
            "logs",
            "-e",
            "SELECT CURRENT_USER(), COUNT(*) FROM l",
        ])
        .output()
        .expect("mariadb");
    assert_eq!(ok(&dave), "dave@%\t0", "an account of the second dataHost");

    // Wrong passwords and unknown names: 1045, as from the server.
    let wrong = err(&cli_with(port, "alice", "bob-pw", &[], "SELECT 1"));
    assert!(
        wrong.contains("1045") && wrong.contains("'alice'"),
        "{wrong}"
    );
    let nobody = err(&cli_with(port, "nobody", "x", &[], "SELECT 1"));
    assert!(nobody.contains("1045"), "{nobody}");

    // A client asking for caching_sha2_password is switched to
    // mysql_native_password, which the stored hash checks.
    assert_eq!(
        ok(&cli_with(
            port,
            "alice",
            "alice-pw",
            &["--default-auth=caching_sha2_password"],
            "SELECT CURRENT_USER()"
        )),
        "alice@%"
    );

    // REQUIRE SSL: refused in clear, served over TLS (and the proxy's own
    // login to the server as `secure` is over TLS too).
    let clear = err(&cli_with(
        port,
        "secure",
        "secure-pw",
        &["--skip-ssl"],
        "SELECT 1",
    ));
    assert!(clear.contains("1045"), "{clear}");
    let ca = format!("--ssl-ca={}", c.ca.display());
    assert_eq!(
        ok(&cli_with(
            port,
            "secure",
            "secure-pw",
            &["--ssl", &ca],
            "SELECT CURRENT_USER()"
        )),
        "secure@%"
    );

    // Locked: 4151. Another plugin: refused, the reason in the log.
    let locked = err(&cli_with(port, "locked", "locked-pw", &[], "SELECT 1"));
    assert!(locked.contains("4151"), "{locked}");
    let ed = err(&cli_with(port, "ed", "ed-pw", &[], "SELECT 1"));
    assert!(ed.contains("1045"), "{ed}");
    assert!(
        proxy.log().contains("plugin=ed25519"),
        "the log says why: {}",
        proxy.log()
    );

    // MAX_USER_CONNECTIONS: the proxy holds the account to it (and its
    // connection to the server, kept for the next session, is the one).
    let py = format!(
        r#"
import pymysql, time
def connect():
    return pymysql.connect(host="127.0.0.1", port={port}, user="capped", password="capped-pw", database="app")
a = connect()
a.cursor().execute("SELECT 1")
try:
    connect()
    print("second session admitted")
except pymysql.err.OperationalError as e:
    print(e.args[0])
a.close()
for _ in range(40):
    try:
        b = connect()
        b.cursor().execute("SELECT 1")
        print("admitted once the first ended")
        break
    except pymysql.err.OperationalError:
        time.sleep(0.05)
"#
    );
    let out = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert_eq!(ok(&out), "1226\nadmitted once the first ended");

    // An account created after the last read logs in at once (a name not
    // known makes the proxy read again, at most once every 2 s), and a
    // changed password is followed at the next login.
    db.sql(
        "CREATE USER carol@'%' IDENTIFIED BY 'carol-pw';
         GRANT SELECT ON app.* TO carol@'%';",
    );
    assert_eq!(
        ok(&cli_with(
            port,
            "carol",
            "carol-pw",
            &[],
            "SELECT CURRENT_USER()"
        )),
        "carol@%"
    );
    db.sql("ALTER USER alice@'%' IDENTIFIED BY 'alice-new'");
    assert_eq!(
        ok(&cli_with(
            port,
            "alice",
            "alice-new",
            &[],
            "SELECT CURRENT_USER()"
        )),
        "alice@%"
    );
    let old = err(&cli_with(port, "alice", "alice-pw", &[], "SELECT 1"));
    assert!(old.contains("1045"), "{old}");

    // A dropped account is gone after the next periodic read.
    db.sql("DROP USER bob@'%'");
    std::thread::sleep(Duration::from_millis(2500));
    let dropped = err(&cli_with(port, "bob", "bob-pw", &[], "SELECT 1"));
    assert!(dropped.contains("1045"), "{dropped}");

    // COM_CHANGE_USER moves the session to the other account's grants.
    let py = format!(
        r#"
import mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port={port}, user="carol", password="carol-pw", database="app", ssl_disabled=True)
k = c.cursor()
k.execute("SELECT CURRENT_USER()"); print(k.fetchone()[0])
c.cmd_change_user(username="alice", password="alice-new", database="app")
k = c.cursor()
k.execute("SELECT CURRENT_USER()"); print(k.fetchone()[0])
k.execute("INSERT INTO t VALUES (3)")
c.commit()
"#
    );
    let out = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python3");
    assert_eq!(ok(&out), "carol@%\nalice@%", "{}", proxy.log());
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.t"), "2");
}
