//! The proxy's own rules (SPEC §4): what a proxy does when its switch
//! requests are rejected or cannot reach the keeper, as a state machine over
//! plain data. The proxy's I/O code feeds it events and carries out the
//! actions it returns; "what happens when a switch is rejected" is here.

use crate::decision::Rejection;
use crate::policy::Policy;
use serde::Serialize;
use std::collections::BTreeMap;

/// How one switch request ended, as the proxy saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Approved (a new topology), or stale (someone else switched already).
    Switched,
    /// The keeper refused the switch, for this reason.
    Rejected(Rejection),
    /// No keeper acknowledged the request within `cluster.request_timeout`
    /// (SPEC §7: only this counts as "could not reach the keeper").
    KeeperUnreachable,
    /// The keeper acknowledged the request, then the connection ended
    /// before its answer: a slow or dying keeper, not an absent one. It
    /// counts for nothing; the next request tells.
    Interrupted,
}

/// Whether the proxy serves clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Serving clients.
    Online,
    /// Proxy CASE 4: lost the keeper and too many dataHosts.
    OfflineLostKeeper,
    /// Proxy CASE 2: outvoted too often; it has left the cluster.
    Unregistered,
}

/// What the proxy must do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing to do.
    Nothing,
    /// Log and count; keep serving, do not switch (proxy CASE 1).
    Alert {
        /// The dataHost whose switch request failed.
        datahost: String,
        /// The rejection's kind (e.g. `VoteFailed`), or `KeeperUnreachable`.
        reason: String,
    },
    /// Close the listener, client and backend connections; `/health` 503.
    GoOffline,
    /// Go offline, then tell the keeper this proxy leaves (proxy CASE 2).
    GoOfflineAndUnregister,
    /// Re-register and apply the newest topology, then serve.
    ReRegisterAndServe,
    /// Serve again without the keeper (every active datasource is writable).
    ServeWithoutKeeper,
}

/// One dataHost's failed switch requests; a success, or the source answering again, resets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Consecutive switch requests rejected by the vote.
    pub vote_rejected: u32,
    /// Consecutive switch requests that could not reach the keeper.
    pub keeper_unreachable: u32,
}

/// The rules' state for one proxy.
#[derive(Clone, Debug)]
pub struct Rules {
    policy: Policy,
    /// Number of dataHosts this proxy serves.
    served: usize,
    counters: BTreeMap<String, Counters>,
    mode: Mode,
}

impl Rules {
    /// The rules for a proxy serving `served` dataHosts, starting online with no counts.
    pub fn new(policy: Policy, served: usize) -> Self {
        Self {
            policy,
            served,
            counters: BTreeMap::new(),
            mode: Mode::Online,
        }
    }

    /// Whether the proxy serves clients now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Each dataHost's counters, by dataHost name.
    pub fn counters(&self) -> &BTreeMap<String, Counters> {
        &self.counters
    }

    /// `min(down_host_num, dataHosts served)`, and at least one.
    fn threshold(&self, down_host_num: u32) -> usize {
        (down_host_num as usize).min(self.served).max(1)
    }

    fn hosts_at(&self, count: impl Fn(&Counters) -> u32, number: u32) -> usize {
        self.counters
            .values()
            .filter(|c| count(c) >= number.max(1))
            .count()
    }

    /// A switch request for `datahost` ended.
    pub fn on_outcome(&mut self, datahost: &str, outcome: &Outcome) -> Action {
        let c = self.counters.entry(datahost.to_string()).or_default();
        match outcome {
            Outcome::Switched => {
                *c = Counters::default();
                return Action::Nothing;
            }
            Outcome::Rejected(Rejection::VoteFailed { .. }) => {
                c.vote_rejected += 1;
                c.keeper_unreachable = 0;
            }
            Outcome::Rejected(_) => {
                // Says nothing about this proxy's network: alert only.
                c.keeper_unreachable = 0;
            }
            Outcome::KeeperUnreachable => c.keeper_unreachable += 1,
            Outcome::Interrupted => return Action::Nothing,
        }
        if self.mode != Mode::Online {
            return Action::Nothing;
        }
        let p = &self.policy;
        if p.unregister_when_switch_rejected
            && self.hosts_at(|c| c.vote_rejected, p.unregister_switch_rejected_number)
                >= self.threshold(p.unregister_down_host_num)
        {
            self.mode = Mode::Unregistered;
            return Action::GoOfflineAndUnregister;
        }
        if p.offline_when_lost_keeper
            && self.hosts_at(|c| c.keeper_unreachable, p.offline_switch_rejected_number)
                >= self.threshold(p.offline_down_host_num)
        {
            self.mode = Mode::OfflineLostKeeper;
            return Action::GoOffline;
        }
        let reason = match outcome {
            Outcome::Rejected(r) => r.kind().to_string(),
            _ => "KeeperUnreachable".to_string(),
        };
        Action::Alert {
            datahost: datahost.to_string(),
            reason,
        }
    }

    /// Whether the proxy asks the keeper to switch a dataHost whose active
    /// datasource does not answer: online, or offline for a lost keeper
    /// that answers again (SPEC §7, back online through the keeper). Not
    /// once it has left the cluster.
    pub fn may_request_switch(&self, keeper_connected: bool) -> bool {
        match self.mode {
            Mode::Online => true,
            Mode::OfflineLostKeeper => keeper_connected,
            Mode::Unregistered => false,
        }
    }

    /// Whether to try coming back online now: every active datasource
    /// answers (SPEC §4, *Back online*), or, offline for a lost keeper,
    /// that keeper answers again (SPEC §7): through it the proxy gets the
    /// newest topology, and each dataHost is served again once its active
    /// datasource, old or new, answers; until then its statements wait as
    /// in any failover.
    pub fn may_come_back(&self, all_answering: bool, keeper_connected: bool) -> bool {
        match self.mode {
            Mode::Online => false,
            Mode::OfflineLostKeeper => all_answering || keeper_connected,
            Mode::Unregistered => all_answering,
        }
    }

    /// The active datasource of `datahost` answers again.
    pub fn on_source_answering(&mut self, datahost: &str) {
        self.counters.remove(datahost);
    }

    /// While offline: every dataHost's active datasource answers again.
    /// `keeper_reachable`: the keeper answered just now; `all_writable`:
    /// every active datasource reports `read_only=OFF`.
    pub fn on_all_answering(&mut self, keeper_reachable: bool, all_writable: bool) -> Action {
        if self.mode == Mode::Online || !self.policy.self_back_online {
            return Action::Nothing;
        }
        if keeper_reachable {
            self.back_online();
            Action::ReRegisterAndServe
        } else if all_writable {
            self.back_online();
            Action::ServeWithoutKeeper
        } else {
            Action::Nothing
        }
    }

    fn back_online(&mut self) {
        self.mode = Mode::Online;
        self.counters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote_failed() -> Outcome {
        Outcome::Rejected(Rejection::VoteFailed {
            approvals: 1,
            voters: 3,
        })
    }

    fn rules(served: usize) -> Rules {
        Rules::new(Policy::default(), served)
    }

    fn is_alert(a: &Action) -> bool {
        matches!(a, Action::Alert { .. })
    }

    /// Proxy CASE 1: fewer than `down_host_num` (2) dataHosts rejected
    /// `number` (3) times: alert only.
    #[test]
    fn proxy_case_1_alert_only() {
        let mut r = rules(3);
        for _ in 0..10 {
            assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        }
        // dh2 at two rejections: one below the number.
        assert!(is_alert(&r.on_outcome("dh2", &vote_failed())));
        assert!(is_alert(&r.on_outcome("dh2", &vote_failed())));
        assert_eq!(r.mode(), Mode::Online);
    }

    /// Proxy CASE 2: `down_host_num` dataHosts rejected `number` times.
    #[test]
    fn proxy_case_2_unregisters_at_the_threshold() {
        let mut r = rules(3);
        for _ in 0..3 {
            r.on_outcome("dh1", &vote_failed());
        }
        r.on_outcome("dh2", &vote_failed());
        r.on_outcome("dh2", &vote_failed());
        assert_eq!(
            r.on_outcome("dh2", &vote_failed()),
            Action::GoOfflineAndUnregister
        );
        assert_eq!(r.mode(), Mode::Unregistered);
        assert_eq!(r.on_outcome("dh3", &vote_failed()), Action::Nothing);
    }

    /// `down_host_num` larger than the dataHosts served means all of them.
    #[test]
    fn a_single_datahost_proxy_uses_min_of_threshold_and_served() {
        let mut r = rules(1);
        assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        assert_eq!(
            r.on_outcome("dh1", &vote_failed()),
            Action::GoOfflineAndUnregister
        );
    }

    #[test]
    fn other_rejections_are_alerts_that_do_not_count() {
        let mut r = rules(1);
        let others = [
            Rejection::LostProxy {
                proxies: vec!["p9".into()],
            },
            Rejection::TargetAgentDown {
                target: "m11".into(),
            },
            Rejection::BinlogDelay {
                target: "m11".into(),
                behind: None,
                limit: Some(1),
                detail: String::new(),
            },
        ];
        for _ in 0..5 {
            for o in &others {
                assert_eq!(
                    r.on_outcome("dh1", &Outcome::Rejected(o.clone())),
                    Action::Alert {
                        datahost: "dh1".into(),
                        reason: o.kind().into()
                    }
                );
            }
        }
        assert_eq!(r.counters()["dh1"], Counters::default());
        assert_eq!(r.mode(), Mode::Online);
    }

    #[test]
    fn consecutive_means_a_success_or_the_source_answering_resets() {
        let mut r = rules(1);
        r.on_outcome("dh1", &vote_failed());
        r.on_outcome("dh1", &vote_failed());
        r.on_source_answering("dh1");
        assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        assert_eq!(r.on_outcome("dh1", &Outcome::Switched), Action::Nothing);
        assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        assert_eq!(r.counters()["dh1"].vote_rejected, 1);
    }

    #[test]
    fn unregistering_can_be_turned_off() {
        let mut r = Rules::new(
            Policy {
                unregister_when_switch_rejected: false,
                ..Policy::default()
            },
            1,
        );
        for _ in 0..10 {
            assert!(is_alert(&r.on_outcome("dh1", &vote_failed())));
        }
    }

    /// Proxy CASE 4: the keeper is unreachable for `down_host_num` (4)
    /// dataHosts, `number` (3) times each: offline; back once all answer.
    #[test]
    fn proxy_case_4_offline_when_lost_keeper_and_back() {
        let mut r = rules(5);
        for dh in ["dh1", "dh2", "dh3"] {
            for _ in 0..3 {
                assert!(is_alert(&r.on_outcome(dh, &Outcome::KeeperUnreachable)));
            }
        }
        r.on_outcome("dh4", &Outcome::KeeperUnreachable);
        r.on_outcome("dh4", &Outcome::KeeperUnreachable);
        assert_eq!(
            r.on_outcome("dh4", &Outcome::KeeperUnreachable),
            Action::GoOffline
        );
        assert_eq!(r.mode(), Mode::OfflineLostKeeper);
        // Sources back, keeper still away, one active is read-only: stay.
        assert_eq!(r.on_all_answering(false, false), Action::Nothing);
        assert_eq!(r.on_all_answering(false, true), Action::ServeWithoutKeeper);
        assert_eq!(r.mode(), Mode::Online);
        assert!(r.counters().is_empty());
    }

    #[test]
    fn back_online_prefers_the_keeper_and_can_be_turned_off() {
        let mut r = rules(1);
        for _ in 0..3 {
            r.on_outcome("dh1", &Outcome::KeeperUnreachable);
        }
        assert_eq!(r.mode(), Mode::OfflineLostKeeper);
        assert_eq!(r.on_all_answering(true, false), Action::ReRegisterAndServe);

        let mut r = Rules::new(
            Policy {
                self_back_online: false,
                ..Policy::default()
            },
            1,
        );
        for _ in 0..3 {
            r.on_outcome("dh1", &vote_failed());
        }
        assert_eq!(r.mode(), Mode::Unregistered);
        assert_eq!(r.on_all_answering(true, true), Action::Nothing);
        assert_eq!(r.mode(), Mode::Unregistered);
    }

    #[test]
    fn lost_keeper_threshold_boundaries() {
        // offline_switch_rejected_number = 3: two is one below.
        let mut r = rules(1);
        r.on_outcome("dh1", &Outcome::KeeperUnreachable);
        assert!(is_alert(&r.on_outcome("dh1", &Outcome::KeeperUnreachable)));
        // A rejection that reached the keeper breaks the run.
        r.on_outcome(
            "dh1",
            &Outcome::Rejected(Rejection::TargetAgentDown { target: "x".into() }),
        );
        assert!(is_alert(&r.on_outcome("dh1", &Outcome::KeeperUnreachable)));
        assert!(is_alert(&r.on_outcome("dh1", &Outcome::KeeperUnreachable)));
        assert_eq!(
            r.on_outcome("dh1", &Outcome::KeeperUnreachable),
            Action::GoOffline
        );
        // Offline is off by policy: alerts only.
        let mut r = Rules::new(
            Policy {
                offline_when_lost_keeper: false,
                ..Policy::default()
            },
            1,
        );
        for _ in 0..5 {
            assert!(is_alert(&r.on_outcome("dh1", &Outcome::KeeperUnreachable)));
        }
    }

    /// SPEC §7, a slow keeper is not an absent one: a request the keeper
    /// acknowledged and did not answer counts for nothing; only requests
    /// nobody acknowledged take the proxy towards offline.
    #[test]
    fn an_acknowledged_request_never_counts_as_a_lost_keeper() {
        let mut r = rules(1);
        r.on_outcome("dh1", &Outcome::KeeperUnreachable);
        r.on_outcome("dh1", &Outcome::KeeperUnreachable);
        for _ in 0..10 {
            assert_eq!(r.on_outcome("dh1", &Outcome::Interrupted), Action::Nothing);
        }
        assert_eq!(r.mode(), Mode::Online);
        assert_eq!(
            r.on_outcome("dh1", &Outcome::KeeperUnreachable),
            Action::GoOffline,
            "the interrupted ones neither counted nor broke the run"
        );
    }

    /// Rules of one dataHost: online, offline for a lost keeper (three
    /// unreachable), unregistered (outvoted three times).
    fn each_mode() -> [Rules; 3] {
        let mut offline = rules(1);
        let mut unregistered = rules(1);
        for _ in 0..3 {
            offline.on_outcome("dh1", &Outcome::KeeperUnreachable);
            unregistered.on_outcome("dh1", &vote_failed());
        }
        [rules(1), offline, unregistered]
    }

    /// SPEC §7, back online through the keeper: a proxy offline for a lost
    /// keeper asks for switches again as soon as the keeper answers; one
    /// that left the cluster (outvoted) never does.
    #[test]
    fn who_may_request_a_switch() {
        let [online, offline, unregistered] = each_mode();
        let table = [
            (online, Mode::Online, [true, true]),
            (offline, Mode::OfflineLostKeeper, [false, true]),
            (unregistered, Mode::Unregistered, [false, false]),
        ];
        for (r, mode, may) in table {
            assert_eq!(r.mode(), mode);
            assert_eq!(
                [r.may_request_switch(false), r.may_request_switch(true)],
                may,
                "{mode:?}"
            );
        }
    }

    /// When an offline proxy tries to come back: (all actives answering,
    /// keeper connected) → may, per mode.
    #[test]
    fn when_an_offline_proxy_tries_to_come_back() {
        let [online, offline, unregistered] = each_mode();
        let cases = [(false, false), (true, false), (false, true), (true, true)];
        let table = [
            (online, [false, false, false, false]),
            (offline, [false, true, true, true]),
            (unregistered, [false, true, false, true]),
        ];
        for (r, expected) in table {
            let got = cases.map(|(all, keeper)| r.may_come_back(all, keeper));
            assert_eq!(got, expected, "{:?}", r.mode());
        }
    }
}
