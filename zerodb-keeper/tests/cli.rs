//! The keeper's command line: a good config checks, a bad one is refused
//! with a message that says why.

use std::process::Command;

fn keeper(config: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("zerodb-keeper-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("k{}.yaml", config.len()));
    std::fs::write(&path, config).expect("write");
    Command::new(env!("CARGO_BIN_EXE_zerodb-keeper"))
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run zerodb-keeper")
}

const GOOD: &str = "token: t\ndatahosts:\n  - name: dh1\n    user: u\n    datasources:\n      - {name: mysql_1, addr: \"127.0.0.1:3306\", agent: \"127.0.0.1:7801\"}\n\
need_vote.approve_ratio: 60\nneed_binlog_check.safe_binlog_delay: 1000\ncooldown: 5s\n";

#[test]
fn a_good_config_checks() {
    let out = keeper(GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dataHost"));
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    for (text, why) in [
        (GOOD.replace("token: t\n", ""), "token"),
        (format!("{GOOD}need_vot: true\n"), "need_vot"),
        (GOOD.replace("60", "160"), "percentage"),
        (GOOD.replace("5s", "5 parsecs"), "duration"),
    ] {
        let out = keeper(&text);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn switchover_command_reports_an_unreachable_keeper() {
    let out = Command::new(env!("CARGO_BIN_EXE_zerodb-keeper"))
        .args([
            "switchover",
            "--admin",
            "127.0.0.1:1",
            "--token",
            "t",
            "--datahost",
            "dh1",
        ])
        .output()
        .expect("run zerodb-keeper");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("switchover refused or failed"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_zerodb-keeper"))
        .output()
        .expect("run zerodb-keeper");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
