//! Who may decide. A sole keeper (the file store) always may. Keepers on
//! etcd (SPEC §8) may only while one of them leads under an etcd lease,
//! and only while that lease is surely still held: from the moment an
//! acknowledged keep-alive was *sent*, for one TTL. A keeper that was
//! paused or cut off from etcd therefore stops acting as soon as it runs
//! again, before it even learns that it was replaced; what it had already
//! sent is refused by agents and proxies through the term.
//!
//! [`Leadership`] is what the rest of the keeper asks; the etcd module
//! moves it from role to role.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The leader as followers see it: what its key in etcd holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The leading keeper's control address, as proxies and agents dial it.
    pub advertise: String,
    /// Its admin address, if it has one.
    #[serde(default)]
    pub admin: Option<String>,
    /// The term it leads under, once its takeover wrote it.
    #[serde(default)]
    pub term: Option<u64>,
}

/// A keeper's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The only keeper (file store): it always decides.
    Sole,
    /// It won the election and is taking over: reserving a fresh epoch and
    /// term, ending its predecessor's switch. It acts (its orders go out)
    /// but registers nobody yet.
    TakingOver,
    /// It leads under `term`.
    Leader {
        /// The term it leads under.
        term: u64,
    },
    /// Another keeper leads (`None`: an election is under way, or etcd
    /// cannot be reached).
    Follower {
        /// The leader, when known.
        leader: Option<LeaderInfo>,
    },
}

/// A keeper's role, and how long its lease surely lasts.
#[derive(Debug)]
pub struct Leadership {
    role: watch::Sender<Role>,
    /// Until when the lease is surely held (keepers on etcd).
    held_until: Mutex<Option<Instant>>,
    /// Leadership changes seen, for `/status`.
    changes: std::sync::atomic::AtomicU64,
    /// The term of its current leadership (0 before any).
    term: std::sync::atomic::AtomicU64,
}

impl Leadership {
    /// A sole keeper: it always decides.
    pub fn sole() -> Self {
        Self::with_role(Role::Sole)
    }

    /// A keeper on etcd before it has heard anything: a follower that
    /// knows no leader.
    pub fn follower() -> Self {
        Self::with_role(Role::Follower { leader: None })
    }

    fn with_role(role: Role) -> Self {
        Self {
            role: watch::channel(role).0,
            held_until: Mutex::new(None),
            changes: std::sync::atomic::AtomicU64::new(0),
            term: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Its role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Watches its role.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Whether it may act now: send orders, holds, votes, topologies.
    pub fn acting(&self) -> bool {
        match &*self.role.borrow() {
            Role::Sole => true,
            Role::TakingOver | Role::Leader { .. } => self.lease_left().is_some(),
            Role::Follower { .. } => false,
        }
    }

    /// Whether proxies may register with it (it leads, its takeover done).
    pub fn serving(&self) -> bool {
        match &*self.role.borrow() {
            Role::Sole => true,
            Role::Leader { .. } => self.lease_left().is_some(),
            Role::TakingOver | Role::Follower { .. } => false,
        }
    }

    /// How long its lease surely lasts (`None`: no lease, or expired).
    pub fn lease_left(&self) -> Option<Duration> {
        let until = (*self.held_until.lock().unwrap_or_else(|e| e.into_inner()))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// The lease is surely held until `until`. A lapse is final: once the
    /// deadline passed, a renewal answered late does not bring the keeper
    /// back (it may have withheld orders meanwhile); it steps down, and
    /// whoever leads next rolls back what it left half done.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn lease_held_until(&self, until: Instant) {
        let mut h = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        match *h {
            Some(old) if old <= Instant::now() => {}
            Some(old) => *h = Some(old.max(until)),
            None => *h = Some(until),
        }
    }

    /// Whether it may act on behalf of `term`: it may act now, and `term`
    /// is the one it leads under (a sole keeper's is always 0). A switch
    /// begun under an earlier leadership of this same keeper (it lost the
    /// lead and won it back) gives no more orders.
    pub fn acting_for(&self, term: u64) -> bool {
        self.acting()
            && match &*self.role.borrow() {
                Role::Sole => true,
                Role::TakingOver | Role::Leader { .. } => {
                    self.term.load(std::sync::atomic::Ordering::SeqCst) == term
                }
                Role::Follower { .. } => false,
            }
    }

    /// The term it now leads under (set as soon as its takeover wrote it).
    pub(crate) fn lead_under(&self, term: u64) {
        self.term.store(term, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves to `role`; leaving a leading role forgets the lease.
    pub(crate) fn set(&self, role: Role) {
        let leading = |r: &Role| matches!(r, Role::TakingOver | Role::Leader { .. });
        if !leading(&role) {
            *self.held_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.lead_under(0);
        }
        let was_leading = leading(&self.role.borrow());
        if was_leading != leading(&role) {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("zerodb_keeper_leadership_changes_total").increment(1);
            metrics::gauge!("zerodb_keeper_leader").set(if leading(&role) { 1.0 } else { 0.0 });
        }
        self.role.send_replace(role);
    }

    /// How many times it started or stopped leading.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `/status` view: role, term, leader, lease left.
    pub fn status(&self) -> serde_json::Value {
        let lease_left_ms = self.lease_left().map(|d| d.as_millis() as u64);
        match self.role() {
            Role::Sole => serde_json::json!({"role": "sole"}),
            Role::TakingOver => {
                serde_json::json!({"role": "taking_over", "lease_left_ms": lease_left_ms})
            }
            Role::Leader { term } => serde_json::json!({
                "role": "leader", "term": term, "lease_left_ms": lease_left_ms,
                "changes": self.changes(),
            }),
            Role::Follower { leader } => serde_json::json!({
                "role": "follower", "leader": leader, "changes": self.changes(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_acts_only_while_its_lease_surely_lasts() {
        let l = Leadership::follower();
        assert!(!l.acting() && !l.serving());
        l.set(Role::TakingOver);
        assert!(!l.acting(), "no lease yet");
        l.lease_held_until(Instant::now() + Duration::from_secs(5));
        assert!(
            l.acting() && !l.serving(),
            "taking over: acts, registers nobody"
        );
        l.set(Role::Leader { term: 3 });
        assert!(l.acting() && l.serving());
        // A keep-alive answered late never shortens what is known.
        l.lease_held_until(Instant::now());
        assert!(l.lease_left().is_some());
        l.lead_under(3);
        assert!(l.acting_for(3) && !l.acting_for(2), "bound to its term");
        l.set(Role::Follower { leader: None });
        assert!(!l.acting());
        l.set(Role::Leader { term: 4 });
        assert!(!l.acting(), "a lease is never carried over a step down");
        l.lease_held_until(Instant::now() - Duration::from_millis(1));
        assert!(!l.acting(), "an expired lease");
        l.lease_held_until(Instant::now() + Duration::from_secs(5));
        assert!(
            !l.acting(),
            "a lapse is final: a late renewal does not revive it"
        );
        assert!(!l.acting_for(0));
        assert_eq!(l.changes(), 3);
        assert!(Leadership::sole().acting() && Leadership::sole().acting_for(0));
    }
}
