//! The seed's policy keys (SPEC §2), exactly as operators write them: flat,
//! dotted, with the seed's example values as defaults.

use serde::{Deserialize, Serialize};

/// Fault-tolerance policy. Field names are the seed's keys verbatim.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Policy {
    #[serde(rename = "need_vote")]
    pub need_vote: bool,
    /// Percent (0–100) of voters that must approve, strictly exceeded.
    #[serde(rename = "need_vote.approve_ratio")]
    pub approve_ratio: u32,
    #[serde(rename = "unregister_when_switch_rejected")]
    pub unregister_when_switch_rejected: bool,
    #[serde(rename = "unregister_switch_rejected_number")]
    pub unregister_switch_rejected_number: u32,
    #[serde(rename = "unregister_when_switch_rejected.down_host_num")]
    pub unregister_down_host_num: u32,
    #[serde(rename = "offline_when_lost_keeper")]
    pub offline_when_lost_keeper: bool,
    #[serde(rename = "offline_switch_rejected_number")]
    pub offline_switch_rejected_number: u32,
    #[serde(rename = "offline_when_lost_keeper.down_host_num")]
    pub offline_down_host_num: u32,
    #[serde(rename = "self_back_online")]
    pub self_back_online: bool,
    #[serde(rename = "need_target_load_check")]
    pub need_target_load_check: bool,
    #[serde(rename = "need_target_load_check.safe_load")]
    pub safe_load: f64,
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
