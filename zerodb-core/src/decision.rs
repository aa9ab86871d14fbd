//! The keeper's decision on a switch request (SPEC §3), as a pure function.
//!
//! The keeper gathers its inputs step by step — votes only if no proxy is
//! lost, agent reports only if the vote passed — so [`decide`] is written
//! as a step function: given what has been gathered so far it either asks
//! for the next input ([`Step::Need`]) or gives the decision with its reason
//! ([`Step::Done`]). The keeper's I/O loop is then a few lines, and every
//! seed CASE is a row in the table tests below.

use crate::control::{AgentReport, BinlogPos};
pub use crate::control::{Rejection, Request, RequestKind};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A registered proxy as the keeper sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The proxy's registered name.
    pub name: String,
    /// Its session expired (no heartbeat within the session timeout).
    pub lost: bool,
}

/// One proxy's answer to "probe the source now".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// The probe failed: the proxy approves the switch.
    Down,
    /// The source answered.
    Up,
    /// No answer within the vote timeout.
    NoAnswer,
}

/// What the agents said. `None`: the agent did not answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reports {
    /// The source's agent report (`None`: it did not answer).
    pub source: Option<AgentReport>,
    /// Each standby's agent report, by datasource name (`None`: it did not answer).
    pub standbys: BTreeMap<String, Option<AgentReport>>,
}

/// Everything the decision reads.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The policy keys the keeper reads (SPEC §2).
    pub policy: &'a Policy,
    /// The switch request being decided.
    pub request: &'a Request,
    /// The dataHost's active datasource now.
    pub active: &'a str,
    /// The addresses (host:port) the active datasource is known by: its
    /// configured one, and any other a standby's replication names that
    /// resolves to the same server.
    pub source_addrs: &'a [String],
    /// The other datasources, in configured preference order.
    pub standbys: &'a [String],
    /// The dataHost is in maintenance: no automatic switch.
    pub maintenance: bool,
    /// False after the keeper adopted a reported topology, until an
    /// operator confirms which proxies are members (SPEC §7).
    pub membership_confirmed: bool,
    /// Milliseconds left before a failed switch may be tried again, if any.
    pub backoff_left_ms: Option<u64>,
    /// Milliseconds of anti-flapping cooldown left, if any.
    pub cooldown_left_ms: Option<u64>,
    /// Every registered proxy; all of them vote, the requester included.
    pub members: &'a [Member],
    /// Each member's vote, by proxy name (`None`: not gathered yet).
    pub votes: Option<&'a BTreeMap<String, Vote>>,
    /// The agents' reports (`None`: not gathered yet).
    pub reports: Option<&'a Reports>,
}

/// The next thing to gather, or the decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Gather this input, then call [`decide`] again.
    Need(Need),
    /// The decision is made.
    Done(Decision),
}

/// An input [`decide`] needs before it can go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Ask every member to probe the source now.
    Votes,
    /// Ask the agents of the source and of the standbys for a report.
    Reports,
}

/// The keeper's answer to a switch request (SPEC §3, steps 1–6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The source is no longer active: answer with the current topology.
    Stale,
    /// Promote `target` (the I/O that follows may still fail).
    Approve {
        /// The datasource to promote.
        target: String,
    },
    /// Refuse the switch; the topology stays as it is.
    Reject {
        /// Why, in machine-readable form.
        rejection: Rejection,
    },
}

fn reject(rejection: Rejection) -> Step {
    Step::Done(Decision::Reject { rejection })
}

/// Steps 1 and 2, and what stops automatic switches only: a stale
/// request, maintenance, an unconfirmed membership, cooldown, a lost proxy.
fn gates(input: &Input<'_>, planned: bool) -> Option<Step> {
    // 1. Stale request.
    if input.request.source != input.active {
        return Some(Step::Done(Decision::Stale));
    }
    // Automatic switches only: an operator may switch during maintenance
    // or cooldown.
    if !planned {
        if input.maintenance {
            return Some(reject(Rejection::Maintenance));
        }
        if !input.membership_confirmed {
            return Some(reject(Rejection::MembershipUnconfirmed));
        }
        if let Some(ms) = input.cooldown_left_ms.filter(|ms| *ms > 0) {
            return Some(reject(Rejection::Cooldown { remaining_ms: ms }));
        }
        if let Some(ms) = input.backoff_left_ms.filter(|ms| *ms > 0) {
            return Some(reject(Rejection::Backoff { remaining_ms: ms }));
        }
    }
    // 2. Lost proxy.
    let lost: Vec<String> = input
        .members
        .iter()
        .filter(|m| m.lost)
        .map(|m| m.name.clone())
        .collect();
    (!lost.is_empty()).then(|| reject(Rejection::LostProxy { proxies: lost }))
}

/// Step 3, the vote (a planned switchover has a live source: nothing to
/// vote on).
fn vote(input: &Input<'_>, planned: bool) -> Option<Step> {
    if !input.policy.need_vote || planned {
        return None;
    }
    let Some(votes) = input.votes else {
        return Some(Step::Need(Need::Votes));
    };
    let voters = input.members.len();
    let silent: Vec<String> = input
        .members
        .iter()
        .filter(|m| !matches!(votes.get(&m.name), Some(Vote::Down | Vote::Up)))
        .map(|m| m.name.clone())
        .collect();
    if !silent.is_empty() {
        return Some(reject(Rejection::LostProxy { proxies: silent }));
    }
    let approvals = input
        .members
        .iter()
        .filter(|m| votes.get(&m.name) == Some(&Vote::Down))
        .count();
    (approvals * 100 <= input.policy.approve_ratio as usize * voters)
        .then(|| reject(Rejection::VoteFailed { approvals, voters }))
}

/// SPEC §3, steps 1–6. Step 7 (promotion, persisting, publishing) is I/O
/// and belongs to the keeper.
pub fn decide(input: &Input<'_>) -> Step {
    let req = input.request;
    let planned = matches!(req.kind, RequestKind::Switchover { .. });
    if let Some(step) = gates(input, planned).or_else(|| vote(input, planned)) {
        return step;
    }
    // 4. Target.
    let (named, force) = match &req.kind {
        RequestKind::Switchover {
            target: Some(t),
            force,
        } => {
            if !input.standbys.contains(t) {
                return reject(Rejection::UnknownTarget { target: t.clone() });
            }
            (Some(t.as_str()), *force)
        }
        _ => (None, false),
    };
    if input.standbys.is_empty() {
        return reject(Rejection::NoStandby {
            standbys: BTreeMap::new(),
        });
    }
    let Some(reports) = input.reports else {
        return Step::Need(Need::Reports);
    };
    let target = match choose_target(input, named, force, reports) {
        Ok(t) => t,
        Err(r) => return reject(r),
    };
    let Some(Some(report)) = reports.standbys.get(target) else {
        return reject(Rejection::TargetAgentDown {
            target: target.to_string(),
        });
    };
    // 5. Load.
    let policy = input.policy;
    if policy.need_target_load_check && report.load.is_none_or(|l| l >= policy.safe_load) {
        return reject(Rejection::TargetOverloaded {
            target: target.to_string(),
            load: report.load,
            safe_load: policy.safe_load,
        });
    }
    // 6. Binlog (an operator who forces a target takes what it lacks).
    if policy.need_binlog_check && !force {
        if let Err(r) = binlog_check(policy, target, report, reports.source.as_ref(), &req.source) {
            return reject(r);
        }
    }
    Step::Done(Decision::Approve {
        target: target.to_string(),
    })
}

/// Why a datasource is not a true standby of the source whose addresses
/// are `source_addrs` (SPEC §7), or `None` when it is one: its server
/// answers, it replicates from that source with its SQL thread running
/// without error, it is not fenced and holds no errant transaction. Its
/// I/O thread need not run: it is reconnecting to a dead source.
pub fn not_a_standby(report: Option<&AgentReport>, source_addrs: &[String]) -> Option<String> {
    let Some(r) = report else {
        return Some("its agent did not answer".into());
    };
    if !r.alive {
        return Some("its server does not answer".into());
    }
    if r.fenced {
        return Some("it is fenced (a former source that has not rejoined)".into());
    }
    if let Some(errant) = &r.errant {
        return Some(errant.clone());
    }
    let Some(replica) = &r.replica else {
        return Some("it replicates from nobody".into());
    };
    if !source_addrs.contains(&replica.source) {
        return Some(format!(
            "it replicates from {}, not from the source ({})",
            replica.source,
            source_addrs.join(", ")
        ));
    }
    if !replica.sql_running || !replica.sql_error.is_empty() {
        return Some(format!(
            "its replication SQL thread is stopped: {}",
            replica.sql_error
        ));
    }
    None
}

/// The true standby with the most advanced received position (the
/// configured order only breaks ties), or the named one.
fn choose_target<'s>(
    input: &Input<'s>,
    named: Option<&'s str>,
    force: bool,
    reports: &Reports,
) -> Result<&'s str, Rejection> {
    let report = |name: &str| reports.standbys.get(name).and_then(|r| r.as_ref());
    if let Some(t) = named {
        return match report(t) {
            None => Err(Rejection::TargetAgentDown { target: t.into() }),
            Some(r) if !r.alive => Err(Rejection::TargetDown { target: t.into() }),
            r => match not_a_standby(r, input.source_addrs).filter(|_| !force) {
                Some(why) => Err(Rejection::NotAStandby {
                    target: t.into(),
                    why,
                }),
                None => Ok(t),
            },
        };
    }
    let mut excluded = BTreeMap::new();
    let mut best: Option<(&str, &AgentReport)> = None;
    for name in input.standbys {
        if let Some(why) = not_a_standby(report(name), input.source_addrs) {
            excluded.insert(name.clone(), why);
            continue;
        }
        let Some(r) = report(name) else {
            continue;
        };
        // Most received first (no acknowledged transaction left behind),
        // then most applied (the shortest promotion), then configured order.
        let pos = |r: &AgentReport| {
            let s = r.replica.as_ref();
            (
                s.and_then(|s| s.read.clone()),
                s.and_then(|s| s.executed.clone()),
            )
        };
        let ahead = |x: Option<BinlogPos>, y: Option<BinlogPos>| match (x, y) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            (Some(_), None) => Some(std::cmp::Ordering::Greater),
            (None, Some(_)) => Some(std::cmp::Ordering::Less),
            (None, None) => Some(std::cmp::Ordering::Equal),
        };
        let better = match best {
            None => true,
            Some((_, b)) => {
                let ((rr, re), (br, be)) = (pos(r), pos(b));
                match ahead(rr, br) {
                    Some(std::cmp::Ordering::Greater) => true,
                    Some(std::cmp::Ordering::Equal) => {
                        ahead(re, be) == Some(std::cmp::Ordering::Greater)
                    }
                    _ => false,
                }
            }
        };
        if better {
            best = Some((name, r));
        }
    }
    match best {
        Some((name, _)) => Ok(name),
        None => Err(Rejection::NoStandby { standbys: excluded }),
    }
}

fn binlog_check(
    policy: &Policy,
    target: &str,
    report: &AgentReport,
    source: Option<&AgentReport>,
    source_name: &str,
) -> Result<(), Rejection> {
    let delay = |behind, limit, detail: &str| Rejection::BinlogDelay {
        target: target.to_string(),
        behind,
        limit,
        detail: detail.to_string(),
    };
    let Some(limit) = policy.safe_binlog_delay else {
        // Lenient: the target must be able to apply what it received.
        return match &report.replica {
            Some(r) if !r.sql_running && !r.relay_applied() => Err(delay(
                None,
                None,
                &format!(
                    "replication SQL thread stopped with relay log left to apply: {}",
                    r.last_error
                ),
            )),
            _ => Ok(()),
        };
    };
    let Some(end) = source.and_then(|s| s.binlog_end.as_ref()) else {
        return Err(Rejection::SourceAgentDown {
            source: source_name.to_string(),
        });
    };
    let Some(executed) = report.replica.as_ref().and_then(|r| r.executed.as_ref()) else {
        return Err(delay(None, Some(limit), "the target is not a replica"));
    };
    match executed.bytes_behind(end) {
        Some(b) if b <= limit => Ok(()),
        behind => Err(delay(
            behind,
            Some(limit),
            &format!(
                "executed {}:{} against the source's end {}:{}",
                executed.file, executed.pos, end.file, end.pos
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ReplicaStatus;

    fn members(names: &[&str], lost: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                lost: lost.contains(n),
            })
            .collect()
    }

    fn votes(down: &[&str], up: &[&str]) -> BTreeMap<String, Vote> {
        down.iter()
            .map(|n| (n.to_string(), Vote::Down))
            .chain(up.iter().map(|n| (n.to_string(), Vote::Up)))
            .collect()
    }

    fn pos(p: u64) -> BinlogPos {
        BinlogPos {
            file: "mysql-bin.000001".into(),
            pos: p,
        }
    }

    fn replica(name: &str, read: u64, executed: u64, load: f64) -> AgentReport {
        AgentReport {
            datasource: name.into(),
            alive: true,
            read_only: Some(true),
            load: Some(load),
            replica: Some(ReplicaStatus {
                source: "127.0.0.1:1".into(),
                io_running: false,
                sql_running: true,
                read: Some(pos(read)),
                executed: Some(pos(executed)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn source_report(end: u64) -> AgentReport {
        AgentReport {
            datasource: "mysql_1".into(),
            alive: false,
            binlog_end: Some(pos(end)),
            ..Default::default()
        }
    }

    fn reports(source: Option<AgentReport>, standbys: &[(&str, Option<AgentReport>)]) -> Reports {
        Reports {
            source,
            standbys: standbys
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone()))
                .collect(),
        }
    }

    fn failover() -> Request {
        Request {
            datahost: "dh1".into(),
            source: "mysql_1".into(),
            kind: RequestKind::Failover {
                requester: "p1".into(),
            },
        }
    }

    /// One table row: everything defaults to "all is well".
    struct Case {
        policy: Policy,
        request: Request,
        active: &'static str,
        source_addrs: Vec<String>,
        standbys: Vec<String>,
        maintenance: bool,
        membership_confirmed: bool,
        cooldown: Option<u64>,
        backoff: Option<u64>,
        members: Vec<Member>,
        votes: Option<BTreeMap<String, Vote>>,
        reports: Option<Reports>,
    }

    impl Case {
        fn new() -> Self {
            Self {
                policy: Policy::default(),
                request: failover(),
                active: "mysql_1",
                source_addrs: vec!["127.0.0.1:1".into()],
                standbys: vec!["mysql_11".into()],
                maintenance: false,
                membership_confirmed: true,
                cooldown: None,
                backoff: None,
                members: members(&["p1", "p2", "p3"], &[]),
                votes: Some(votes(&["p1", "p2", "p3"], &[])),
                reports: Some(reports(
                    Some(source_report(1000)),
                    &[("mysql_11", Some(replica("mysql_11", 1000, 1000, 0.5)))],
                )),
            }
        }

        fn step(&self) -> Step {
            decide(&Input {
                policy: &self.policy,
                request: &self.request,
                active: self.active,
                source_addrs: &self.source_addrs,
                standbys: &self.standbys,
                maintenance: self.maintenance,
                membership_confirmed: self.membership_confirmed,
                cooldown_left_ms: self.cooldown,
                backoff_left_ms: self.backoff,
                members: &self.members,
                votes: self.votes.as_ref(),
                reports: self.reports.as_ref(),
            })
        }

        fn rejection(&self) -> Rejection {
            match self.step() {
                Step::Done(Decision::Reject { rejection }) => rejection,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }

        fn approved(&self) -> String {
            match self.step() {
                Step::Done(Decision::Approve { target }) => target,
                other => panic!("expected approval, got {other:?}"),
            }
        }
    }

    #[test]
    fn all_well_approves() {
        assert_eq!(Case::new().approved(), "mysql_11");
    }

    #[test]
    fn stale_request_answers_the_current_topology() {
        let mut c = Case::new();
        c.active = "mysql_11";
        c.standbys = vec!["mysql_1".into()];
        assert_eq!(c.step(), Step::Done(Decision::Stale));
    }

    #[test]
    fn inputs_are_asked_for_in_order() {
        let mut c = Case::new();
        c.votes = None;
        c.reports = None;
        assert_eq!(c.step(), Step::Need(Need::Votes));
        c.votes = Some(votes(&["p1", "p2", "p3"], &[]));
        assert_eq!(c.step(), Step::Need(Need::Reports));
        // Without a vote policy, reports are the first thing asked.
        c.policy.need_vote = false;
        c.votes = None;
        assert_eq!(c.step(), Step::Need(Need::Reports));
    }

    /// Proxy CASE 3: one proxy lost; every switch refused, before any vote.
    #[test]
    fn proxy_case_3_lost_proxy_refuses_before_voting() {
        let mut c = Case::new();
        c.members = members(&["p1", "p2", "p3"], &["p3"]);
        c.votes = None;
        assert_eq!(
            c.rejection(),
            Rejection::LostProxy {
                proxies: vec!["p3".into()]
            }
        );
        // Also for an operator's switchover: a lost proxy may write to the source.
        c.request.kind = RequestKind::Switchover {
            target: None,
            force: false,
        };
        assert!(matches!(c.rejection(), Rejection::LostProxy { .. }));
    }

    #[test]
    fn a_voter_that_does_not_answer_is_lost() {
        let mut c = Case::new();
        let mut v = votes(&["p1", "p2"], &[]);
        v.insert("p3".into(), Vote::NoAnswer);
        c.votes = Some(v);
        assert_eq!(
            c.rejection(),
            Rejection::LostProxy {
                proxies: vec!["p3".into()]
            }
        );
        c.votes = Some(votes(&["p1", "p2"], &[])); // p3 missing entirely
        assert!(matches!(c.rejection(), Rejection::LostProxy { .. }));
    }

    /// Approve only when approvals × 100 > approve_ratio × voters: the
    /// boundary one below, at and one above, for several ratios.
    #[test]
    fn vote_ratio_boundaries() {
        let names = ["p1", "p2", "p3", "p4"];
        // (ratio, approvals of 4, approved?)
        let table = [
            (50, 1, false),
            (50, 2, false), // a 2–2 split is not a majority
            (50, 3, true),
            (75, 3, false), // 300 > 300 is false
            (74, 3, true),
            (76, 3, false),
            (0, 0, false),
            (0, 1, true),
            (100, 4, false), // 400 > 400 is false: 100 % can never pass
            (99, 4, true),
        ];
        for (ratio, approvals, ok) in table {
            let mut c = Case::new();
            c.policy.approve_ratio = ratio;
            c.members = members(&names, &[]);
            c.votes = Some(votes(&names[..approvals], &names[approvals..]));
            let got = c.step();
            if ok {
                assert!(
                    matches!(got, Step::Done(Decision::Approve { .. })),
                    "ratio {ratio}, {approvals}/4: {got:?}"
                );
            } else {
                assert_eq!(
                    got,
                    Step::Done(Decision::Reject {
                        rejection: Rejection::VoteFailed {
                            approvals,
                            voters: 4
                        }
                    }),
                    "ratio {ratio}, {approvals}/4"
                );
            }
        }
    }

    /// Proxy CASE 1/2 from the keeper's side: the requester alone sees the
    /// source down.
    #[test]
    fn proxy_case_1_lone_requester_is_outvoted() {
        let mut c = Case::new();
        c.votes = Some(votes(&["p1"], &["p2", "p3"]));
        assert_eq!(
            c.rejection(),
            Rejection::VoteFailed {
                approvals: 1,
                voters: 3
            }
        );
        c.policy.need_vote = false;
        assert_eq!(c.approved(), "mysql_11", "need_vote off skips the vote");
    }

    /// SPEC §7: after adopting a reported topology the keeper does not
    /// know every member, so it makes no automatic switch; an operator's
    /// switchover is theirs to make.
    #[test]
    fn unconfirmed_membership_stops_automatic_switches_only() {
        let mut c = Case::new();
        c.membership_confirmed = false;
        assert_eq!(c.rejection(), Rejection::MembershipUnconfirmed);
        c.request.kind = RequestKind::Switchover {
            target: None,
            force: false,
        };
        assert_eq!(c.approved(), "mysql_11");
    }

    /// SPEC §7 rule 2: after a failed switch, automatic requests wait out
    /// `switch_backoff`; an operator's switchover need not.
    #[test]
    fn a_failed_switch_backs_off_automatic_requests_only() {
        let mut c = Case::new();
        c.backoff = Some(1200);
        assert_eq!(c.rejection(), Rejection::Backoff { remaining_ms: 1200 });
        c.backoff = Some(0);
        assert_eq!(c.approved(), "mysql_11");
        c.backoff = Some(1200);
        c.request.kind = RequestKind::Switchover {
            target: None,
            force: false,
        };
        assert_eq!(c.approved(), "mysql_11");
    }

    #[test]
    fn maintenance_and_cooldown_stop_automatic_switches_only() {
        let mut c = Case::new();
        c.maintenance = true;
        assert_eq!(c.rejection(), Rejection::Maintenance);
        c.maintenance = false;
        c.cooldown = Some(1500);
        assert_eq!(c.rejection(), Rejection::Cooldown { remaining_ms: 1500 });
        c.cooldown = Some(0);
        assert_eq!(c.approved(), "mysql_11");
        c.cooldown = Some(1500);
        c.maintenance = true;
        c.request.kind = RequestKind::Switchover {
            target: None,
            force: false,
        };
        c.votes = None; // an operator's switchover needs no vote
        assert_eq!(c.approved(), "mysql_11");
    }

    fn no_standby(why: &[(&str, &str)]) -> Rejection {
        Rejection::NoStandby {
            standbys: why
                .iter()
                .map(|(n, w)| (n.to_string(), w.to_string()))
                .collect(),
        }
    }

    /// Agent CASE 2: the target's agent is dead (SPEC §7: no standby left,
    /// and why).
    #[test]
    fn agent_case_2_target_agent_down() {
        let mut c = Case::new();
        c.reports = Some(reports(Some(source_report(1000)), &[("mysql_11", None)]));
        assert_eq!(
            c.rejection(),
            no_standby(&[("mysql_11", "its agent did not answer")])
        );
        let mut dead = replica("mysql_11", 1000, 1000, 0.1);
        dead.alive = false;
        c.reports = Some(reports(
            Some(source_report(1000)),
            &[("mysql_11", Some(dead))],
        ));
        assert_eq!(
            c.rejection(),
            no_standby(&[("mysql_11", "its server does not answer")])
        );
        // Named by an operator: the target's own reason.
        c.request.kind = RequestKind::Switchover {
            target: Some("mysql_11".into()),
            force: true,
        };
        assert_eq!(
            c.rejection(),
            Rejection::TargetDown {
                target: "mysql_11".into()
            }
        );
    }

    /// SPEC §7 rule 1: only a true standby of the failing source is
    /// promoted automatically; each row makes mysql_12 something else
    /// while mysql_11 stays a true standby but less advanced.
    type Change = fn(&mut AgentReport);

    /// Ways to be something other than a true standby, with the reason
    /// given (empty: still a true standby).
    fn not_standbys() -> [(&'static str, Change, &'static str); 7] {
        [
            ("a true standby", |_| {}, ""),
            (
                "IO thread reconnecting",
                |r| {
                    if let Some(s) = r.replica.as_mut() {
                        s.io_running = false;
                        s.last_error = "error reconnecting to master".into();
                    }
                },
                "",
            ),
            (
                "no replication",
                |r| r.replica = None,
                "it replicates from nobody",
            ),
            (
                "another source",
                |r| {
                    if let Some(s) = r.replica.as_mut() {
                        s.source = "10.0.0.9:3306".into();
                    }
                },
                "it replicates from 10.0.0.9:3306, not from the source (127.0.0.1:1)",
            ),
            (
                "SQL thread stopped",
                |r| {
                    if let Some(s) = r.replica.as_mut() {
                        s.sql_running = false;
                        s.sql_error = "Duplicate entry".into();
                    }
                },
                "its replication SQL thread is stopped: Duplicate entry",
            ),
            (
                "fenced",
                |r| r.fenced = true,
                "it is fenced (a former source that has not rejoined)",
            ),
            (
                "errant",
                |r| r.errant = Some("holds 0-1-9".into()),
                "holds 0-1-9",
            ),
        ]
    }

    #[test]
    fn only_a_true_standby_is_promoted() {
        for (what, change, why) in not_standbys() {
            let mut c = Case::new();
            c.standbys = vec!["mysql_11".into(), "mysql_12".into()];
            let mut ahead = replica("mysql_12", 2000, 2000, 0.1);
            change(&mut ahead);
            c.reports = Some(reports(
                Some(source_report(2000)),
                &[
                    ("mysql_11", Some(replica("mysql_11", 1000, 1000, 0.1))),
                    ("mysql_12", Some(ahead.clone())),
                ],
            ));
            if why.is_empty() {
                assert_eq!(c.approved(), "mysql_12", "{what}");
                continue;
            }
            assert_eq!(c.approved(), "mysql_11", "{what}: passed over");
            // Alone, it is refused, with the reason.
            c.standbys = vec!["mysql_12".into()];
            c.reports = Some(reports(
                Some(source_report(2000)),
                &[("mysql_12", Some(ahead))],
            ));
            assert_eq!(c.rejection(), no_standby(&[("mysql_12", why)]), "{what}");
            // An operator may name it only with `force`.
            c.request.kind = RequestKind::Switchover {
                target: Some("mysql_12".into()),
                force: false,
            };
            assert_eq!(
                c.rejection(),
                Rejection::NotAStandby {
                    target: "mysql_12".into(),
                    why: why.into()
                },
                "{what}"
            );
            c.request.kind = RequestKind::Switchover {
                target: Some("mysql_12".into()),
                force: true,
            };
            assert_eq!(c.approved(), "mysql_12", "{what}: forced");
        }
    }

    /// The double failover of the safety issue: the old source came back
    /// fenced with errant writes and does not replicate; when the new
    /// source dies it must not be promoted.
    #[test]
    fn a_fenced_former_source_is_never_promoted() {
        let mut c = Case::new();
        c.request.source = "mysql_11".into();
        c.active = "mysql_11";
        c.standbys = vec!["mysql_1".into()];
        let old = AgentReport {
            datasource: "mysql_1".into(),
            alive: true,
            read_only: Some(true),
            load: Some(0.1),
            fenced: true,
            errant: Some("holds transactions 0-1-900 that mysql_11 lacks".into()),
            ..Default::default()
        };
        c.reports = Some(reports(None, &[("mysql_1", Some(old))]));
        assert!(matches!(c.rejection(), Rejection::NoStandby { .. }));
    }

    #[test]
    fn the_most_advanced_standby_wins_and_preference_breaks_ties() {
        let mut c = Case::new();
        c.standbys = vec!["mysql_11".into(), "mysql_12".into()];
        c.reports = Some(reports(
            Some(source_report(1000)),
            &[
                ("mysql_11", Some(replica("mysql_11", 900, 900, 0.1))),
                ("mysql_12", Some(replica("mysql_12", 1000, 1000, 0.1))),
            ],
        ));
        assert_eq!(c.approved(), "mysql_12");
        c.reports = Some(reports(
            Some(source_report(1000)),
            &[
                ("mysql_11", Some(replica("mysql_11", 1000, 1000, 0.1))),
                ("mysql_12", Some(replica("mysql_12", 1000, 1000, 0.1))),
            ],
        ));
        assert_eq!(c.approved(), "mysql_11", "tie: configured order");
        c.reports = Some(reports(
            Some(source_report(1000)),
            &[
                ("mysql_11", Some(replica("mysql_11", 1000, 200, 0.1))),
                ("mysql_12", Some(replica("mysql_12", 1000, 900, 0.1))),
            ],
        ));
        assert_eq!(c.approved(), "mysql_12", "same received: the most applied");
        // A standby whose agent is down is passed over for one that answers.
        c.reports = Some(reports(
            Some(source_report(1000)),
            &[
                ("mysql_11", None),
                ("mysql_12", Some(replica("mysql_12", 1000, 1000, 0.1))),
            ],
        ));
        assert_eq!(c.approved(), "mysql_12");
    }

    #[test]
    fn a_named_target_must_be_a_live_standby() {
        let mut c = Case::new();
        c.request.kind = RequestKind::Switchover {
            target: Some("mysql_99".into()),
            force: false,
        };
        assert_eq!(
            c.rejection(),
            Rejection::UnknownTarget {
                target: "mysql_99".into()
            }
        );
        c.request.kind = RequestKind::Switchover {
            target: Some("mysql_11".into()),
            force: false,
        };
        assert_eq!(c.approved(), "mysql_11");
        c.standbys.clear();
        c.request.kind = RequestKind::Failover {
            requester: "p1".into(),
        };
        assert_eq!(c.rejection(), no_standby(&[]));
    }

    /// `safe_load`: one below passes; at and above are refused.
    #[test]
    fn load_boundaries() {
        for (load, ok) in [(1.99, true), (2.0, false), (2.01, false)] {
            let mut c = Case::new();
            c.reports = Some(reports(
                Some(source_report(1000)),
                &[("mysql_11", Some(replica("mysql_11", 1000, 1000, load)))],
            ));
            if ok {
                assert_eq!(c.approved(), "mysql_11", "load {load}");
            } else {
                assert_eq!(
                    c.rejection(),
                    Rejection::TargetOverloaded {
                        target: "mysql_11".into(),
                        load: Some(load),
                        safe_load: 2.0
                    }
                );
                c.policy.need_target_load_check = false;
                assert_eq!(c.approved(), "mysql_11", "check off");
            }
        }
    }

    /// Strict check: within `safe_binlog_delay` bytes — one below, at, one above.
    #[test]
    fn strict_binlog_boundaries() {
        for (executed, ok) in [(1, true), (0, true), (-1, false)] {
            let mut c = Case::new();
            c.policy.safe_binlog_delay = Some(1000);
            let exec = (10_000 - 1000 + executed) as u64; // behind = 1000 - executed
            c.reports = Some(reports(
                Some(source_report(10_000)),
                &[("mysql_11", Some(replica("mysql_11", 10_000, exec, 0.1)))],
            ));
            if ok {
                assert_eq!(c.approved(), "mysql_11", "behind {}", 10_000 - exec);
            } else {
                assert!(matches!(
                    c.rejection(),
                    Rejection::BinlogDelay {
                        behind: Some(1001),
                        limit: Some(1000),
                        ..
                    }
                ));
            }
        }
    }

    /// Agent CASE 1: the source machine is off (MySQL and agent dead) and
    /// the binlog check is strict: refused. Lenient: approved.
    #[test]
    fn agent_case_1_source_agent_down() {
        let mut c = Case::new();
        c.policy.safe_binlog_delay = Some(1000);
        c.reports = Some(reports(
            None,
            &[("mysql_11", Some(replica("mysql_11", 1000, 1000, 0.1)))],
        ));
        assert_eq!(
            c.rejection(),
            Rejection::SourceAgentDown {
                source: "mysql_1".into()
            }
        );
        c.policy.safe_binlog_delay = None;
        assert_eq!(c.approved(), "mysql_11");
        c.policy.need_binlog_check = false;
        assert_eq!(c.approved(), "mysql_11");
    }

    #[test]
    fn lenient_check_needs_an_applier_that_can_finish() {
        let mut c = Case::new();
        let mut r = replica("mysql_11", 1000, 400, 0.1);
        c.reports = Some(reports(None, &[("mysql_11", Some(r.clone()))]));
        assert_eq!(c.approved(), "mysql_11", "still applying: fine");
        if let Some(s) = r.replica.as_mut() {
            s.sql_running = false;
            s.sql_error = "Duplicate entry".into();
        }
        c.reports = Some(reports(None, &[("mysql_11", Some(r))]));
        assert!(matches!(c.rejection(), Rejection::NoStandby { .. }));
    }

    #[test]
    fn binlog_in_another_file_is_not_within_delay() {
        let mut c = Case::new();
        c.policy.safe_binlog_delay = Some(1000);
        let mut r = replica("mysql_11", 1000, 1000, 0.1);
        if let Some(s) = r.replica.as_mut() {
            s.executed = Some(BinlogPos {
                file: "mysql-bin.000000".into(),
                pos: 999_999,
            });
        }
        c.reports = Some(reports(Some(source_report(10)), &[("mysql_11", Some(r))]));
        assert!(matches!(
            c.rejection(),
            Rejection::BinlogDelay { behind: None, .. }
        ));
    }

    #[test]
    fn rejections_serialise_with_their_reason() {
        let r = Rejection::VoteFailed {
            approvals: 1,
            voters: 3,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"reason":"VoteFailed","approvals":1,"voters":3}"#);
        assert_eq!(r.kind(), "VoteFailed");
    }
}
