//! A session's autocommit is what its login said, on every server it runs
//! on: the login OK carries the server's global autocommit, and a session
//! moved to a server with another default keeps its own.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn client(port: u16, user: &str, password: &str, mode: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(
        repo_tests_dir()
            .join("clients")
            .join("autocommit_client.py"),
    )
    .args(["127.0.0.1", &port.to_string(), user, password, "app", mode]);
    c
}

/// `login autocommit=X server=Y` of one login on `port`.
fn login_line(port: u16, user: &str, password: &str) -> String {
    ok(&client(port, user, password, "login")
        .output()
        .expect("python3"))
}

#[test]
fn sessions_keep_the_autocommit_their_login_announced() {
    let m1 = MariaDb::start("mysql_1", 1);
    let m11 = MariaDb::start("mysql_11", 11);
    m11.replicate_from(&m1);
    // The standby's DBA turned autocommit off for new sessions, and
    // backslash escapes too (clients then escape a quote by doubling it).
    m11.sql("SET GLOBAL autocommit = 0");
    m11.sql("SET GLOBAL sql_mode = CONCAT(@@global.sql_mode, ',NO_BACKSLASH_ESCAPES')");
    let proxy = start_proxy(&one_datahost_config(&[&m1, &m11]));
    proxy.sql("CREATE TABLE ac (id INT PRIMARY KEY)");
    m11.catch_up(&m1);

    // On mysql_1 a login says autocommit on, as a direct login does.
    assert_eq!(
        login_line(proxy.port, APP_USER, APP_PASSWORD),
        "login autocommit=1 server=1 escapes='\\''"
    );

    // A session told "autocommit on" writes on mysql_1, is moved to
    // mysql_11, writes again and leaves without COMMIT.
    let mut session = client(proxy.port, APP_USER, APP_PASSWORD, "session")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(session.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "login autocommit=1");
    assert_eq!(next(), "ready");
    m11.catch_up(&m1);
    let (code, body) = proxy.swap("mysql_11", 1);
    assert_eq!(code, 200, "{body}");
    m11.sql("STOP SLAVE");
    writeln!(session.stdin.as_mut().expect("stdin"), "go").expect("go");
    let after = next();
    let done = next();
    let status = session.wait().expect("wait");
    let mut stderr = String::new();
    if let Some(mut e) = session.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success() && done == "done",
        "{after} {done} {stderr}\nproxy log:\n{}",
        proxy.log()
    );
    assert_eq!(
        after, "after autocommit=1",
        "the moved session kept its autocommit"
    );
    // Both acknowledged rows are committed on mysql_11, the second one
    // although mysql_11's sessions start with autocommit off.
    assert_eq!(
        m11.sql("SELECT GROUP_CONCAT(id ORDER BY id) FROM app.ac"),
        "1,2"
    );

    // A new login on mysql_11 says autocommit off and no backslash
    // escapes, as a direct one does, and the session runs that way.
    proxy.wait_idle();
    let direct = login_line(m11.port, BACKEND_USER, BACKEND_PASSWORD);
    assert_eq!(direct, "login autocommit=0 server=0 escapes=''''");
    assert_eq!(login_line(proxy.port, APP_USER, APP_PASSWORD), direct);
}
