//! The agent's command line: a good config checks, a bad one is refused.

use std::process::Command;

fn agent(config: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("zerodb-agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("a{}.yaml", config.len()));
    std::fs::write(&path, config).expect("write");
    Command::new(env!("CARGO_BIN_EXE_zerodb-agent"))
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run zerodb-agent")
}

const GOOD: &str = "token: t\nkeeper: 127.0.0.1:7700\n\
datasource: {name: mysql_1, addr: \"127.0.0.1:3306\", user: admin, binlog_index: /var/lib/mysql/mysql-bin.index}\n";

#[test]
fn a_good_config_checks() {
    let out = agent(GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("mysql_1"));
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    for (text, why) in [
        (GOOD.replace("token: t\n", ""), "token"),
        (GOOD.replace("name: mysql_1, ", ""), "name"),
        (format!("{GOOD}heartbeat: 1s\n"), "heartbeat"),
    ] {
        let out = agent(&text);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
    }
}
