//! Following the leading keeper of a group (SPEC §8), pure: which keeper a
//! proxy or an agent tries next ([`KeeperCursor`]), the newest term it has
//! seen ([`NewestTerm`]), what a switch request that got no acknowledgement
//! counts as ([`unacknowledged`]), and whether a proxy's offline rule
//! leaves the keepers time to elect a leader ([`election_warning`]).
//!
//! With one keeper (the file store, or `keeper: embedded`) all of this
//! reduces to what it was: the same keeper again, term 0.

use crate::governance::Outcome;
use crate::policy::Policy;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long keepers on etcd may go without a leader: the default lease
/// TTL (2 s) and one election (about 1 s).
pub const ELECTION_ALLOWANCE: Duration = Duration::from_secs(3);

/// The longest pause before asking the keepers again while they elect a
/// leader (`NotLeader` without one).
pub const ELECTION_PAUSE: Duration = Duration::from_millis(200);

/// When to try [`KeeperCursor::current`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// At once: another keeper, or the leader a follower named.
    Now,
    /// After a short pause ([`ELECTION_PAUSE`], or the reconnect interval if
    /// shorter): the keepers are electing a leader, or they name one
    /// another in circles.
    Shortly,
    /// After the reconnect interval: every listed keeper failed in turn.
    AfterRound,
}

impl Retry {
    /// The pause before the next attempt, given `cluster.reconnect_interval`.
    pub fn delay(self, reconnect_interval: Duration) -> Duration {
        match self {
            Retry::Now => Duration::ZERO,
            Retry::Shortly => reconnect_interval.min(ELECTION_PAUSE),
            Retry::AfterRound => reconnect_interval,
        }
    }
}

/// Which keeper to try: round robin through the configured list on
/// failures, straight to the leader a follower names.
///
/// A leader named by a follower but missing from the list is tried too;
/// if it fails, the cursor goes back to the list (the keeper after the
/// one that named it).
#[derive(Clone, Debug)]
pub struct KeeperCursor {
    list: Vec<String>,
    /// The listed keeper tried now (or that named `redirect`).
    pos: usize,
    /// A leader outside the list, named by a follower.
    redirect: Option<String>,
    /// Connection failures in a row.
    failures: usize,
    /// `NotLeader` answers naming a leader, in a row.
    hops: usize,
    /// Following a `NotLeader` answer (to the leader, or through an
    /// election): the keepers answered.
    seeking: bool,
    /// Every listed keeper failed in turn, and none has answered since.
    lost: bool,
}

impl KeeperCursor {
    /// A cursor over `list`, starting with its first keeper. An empty
    /// list is tried as one empty address (which fails).
    pub fn new(list: Vec<String>) -> Self {
        let list = if list.is_empty() {
            vec![String::new()]
        } else {
            list
        };
        Self {
            list,
            pos: 0,
            redirect: None,
            failures: 0,
            hops: 0,
            seeking: false,
            lost: false,
        }
    }

    /// The keeper to try now.
    pub fn current(&self) -> &str {
        self.redirect
            .as_deref()
            .unwrap_or(self.list[self.pos].as_str())
    }

    /// The configured keepers.
    pub fn keepers(&self) -> &[String] {
        &self.list
    }

    /// Whether the cursor follows a keeper's `NotLeader` answer (towards
    /// the leader it named, or through an election) and has not failed to
    /// connect since: the keepers answer, no leader has been reached yet.
    pub fn is_seeking_leader(&self) -> bool {
        self.seeking
    }

    /// Whether every listed keeper failed in turn and none has answered
    /// since: there is no point waiting for a connection before the next
    /// round.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// The leader answered (registered the proxy, replied to the
    /// heartbeat): stay with it.
    pub fn on_answered(&mut self) {
        self.lost = false;
        self.failures = 0;
        self.hops = 0;
        self.seeking = false;
    }

    /// The keeper tried could not be reached (or the connection to it
    /// broke): the next listed one.
    pub fn on_failure(&mut self) -> Retry {
        self.seeking = false;
        self.redirect = None;
        self.advance();
        self.failures += 1;
        if self.failures >= self.list.len() {
            self.failures = 0;
            self.hops = 0;
            self.lost = true;
            Retry::AfterRound
        } else {
            Retry::Now
        }
    }

    /// The keeper tried does not lead; `leader` is the one it names
    /// (`None`: an election is under way).
    pub fn on_not_leader(&mut self, leader: Option<&str>) -> Retry {
        let asked = self.current().to_string();
        self.lost = false;
        self.failures = 0;
        self.seeking = true;
        self.hops += 1;
        let named = leader
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != asked);
        match named {
            Some(l) if self.hops <= self.list.len() => {
                match self.list.iter().position(|k| k == l) {
                    Some(i) => {
                        self.pos = i;
                        self.redirect = None;
                    }
                    None => self.redirect = Some(l.to_string()),
                }
                Retry::Now
            }
            _ => {
                // No leader yet (or one that names itself a follower, or
                // followers naming one another): the next keeper, shortly.
                self.hops = 0;
                self.redirect = None;
                self.advance();
                Retry::Shortly
            }
        }
    }

    fn advance(&mut self) {
        self.pos = (self.pos + 1) % self.list.len();
    }
}

/// What a switch request that no leader acknowledged within
/// `cluster.request_timeout` counts as: "could not reach the keeper" only
/// if no keeper answered at all meanwhile; a follower's `NotLeader`, or a
/// proxy still following one to the leader, is an answer, and the request
/// counts for nothing (SPEC §8).
pub fn unacknowledged(keepers_answered: bool) -> Outcome {
    if keepers_answered {
        Outcome::Interrupted
    } else {
        Outcome::KeeperUnreachable
    }
}

/// A term under the newest one seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("term {offered} is under term {seen}, already seen")]
pub struct StaleTerm {
    /// The newest term seen.
    pub seen: u64,
    /// The term offered.
    pub offered: u64,
}

/// The newest keeper term seen: a topology or an order under an older one
/// comes from a deposed leader and takes no effect (SPEC §8).
#[derive(Debug, Default)]
pub struct NewestTerm(AtomicU64);

impl NewestTerm {
    /// Starting from `term`.
    pub fn new(term: u64) -> Self {
        Self(AtomicU64::new(term))
    }

    /// The newest term seen.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Admits `term` unless it is under the newest seen, and records it.
    pub fn admit(&self, term: u64) -> Result<(), StaleTerm> {
        let seen = self.0.fetch_max(term, Ordering::AcqRel);
        if term < seen {
            return Err(StaleTerm {
                seen,
                offered: term,
            });
        }
        Ok(())
    }
}

/// How long a proxy that reaches no keeper keeps asking before its offline
/// rule may take it offline: `offline_switch_rejected_number` requests,
/// `switch_retry_interval` apart.
pub fn time_to_offline(policy: &Policy, switch_retry_interval: Duration) -> Duration {
    switch_retry_interval.saturating_mul(policy.offline_switch_rejected_number)
}

/// A warning for a proxy naming several keepers whose offline rule may
/// take it offline before a new leader is elected (within
/// [`ELECTION_ALLOWANCE`]); `None` when there is nothing to say.
pub fn election_warning(
    keepers: usize,
    policy: &Policy,
    switch_retry_interval: Duration,
) -> Option<String> {
    if keepers < 2 || !policy.offline_when_lost_keeper {
        return None;
    }
    let t = time_to_offline(policy, switch_retry_interval);
    (t <= ELECTION_ALLOWANCE).then(|| {
        format!(
            "warning: with {keepers} keepers, offline_switch_rejected_number ({}) × \
             cluster.switch_retry_interval ({switch_retry_interval:?}) = {t:?} is not above \
             {ELECTION_ALLOWANCE:?} (lease TTL and one election): proxies may go offline \
             while the keepers elect a new leader",
            policy.offline_switch_rejected_number
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(list: &[&str]) -> KeeperCursor {
        KeeperCursor::new(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn failures_go_round_the_list_and_a_round_waits() {
        let mut c = cursor(&["a:1", "b:2", "c:3"]);
        assert_eq!(c.current(), "a:1");
        assert_eq!(c.on_failure(), Retry::Now);
        assert_eq!(c.current(), "b:2");
        assert_eq!(c.on_failure(), Retry::Now);
        assert_eq!(c.current(), "c:3");
        assert_eq!(c.on_failure(), Retry::AfterRound);
        assert!(c.is_lost());
        assert_eq!(c.current(), "a:1");
        // The next round starts afresh; still lost until one answers.
        assert_eq!(c.on_failure(), Retry::Now);
        assert!(c.is_lost());
        c.on_answered();
        assert!(!c.is_lost());
        assert_eq!(c.current(), "b:2", "it stays with the keeper that answered");
        // The leader dies while connected: the next one, at once.
        assert_eq!(c.on_failure(), Retry::Now);
        assert_eq!(c.current(), "c:3");
    }

    #[test]
    fn one_keeper_is_retried_after_the_interval_as_before() {
        let mut c = cursor(&["k:1"]);
        for _ in 0..3 {
            assert_eq!(c.on_failure(), Retry::AfterRound);
            assert_eq!(c.current(), "k:1");
        }
        let ri = Duration::from_millis(500);
        assert_eq!(Retry::AfterRound.delay(ri), ri);
        assert_eq!(Retry::Shortly.delay(ri), ELECTION_PAUSE);
        assert_eq!(
            Retry::Shortly.delay(Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        assert_eq!(Retry::Now.delay(ri), Duration::ZERO);
    }

    #[test]
    fn a_named_leader_in_the_list_is_next() {
        let mut c = cursor(&["a:1", "b:2", "c:3"]);
        assert_eq!(c.on_not_leader(Some("c:3")), Retry::Now);
        assert_eq!(c.current(), "c:3");
        assert!(c.is_seeking_leader());
        c.on_answered();
        assert!(!c.is_seeking_leader());
        assert_eq!(c.current(), "c:3");
    }

    #[test]
    fn a_named_leader_outside_the_list_is_tried_then_the_list() {
        let mut c = cursor(&["a:1", "b:2", "c:3"]);
        assert_eq!(c.on_not_leader(Some("x:9")), Retry::Now);
        assert_eq!(c.current(), "x:9");
        assert_eq!(c.on_failure(), Retry::Now);
        assert!(!c.is_seeking_leader());
        assert_eq!(c.current(), "b:2", "the keeper after the one that named it");
        // Reached: it stays there.
        let mut c = cursor(&["a:1", "b:2"]);
        c.on_not_leader(Some("x:9"));
        c.on_answered();
        assert_eq!(c.current(), "x:9");
    }

    #[test]
    fn no_leader_means_the_next_keeper_shortly() {
        let mut c = cursor(&["a:1", "b:2"]);
        assert_eq!(c.on_not_leader(None), Retry::Shortly);
        assert_eq!(c.current(), "b:2");
        assert!(c.is_seeking_leader());
        // A keeper naming itself is no better than none.
        assert_eq!(c.on_not_leader(Some("b:2")), Retry::Shortly);
        assert_eq!(c.current(), "a:1");
        assert_eq!(c.on_not_leader(Some(" ")), Retry::Shortly);
    }

    #[test]
    fn answers_reset_the_round() {
        let mut c = cursor(&["a:1", "b:2"]);
        assert_eq!(c.on_failure(), Retry::Now);
        assert!(!c.is_lost(), "b is still to be tried");
        // b answers (a follower): the round starts again.
        assert_eq!(c.on_not_leader(Some("a:1")), Retry::Now);
        assert_eq!(c.current(), "a:1");
        assert_eq!(c.on_failure(), Retry::Now, "one failure since an answer");
        assert_eq!(c.on_failure(), Retry::AfterRound);
        assert!(c.is_lost());
        c.on_not_leader(None);
        assert!(!c.is_lost(), "a follower answered");
    }

    #[test]
    fn followers_naming_one_another_do_not_spin() {
        let mut c = cursor(&["a:1", "b:2"]);
        assert_eq!(c.on_not_leader(Some("b:2")), Retry::Now);
        assert_eq!(c.on_not_leader(Some("a:1")), Retry::Now);
        assert_eq!(c.on_not_leader(Some("b:2")), Retry::Shortly);
        assert_eq!(c.current(), "b:2");
        assert_eq!(
            c.on_not_leader(Some("a:1")),
            Retry::Now,
            "afresh after the pause"
        );
    }

    /// Whatever the keepers answer, a cursor never asks to try at once
    /// more than a bounded number of times in a row.
    #[test]
    fn any_sequence_pauses_within_a_bound() {
        let names = ["a:1", "b:2", "c:3", "x:9"];
        let mut c = cursor(&names[..3]);
        let bound = 3 * (3 + 2);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut run = 0;
        for _ in 0..100_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = (seed >> 33) as usize;
            let retry = match r % 6 {
                0 | 1 => c.on_failure(),
                2 => c.on_not_leader(None),
                _ => c.on_not_leader(Some(names[r / 6 % names.len()])),
            };
            if retry == Retry::Now {
                run += 1;
                assert!(run <= bound, "{run} tries at once in a row");
            } else {
                run = 0;
            }
        }
    }

    #[test]
    fn only_silence_is_keeper_unreachable() {
        assert_eq!(unacknowledged(false), Outcome::KeeperUnreachable);
        assert_eq!(unacknowledged(true), Outcome::Interrupted);
    }

    #[test]
    fn terms_never_go_back() {
        let t = NewestTerm::default();
        assert_eq!(t.admit(0), Ok(()));
        assert_eq!(t.admit(3), Ok(()));
        assert_eq!(t.get(), 3);
        assert_eq!(t.admit(3), Ok(()), "the same term again");
        assert_eq!(
            t.admit(2),
            Err(StaleTerm {
                seen: 3,
                offered: 2
            })
        );
        assert_eq!(t.get(), 3);
    }

    #[test]
    fn offline_must_outlast_an_election_with_several_keepers() {
        let mut p = Policy::default(); // 3 requests
        let half = Duration::from_millis(500);
        assert_eq!(time_to_offline(&p, half), Duration::from_millis(1500));
        assert!(election_warning(2, &p, half).is_some());
        assert!(
            election_warning(1, &p, half).is_none(),
            "one keeper: no election"
        );
        assert!(
            election_warning(2, &p, Duration::from_millis(1000)).is_some(),
            "3 s is not above"
        );
        assert!(election_warning(2, &p, Duration::from_millis(1001)).is_none());
        p.offline_switch_rejected_number = 8;
        assert!(election_warning(3, &p, half).is_none());
        p.offline_switch_rejected_number = 2;
        p.offline_when_lost_keeper = false;
        assert!(election_warning(3, &p, half).is_none(), "never offline");
    }
}
