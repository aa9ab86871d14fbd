//! TLS to clients: real clients (the mariadb CLI, PyMySQL, MySQL
//! Connector/Python, sysbench) verify the proxy's certificate and run
//! statements through it; accounts and the proxy can require TLS.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use zerodb_testkit::certs::{self, Certs};

fn config(db: &MariaDb, c: &Certs, require: bool) -> String {
    one_datahost_config(&[db]).replace(
        "users:\n",
        &format!(
            "tls: {{cert: '{}', key: '{}', require: {require}}}\nusers:\n  - {{name: secure, password: s-pw, require_tls: true}}\n",
            c.cert.display(),
            c.key.display()
        ),
    )
}

#[test]
fn clients_verify_the_proxy_and_run_over_tls() {
    let db = MariaDb::start("m1", 1);
    let c = certs::make("tls-certs");
    let proxy = start_proxy(&config(&db, &c, false));
    let ca = format!("--ssl-ca={}", c.ca.display());
    let verified = ["--ssl", ca.as_str(), "--ssl-verify-server-cert"];

    // The CLI verifies the certificate and says TLS is in use.
    let status = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &verified,
        "status",
    ));
    assert!(status.contains("Cipher in use is TLS"), "{status}");
    // Results of any size pass whole, both ways.
    let n = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &verified,
        "SELECT LENGTH(REPEAT('x', 20000000)), LENGTH(CONCAT(REPEAT('y', 3000000), ''))",
    ));
    assert_eq!(n.trim(), "20000000\t3000000");
    let big = ok(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &verified,
        "SELECT REPEAT('z', 5000000)",
    ));
    assert_eq!(big.trim().len(), 5_000_000);

    // An account that requires TLS is refused in clear, let in over TLS.
    let e = err(&cli_with(
        proxy.port,
        "secure",
        "s-pw",
        &["--skip-ssl"],
        "SELECT 1",
    ));
    assert!(e.contains("1045"), "{e}");
    assert_eq!(
        ok(&cli_with(
            proxy.port, "secure", "s-pw", &verified, "SELECT 1"
        ))
        .trim(),
        "1"
    );
    // In clear, other accounts still work.
    assert_eq!(
        ok(&cli_with(
            proxy.port,
            APP_USER,
            APP_PASSWORD,
            &["--skip-ssl"],
            "SELECT 2"
        ))
        .trim(),
        "2"
    );

    // Two Python drivers, verifying the certificate.
    let script = format!(
        r#"
import pymysql, mysql.connector
p = pymysql.connect(host="127.0.0.1", port={port}, user="secure", password="s-pw", database="app",
                    ssl_ca="{ca}", ssl_verify_cert=True, ssl_verify_identity=True)
cur = p.cursor(); cur.execute("SELECT 40 + 2"); print("pymysql", cur.fetchone()[0], p._sock.version())
m = mysql.connector.connect(host="127.0.0.1", port={port}, user="secure", password="s-pw", database="app",
                            ssl_ca="{ca}", ssl_verify_cert=True, ssl_verify_identity=True, use_pure=True)
cur = m.cursor(prepared=True); cur.execute("SELECT ? + 1", (41,)); print("connector", cur.fetchone()[0])
"#,
        port = proxy.port,
        ca = c.ca.display()
    );
    let py = ok(&Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3"));
    assert!(py.contains("pymysql 42 TLSv1."), "{py}");
    assert!(py.contains("connector 42"), "{py}");

    // sysbench over TLS, with prepared statements.
    let sysbench = |step: &str| {
        c.sysbench(
            proxy.port,
            &[
                "oltp_point_select",
                "--tables=1",
                "--table-size=100",
                "--time=2",
                "--threads=2",
                step,
            ],
        )
    };
    ok(&sysbench("prepare"));
    let sb = sysbench("run");
    let report = ok(&sb);
    assert!(report.contains("queries:"), "{report}");
    assert!(!report.contains("FATAL"), "{report}");
}

#[test]
fn tls_can_be_required_and_certificates_reloaded() {
    let db = MariaDb::start("m1", 1);
    let first = certs::make("tls-first");
    let proxy = start_proxy(&config(&db, &first, false));
    let ca = |c: &Certs| format!("--ssl-ca={}", c.ca.display());
    let second = certs::make("tls-second");

    // New certificate and `require` by reload: new sessions are served
    // with the new certificate, and clear ones refused with 3159.
    let path = proxy.dir.join("config.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text
        .replace(
            &first.cert.display().to_string(),
            &second.cert.display().to_string(),
        )
        .replace(
            &first.key.display().to_string(),
            &second.key.display().to_string(),
        )
        .replace("require: false", "require: true");
    std::fs::write(&path, text).expect("config");
    let (code, body) = proxy.http_post("/config/reload", "").expect("reload");
    assert_eq!(code, 200, "{body}");
    let e = err(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--skip-ssl"],
        "SELECT 1",
    ));
    assert!(e.contains("3159"), "{e}");
    let old_ca = ca(&first);
    let e = err(&cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--ssl", &old_ca, "--ssl-verify-server-cert"],
        "SELECT 1",
    ));
    assert!(
        e.to_lowercase().contains("ssl") || e.contains("2026"),
        "{e}"
    );
    let new_ca = ca(&second);
    let out = cli_with(
        proxy.port,
        APP_USER,
        APP_PASSWORD,
        &["--ssl", &new_ca, "--ssl-verify-server-cert"],
        "SELECT 3",
    );
    assert_eq!(ok(&out).trim(), "3");
}

#[test]
fn the_proxy_reaches_its_datasources_over_tls_as_the_mode_says() {
    let c = certs::make("tls-backend");
    let opts = c.server_options();
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let db = MariaDb::start_with("m1", 1, &opts);
    // The server refuses the proxy's login in clear from now on.
    db.sql(&format!("ALTER USER '{BACKEND_USER}'@'%' REQUIRE SSL"));
    let other = certs::make("tls-other-ca");
    let with_mode = |tls: &str| {
        one_datahost_config(&[&db]).replace(
            "    datasources:",
            &format!("    tls: {tls}\n    datasources:"),
        )
    };

    // verify_identity: the certificate is for 127.0.0.1, signed by `ca`;
    // the server reports the proxy's session as encrypted.
    let proxy = start_proxy(&with_mode(&format!(
        "{{mode: verify_identity, ca: '{}'}}",
        c.ca.display()
    )));
    let cipher = proxy.sql("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER'");
    assert!(
        cipher.starts_with("TLS_") || cipher.contains("AES"),
        "{cipher}"
    );
    assert_eq!(proxy.sql("SELECT LENGTH(REPEAT('x', 3000000))"), "3000000");
    drop(proxy);

    // required: encrypted without verification; in clear the server
    // refuses the login, so a statement fails.
    let proxy = start_proxy(&with_mode("{mode: required}"));
    assert_eq!(proxy.sql("SELECT 1"), "1");
    drop(proxy);
    let proxy = start_proxy(&one_datahost_config(&[&db]));
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "SELECT 1");
    assert!(
        !out.status.success(),
        "the server requires TLS of the proxy's login"
    );

    // A CA that did not sign the server's certificate: refused.
    let proxy = start_proxy(&with_mode(&format!(
        "{{mode: verify_ca, ca: '{}'}}",
        other.ca.display()
    )));
    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "SELECT 1");
    assert!(!out.status.success(), "an unknown CA is refused");
    assert!(proxy.log().contains("TLS"), "{}", proxy.log());
}

#[test]
fn the_control_plane_runs_over_mutual_tls_and_fails_over() {
    let bins = bins();
    let c = certs::make("control-tls");
    let tls = format!(
        "control_tls: {{cert: '{}', key: '{}', ca: '{}', mutual: true}}\n",
        c.cert.display(),
        c.key.display(),
        c.ca.display()
    );
    let (mut m1, m11) = pair(&[], &[]);
    let (a1p, a11p) = (agent_port(), agent_port());
    let agents = [(m1.name.as_str(), a1p), (m11.name.as_str(), a11p)];
    let keeper = start_keeper(&bins, &one_dh(&m1, &m11), &agents, &tls);
    let _a1 = start_agent_with(&bins, &m1, a1p, keeper.port, "", &tls);
    let _a11 = start_agent_with(&bins, &m11, a11p, keeper.port, "", &tls);
    let proxy = start_member(&bins, "p1", keeper.port, &one_dh(&m1, &m11), &tls);
    wait_registered(&keeper, 1);
    assert!(
        proxy.log().contains("wss://") || keeper.log().contains("TLS"),
        "{}",
        keeper.log()
    );

    // The keeper's control listener speaks only TLS, and only to callers
    // with a certificate from the CA.
    let plain = http(keeper.port, "GET", "/v1/proxy", None, Some(TOKEN));
    assert!(
        plain.as_ref().is_none_or(|(code, _)| *code == 0),
        "{plain:?}"
    );
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="127.0.0.1")
    s.sendall(b"GET /v1/proxy HTTP/1.1\r\nHost: k\r\n\r\n")
    print("answered", s.recv(64))
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("refused", type(e).__name__)
"#,
        ca = c.ca.display(),
        port = keeper.port
    );
    let py = ok(&Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3"));
    assert!(
        py.starts_with("refused"),
        "a caller without a certificate: {py}"
    );

    // The whole switch runs over it: votes, the agents' reports and orders.
    assert_eq!(proxy.sql("SELECT @@server_id"), "1");
    m1.kill();
    wait_for("the switch to mysql_11", Duration::from_secs(30), || {
        active_of(&proxy, "dh1") == "mysql_11"
    });
    assert_eq!(proxy.sql("SELECT @@server_id"), "11");
}
