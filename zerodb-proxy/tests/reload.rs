//! Reloading the config (SIGHUP, `POST /config/reload`) while clients run:
//! users, routing, limits and operator tokens change; sessions go on; a bad
//! file or a key that needs a restart is refused and the config in force
//! stays.

mod common;

use common::*;
use std::time::Duration;

/// SIGHUP's number on Linux.
const SIGHUP: i32 = 1;

fn write_config(proxy: &Proxy, yaml: &str) {
    // What `Proxy::start` wrote first: its listen and admin lines.
    let path = proxy.dir.join("config.yaml");
    let old = std::fs::read_to_string(&path).expect("config");
    let head: String = old.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, format!("{head}{yaml}")).expect("write config");
}

fn reload(proxy: &Proxy, token: Option<&str>) -> (u16, String) {
    http(proxy.admin_port, "POST", "/config/reload", Some(""), token).expect("reload call")
}

fn server_id(port: u16, user: &str, password: &str, db: &str) -> String {
    let out = mariadb_cli(port, user, password, db, "SELECT @@server_id");
    assert!(
        out.status.success(),
        "{user}@{db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(
    m1: &MariaDb,
    m2: &MariaDb,
    users: &str,
    logs_schemas: &str,
    tokens: &std::path::Path,
) -> String {
    format!(
        "users:\n  - {{name: {APP_USER}, password: {APP_PASSWORD}}}\n{users}\
         admin_token_file: '{}'\n\
         datahosts:\n  - name: dh1\n    schemas: [app]\n    user: {BACKEND_USER}\n    password: {BACKEND_PASSWORD}\n    \
         datasources: [{{name: m1, addr: \"{}\"}}]\n  - name: dh2\n    schemas: {logs_schemas}\n    user: {BACKEND_USER}\n    \
         password: {BACKEND_PASSWORD}\n    datasources: [{{name: m2, addr: \"{}\"}}]\n",
        tokens.display(),
        m1.addr(),
        m2.addr()
    )
}

#[test]
fn a_reload_changes_users_routes_and_tokens_and_drops_no_client() {
    let m1 = MariaDb::start("m1", 1);
    let m2 = MariaDb::start("m2", 2);
    for db in [&m1, &m2] {
        db.sql("CREATE DATABASE IF NOT EXISTS logs; CREATE DATABASE IF NOT EXISTS audit");
    }
    let dir = scratch("reload-tokens");
    let tokens = dir.join("operators");
    std::fs::write(&tokens, "tok-one\n").expect("tokens");
    let proxy = start_proxy(&config(&m1, &m2, "", "[logs]", &tokens));
    assert_eq!(
        server_id(proxy.port, APP_USER, APP_PASSWORD, "audit"),
        "1",
        "unmapped: dh1"
    );

    // A session that runs across every reload below.
    let long = app_query_in_background(proxy.port, "SELECT SLEEP(4), 'still here'");
    std::thread::sleep(Duration::from_millis(300));

    // SIGHUP: a new user, `audit` routed to dh2, a second operator token.
    write_config(
        &proxy,
        &config(
            &m1,
            &m2,
            "  - {name: newbie, password: new-pw}\n",
            "[logs, audit]",
            &tokens,
        ),
    );
    std::fs::write(&tokens, "tok-one\ntok-two\n").expect("tokens");
    proxy.signal(SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || {
        proxy.log().contains("config reloaded")
    });
    assert_eq!(server_id(proxy.port, "newbie", "new-pw", "app"), "1");
    assert_eq!(
        server_id(proxy.port, APP_USER, APP_PASSWORD, "audit"),
        "2",
        "routed anew"
    );

    // The admin call takes either operator token, and nothing else.
    assert_eq!(reload(&proxy, None).0, 401);
    assert_eq!(reload(&proxy, Some("tok-zero")).0, 401);
    let (code, body) = reload(&proxy, Some("tok-two"));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"changed\":[]"),
        "nothing changed since: {body}"
    );
    assert_eq!(
        http(proxy.admin_port, "POST", "/pools/flush", Some(""), None).map(|r| r.0),
        Some(401),
        "every call that acts needs the token"
    );

    // A file that does not check is refused with its reason; so is a key
    // that needs a restart. The config in force stays.
    write_config(
        &proxy,
        &config(
            &m1,
            &m2,
            "  - {name: x, password_hash: nonsense}\n",
            "[logs, audit]",
            &tokens,
        ),
    );
    let (code, body) = reload(&proxy, Some("tok-one"));
    assert_eq!(code, 409);
    assert!(body.contains("password_hash"), "{body}");
    write_config(
        &proxy,
        &format!(
            "{}max_connections: 5\n",
            config(&m1, &m2, "", "[logs, audit]", &tokens)
        ),
    );
    let (code, body) = reload(&proxy, Some("tok-one"));
    assert_eq!(code, 409);
    assert!(
        body.contains("restart") && body.contains("max_connections"),
        "{body}"
    );
    assert_eq!(
        server_id(proxy.port, "newbie", "new-pw", "app"),
        "1",
        "still in force"
    );

    // The session that ran across all of it finished its statement.
    let out = long.join().expect("long session");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("still here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = proxy.http_get("/metrics").expect("metrics");
    assert!(
        metrics.contains("zerodb_config_reloads_total{result=\"refused\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("zerodb_config_last_reload_ok 0"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_keepers_calls_that_act_take_the_operator_token_read_again_on_sighup() {
    let m1 = MariaDb::start("m1", 1);
    let m2 = MariaDb::start("m2", 2);
    let dir = scratch("keeper-tokens");
    let tokens = dir.join("operators");
    std::fs::write(&tokens, "op-one\n").expect("tokens");
    let keeper = start_keeper(
        &bins(),
        &one_dh(&m1, &m2),
        &[],
        &format!("admin_token_file: '{}'\n", tokens.display()),
    );
    let call = |token: &str| {
        http(
            keeper.admin_port,
            "POST",
            "/maintenance",
            Some(r#"{"datahost":"dh1","on":false}"#),
            Some(token),
        )
        .expect("keeper admin")
        .0
    };
    assert_eq!(
        call(TOKEN),
        401,
        "the cluster token is the peers', not the operators'"
    );
    assert_eq!(call("op-one"), 200);
    std::fs::write(&tokens, "op-two\n").expect("tokens");
    keeper.signal(SIGHUP);
    wait_for("the token file read again", Duration::from_secs(10), || {
        keeper.log().contains("admin_token_file read again")
    });
    assert_eq!(call("op-one"), 401, "rotated out");
    assert_eq!(call("op-two"), 200);
    assert_eq!(
        keeper.http_get("/health").map(|r| r.0),
        Some(200),
        "still running"
    );
    let _ = std::fs::remove_dir_all(dir);
}
