//! The embedding example works from outside the library: its hook answers
//! with its own error and everything else passes through.

use zerodb_testkit::*;

#[test]
fn hook_refuses_unbounded_writes() {
    let db = MariaDb::start("m1", 1);
    let proxy = Proxy::start(
        env!("CARGO_BIN_EXE_guarded-proxy").as_ref(),
        &one_datahost_config(&[&db]),
    );
    proxy.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)");

    let out = proxy.cli(APP_USER, APP_PASSWORD, "app", "DELETE FROM t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1175") && err.contains("guarded-proxy"),
        "{err}"
    );
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM app.t"),
        "2",
        "nothing reached the server"
    );

    proxy.sql("DELETE FROM t WHERE id = 1; UPDATE t SET id = 3 WHERE id = 2");
    assert_eq!(db.sql("SELECT id FROM app.t"), "3");
}
