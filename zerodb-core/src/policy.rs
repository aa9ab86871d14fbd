//! The seed's policy keys (SPEC §2), exactly as operators write them: flat,
//! dotted, with the seed's example values as defaults.

use serde::{Deserialize, Serialize};

/// Fault-tolerance policy. Field names are the seed's keys verbatim.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Policy {
    /// `need_vote`: ask every registered proxy to probe the source before a switch (default true).
    #[serde(rename = "need_vote")]
    pub need_vote: bool,
    /// Percent (0–100) of voters that must approve, strictly exceeded.
    #[serde(rename = "need_vote.approve_ratio")]
    pub approve_ratio: u32,
    /// `unregister_when_switch_rejected`: the proxy unregisters itself when its switch requests
    /// keep failing the vote on enough dataHosts (default true).
    #[serde(rename = "unregister_when_switch_rejected")]
    pub unregister_when_switch_rejected: bool,
    /// `unregister_switch_rejected_number`: consecutive vote rejections after which a dataHost
    /// counts toward unregistering (default 3).
    #[serde(rename = "unregister_switch_rejected_number")]
    pub unregister_switch_rejected_number: u32,
    /// `unregister_when_switch_rejected.down_host_num`: how many dataHosts at that count make the
    /// proxy unregister, capped at the dataHosts it serves (default 2).
    #[serde(rename = "unregister_when_switch_rejected.down_host_num")]
    pub unregister_down_host_num: u32,
    /// `offline_when_lost_keeper`: the proxy goes offline when its switch requests keep failing to
    /// reach the keeper on enough dataHosts (default true).
    #[serde(rename = "offline_when_lost_keeper")]
    pub offline_when_lost_keeper: bool,
    /// `offline_switch_rejected_number`: consecutive switch requests that could not reach the
    /// keeper after which a dataHost counts toward going offline (default 3).
    #[serde(rename = "offline_switch_rejected_number")]
    pub offline_switch_rejected_number: u32,
    /// `offline_when_lost_keeper.down_host_num`: how many dataHosts at that count take the proxy
    /// offline, capped at the dataHosts it serves (default 4).
    #[serde(rename = "offline_when_lost_keeper.down_host_num")]
    pub offline_down_host_num: u32,
    /// `self_back_online`: an offline or unregistered proxy serves again once every dataHost's
    /// active datasource answers (default true).
    #[serde(rename = "self_back_online")]
    pub self_back_online: bool,
    /// `need_target_load_check`: refuse a switch when the target's load is unknown or at least
    /// `safe_load` (default true).
    #[serde(rename = "need_target_load_check")]
    pub need_target_load_check: bool,
    /// `need_target_load_check.safe_load`: the load the target must stay below, in the configured
    /// load measure's unit (default 2).
    #[serde(rename = "need_target_load_check.safe_load")]
    pub safe_load: f64,
    /// `need_binlog_check`: check before a switch that the target has caught up with the source
    /// (default true).
    #[serde(rename = "need_binlog_check")]
    pub need_binlog_check: bool,
    /// Present: strict binlog check within this many bytes; absent: lenient.
    #[serde(rename = "need_binlog_check.safe_binlog_delay")]
    pub safe_binlog_delay: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            need_vote: true,
            approve_ratio: 50,
            unregister_when_switch_rejected: true,
            unregister_switch_rejected_number: 3,
            unregister_down_host_num: 2,
            offline_when_lost_keeper: true,
            offline_switch_rejected_number: 3,
            offline_down_host_num: 4,
            self_back_online: true,
            need_target_load_check: true,
            safe_load: 2.0,
            need_binlog_check: true,
            safe_binlog_delay: None,
        }
    }
}

impl Policy {
    /// Every policy key, as written in a config file.
    pub const KEYS: [&'static str; 13] = [
        "need_vote",
        "need_vote.approve_ratio",
        "unregister_when_switch_rejected",
        "unregister_switch_rejected_number",
        "unregister_when_switch_rejected.down_host_num",
        "offline_when_lost_keeper",
        "offline_switch_rejected_number",
        "offline_when_lost_keeper.down_host_num",
        "self_back_online",
        "need_target_load_check",
        "need_target_load_check.safe_load",
        "need_binlog_check",
        "need_binlog_check.safe_binlog_delay",
    ];

    /// The environment variable that overrides a policy key: `ZERODB_` then
    /// the key upper-cased with each `.` written as `__` (shell names cannot
    /// hold dots), e.g. `ZERODB_NEED_VOTE__APPROVE_RATIO`.
    pub fn env_name(key: &str) -> String {
        format!("ZERODB_{}", key.to_ascii_uppercase().replace('.', "__"))
    }
}
