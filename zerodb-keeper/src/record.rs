//! Every decision the keeper makes, with its inputs: the last 500 in
//! memory for `/decisions`, all of them appended to the store's audit
//! trail.

use crate::store::Store;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;
use zerodb_core::control::Request;
use zerodb_core::decision::{Decision, Member, Reports, Vote};

/// How many decisions `/decisions` shows.
const KEPT: usize = 500;

/// One recorded decision: its inputs, outcome and timings.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    /// A number of its own.
    pub id: u64,
    /// When the request arrived.
    pub requested_at_unix_ms: u64,
    /// When the decision was carried out.
    pub at_unix_ms: u64,
    /// What was asked.
    pub request: Request,
    /// The dataHost's active datasource when it was decided.
    pub active: String,
    /// The registered proxies.
    pub members: Vec<Member>,
    /// Their votes, when taken.
    pub votes: Option<BTreeMap<String, Vote>>,
    /// The agents' reports, when gathered.
    pub reports: Option<Reports>,
    /// The outcome.
    pub decision: Decision,
    /// The epoch of the new topology, when approved and carried out.
    pub epoch: Option<u64>,
    /// Milliseconds spent per phase (votes, reports, promote, publish).
    pub phases_ms: BTreeMap<&'static str, u64>,
}

/// The decisions made so far.
#[derive(Debug, Default)]
pub struct DecisionLog {
    recent: Mutex<VecDeque<DecisionRecord>>,
}

impl DecisionLog {
    /// Keeps `r`, and appends it to `store`'s audit trail.
    pub async fn record(&self, store: &dyn Store, r: DecisionRecord) {
        if let Ok(v) = serde_json::to_value(&r) {
            if let Err(e) = store.append_decision(&v).await {
                tracing::warn!(error = %e, "cannot append to the decisions' audit trail");
            }
        }
        let mut d = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= KEPT {
            d.pop_front();
        }
        d.push_back(r);
    }

    /// The last decisions, oldest first.
    pub fn recent(&self) -> Vec<DecisionRecord> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
