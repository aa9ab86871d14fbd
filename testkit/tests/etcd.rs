//! The etcd harness against real etcd processes: quorum through kills and
//! restarts, pause, data loss, authentication.

use std::process::Output;
use std::time::{Duration, Instant};
use zerodb_testkit::etcd::EtcdCluster;

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn ok(c: &EtcdCluster, out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", text(&out), c.logs());
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[track_caller]
fn put(c: &EtcdCluster, key: &str, value: &str) {
    assert_eq!(ok(c, c.etcdctl(&["put", key, value])), "OK");
}

/// A put retried (2 s each) until it succeeds, within 15 s: one in flight
/// when etcd's leader goes away is lost and fails at its timeout.
#[track_caller]
fn put_eventually(c: &EtcdCluster, key: &str, value: &str) {
    let t = Instant::now();
    loop {
        let out = c.etcdctl(&["--command-timeout=2s", "put", key, value]);
        if out.status.success() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "put {key}: {}\n{}",
            text(&out),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `etcdctl get --print-value-only`: "" when the key is absent.
#[track_caller]
fn get(c: &EtcdCluster, key: &str) -> String {
    ok(c, c.etcdctl(&["get", "--print-value-only", key]))
}

#[test]
fn etcd_cluster_quorum_wipe_and_auth() {
    let t0 = Instant::now();
    let mut c = EtcdCluster::start("harness", 3);
    eprintln!("started in {:?}: {}", t0.elapsed(), c.endpoints_csv());
    assert_eq!(c.len(), 3);
    assert_eq!(c.endpoints().len(), 3);
    assert!(c.endpoints().iter().all(|e| e.starts_with("127.0.0.1:")));
    put(&c, "/k", "v1");
    assert_eq!(get(&c, "/k"), "v1");

    // A paused leader answers nothing; the other two elect a new one.
    let leader = c.leader().expect("a leader");
    c.pause(leader);
    assert!(c.is_running(leader));
    put_eventually(&c, "/k", "v-paused");
    let next = c.leader().expect("a new leader");
    assert_ne!(next, leader);
    c.resume(leader);

    // One member down (the leader): two of three still commit.
    c.kill(next);
    assert!(!c.is_running(next));
    put_eventually(&c, "/k", "v2");
    assert_eq!(get(&c, "/k"), "v2");

    // Two down: no quorum, a put times out.
    let other = (0..3)
        .find(|&i| i != next && c.is_running(i))
        .expect("a member");
    c.kill(other);
    let t = Instant::now();
    let out = c.etcdctl(&["--command-timeout=2s", "put", "/k", "v3"]);
    assert!(!out.status.success(), "put without quorum: {}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Both back, on the same ports and data: the data is still there.
    c.restart(next);
    c.restart(other);
    assert!((0..3).all(|i| c.is_running(i)));
    c.wait_healthy();
    // The timed-out put is indeterminate: the lone member may have logged
    // it, and then it commits once the others are back.
    let v = get(&c, "/k");
    assert!(v == "v2" || v == "v3", "{v}");
    put(&c, "/k", "v4");
    assert_eq!(get(&c, "/k"), "v4");

    // Data lost: an empty cluster on the same endpoints.
    let endpoints = c.endpoints();
    c.wipe();
    assert_eq!(c.endpoints(), endpoints);
    assert_eq!(get(&c, "/k"), "");
    put(&c, "/k", "after-wipe");
    assert_eq!(get(&c, "/k"), "after-wipe");

    // Auth: anonymous requests fail, the user reads and writes anywhere.
    c.enable_auth("zerodb", "etcd-pw");
    let anon = c.etcdctl(&["get", "/k"]);
    assert!(!anon.status.success(), "anonymous get: {}", text(&anon));
    let got = ok(
        &c,
        c.etcdctl_as("zerodb", "etcd-pw", &["get", "--print-value-only", "/k"]),
    );
    assert_eq!(got, "after-wipe");
    ok(
        &c,
        c.etcdctl_as("zerodb", "etcd-pw", &["put", "/other/key", "x"]),
    );
    let bad = c.etcdctl_as("zerodb", "wrong", &["get", "/k"]);
    assert!(!bad.status.success(), "wrong password: {}", text(&bad));
    // Health checks still pass with auth on (they log in as root).
    c.kill(2);
    c.restart(2);
    c.wait_healthy();

    eprintln!("total {:?}", t0.elapsed());
}
