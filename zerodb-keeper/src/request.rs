//! A switch request from start to end: gather the decision's inputs step
//! by step (votes only if no proxy is lost, agents' reports only if the
//! vote passed), decide ([`zerodb_core::decision::decide`]), carry an
//! approval out ([`crate::switch`]), answer, and record the decision.

use crate::agents::Agents;
use crate::keeper::{lock, Keeper};
use crate::record::{unix_ms, DecisionRecord};
use crate::switch::{Plan, Switch, SwitchError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerodb_core::control::{ClusterTopology, Rejection, Request, RequestKind, SwitchAnswer};
use zerodb_core::decision::{decide, Decision, Input, Member, Need, Reports, Step, Vote};

/// What the decision reads, gathered so far.
struct Gathered {
    active: String,
    standbys: Vec<String>,
    maintenance: bool,
    membership_confirmed: bool,
    cooldown_left_ms: Option<u64>,
    backoff_left_ms: Option<u64>,
    members: Vec<Member>,
    source_addrs: Vec<String>,
    votes: Option<BTreeMap<String, Vote>>,
    reports: Option<Reports>,
    phases_ms: BTreeMap<&'static str, u64>,
}

/// Decides a switch request (SPEC §3) and carries it out if approved.
pub async fn request_switch(keeper: &Arc<Keeper>, request: Request) -> SwitchAnswer {
    let Some(lock) = keeper.locks.get(&request.datahost) else {
        let rejection = Rejection::UnknownDataHost {
            datahost: request.datahost.clone(),
        };
        return SwitchAnswer::Rejected { rejection };
    };
    let requested_at_unix_ms = unix_ms();
    let _serial = lock.lock().await;
    let started = Instant::now();
    let mut g = inputs(keeper, &request).await;
    let decision = reach_decision(keeper, &request, &mut g).await;
    let (decision, answer, epoch) =
        carry_out(keeper, &request, decision, &g.standbys, &mut g.phases_ms).await;
    report_decision(&request, &decision, epoch, started);
    // Stale requests too: a proxy asking about an old source is a sign.
    let record = DecisionRecord {
        id: keeper.next_id(),
        requested_at_unix_ms,
        at_unix_ms: unix_ms(),
        request,
        active: g.active,
        members: g.members,
        votes: g.votes,
        reports: g.reports,
        decision,
        epoch,
        phases_ms: g.phases_ms,
    };
    keeper.decisions.record(keeper.store(), record).await;
    answer
}

/// The inputs known before asking anyone.
async fn inputs(keeper: &Keeper, request: &Request) -> Gathered {
    let state = keeper.state();
    let dh = state.topology.datahost(&request.datahost).cloned();
    let (active, standbys) = dh.map(|d| (d.active, d.standbys)).unwrap_or_default();
    let cooldown_left_ms = lock(&keeper.last_switch).get(&request.datahost).map(|at| {
        keeper
            .cfg
            .timings
            .cooldown
            .saturating_sub(at.elapsed())
            .as_millis() as u64
    });
    let backoff_left_ms = lock(&keeper.failed_switch)
        .get(&request.datahost)
        .map(|at| {
            let backoff = keeper.cfg.timings.switch_backoff;
            backoff.saturating_sub(at.elapsed()).as_millis() as u64
        });
    Gathered {
        source_addrs: keeper.addr_of(&active).into_iter().collect(),
        active,
        standbys,
        maintenance: state.maintenance.contains(&request.datahost),
        membership_confirmed: state.membership_confirmed,
        cooldown_left_ms,
        backoff_left_ms,
        members: keeper.members().await,
        votes: None,
        reports: None,
        phases_ms: BTreeMap::new(),
    }
}

/// Runs the decision, gathering what it asks for, until it is made.
async fn reach_decision(keeper: &Keeper, request: &Request, g: &mut Gathered) -> Decision {
    loop {
        let step = decide(&Input {
            policy: &keeper.cfg.policy,
            request,
            active: &g.active,
            source_addrs: &g.source_addrs,
            standbys: &g.standbys,
            maintenance: g.maintenance,
            membership_confirmed: g.membership_confirmed,
            cooldown_left_ms: g.cooldown_left_ms,
            backoff_left_ms: g.backoff_left_ms,
            members: &g.members,
            votes: g.votes.as_ref(),
            reports: g.reports.as_ref(),
        });
        let t = Instant::now();
        let need = match step {
            Step::Done(d) => return d,
            Step::Need(need) => need,
        };
        let reports = gather_reports(keeper, &request.source, &g.standbys);
        let r = match need {
            Need::Votes => {
                // The reports will be needed if the vote passes: fetch
                // them meanwhile.
                let timeout = keeper.cfg.timings.vote_timeout;
                let votes = keeper
                    .members
                    .votes(&request.datahost, &request.source, timeout);
                let (v, r) = tokio::join!(votes, reports);
                g.votes = Some(v);
                r
            }
            Need::Reports => reports.await,
        };
        g.source_addrs = same_server(&g.source_addrs, &r).await;
        g.reports = Some(r);
        let name = match need {
            Need::Votes => "votes_and_reports",
            Need::Reports => "reports",
        };
        g.phases_ms.insert(name, t.elapsed().as_millis() as u64);
    }
}

/// Reports of the standbys, and of the source when the strict binlog
/// check needs it (a paused source's agent would make everyone wait
/// out its timeout for nothing).
async fn gather_reports(keeper: &Keeper, source: &str, standbys: &[String]) -> Reports {
    let t = keeper.cfg.timings.agent_timeout;
    let strict =
        keeper.cfg.policy.need_binlog_check && keeper.cfg.policy.safe_binlog_delay.is_some();
    let agents: &dyn Agents = keeper.agents.as_ref();
    let src = async {
        match strict {
            true => agents.report(source, t).await,
            false => None,
        }
    };
    let others = futures_util::future::join_all(standbys.iter().map(|s| agents.report(s, t)));
    let (source_report, reports) = tokio::join!(src, others);
    Reports {
        source: source_report,
        standbys: standbys.iter().cloned().zip(reports).collect(),
    }
}

/// Answers a decision, carrying an approval out (SPEC §3 step 7).
async fn carry_out(
    keeper: &Keeper,
    request: &Request,
    decision: Decision,
    standbys: &[String],
    phases_ms: &mut BTreeMap<&'static str, u64>,
) -> (Decision, SwitchAnswer, Option<u64>) {
    let target = match decision {
        Decision::Stale => {
            let topology = keeper.topology();
            return (Decision::Stale, SwitchAnswer::Stale { topology }, None);
        }
        Decision::Reject { rejection } => {
            let answer = SwitchAnswer::Rejected {
                rejection: rejection.clone(),
            };
            return (Decision::Reject { rejection }, answer, None);
        }
        Decision::Approve { target } => target,
    };
    let plan = plan(keeper, request, &target, standbys);
    let mut switch = Switch {
        plan: &plan,
        agents: keeper.agents.clone(),
        proxies: &keeper.members,
        store: keeper.store(),
        term: keeper.term(),
        timings: &keeper.cfg.timings,
        background: &keeper.background,
        stop_after: keeper.stop_after(),
        pause_after: keeper.paused_after(),
        phases_ms: BTreeMap::new(),
    };
    let outcome = {
        let _one_at_a_time = keeper.switching.lock().await;
        switch.run().await
    };
    phases_ms.append(&mut switch.phases_ms);
    if let Err(SwitchError::Stopped(phase)) = &outcome {
        keeper.stopped_at(*phase);
    }
    match outcome {
        Ok(state) => {
            lock(&keeper.failed_switch).remove(&request.datahost);
            lock(&keeper.last_switch).insert(request.datahost.clone(), tokio::time::Instant::now());
            let topology: ClusterTopology = state.topology;
            let epoch = Some(topology.epoch);
            (
                Decision::Approve { target },
                SwitchAnswer::Switched { topology },
                epoch,
            )
        }
        Err(error) => {
            lock(&keeper.failed_switch)
                .insert(request.datahost.clone(), tokio::time::Instant::now());
            let rejection = match error {
                SwitchError::Fence { source_name, error } => Rejection::FenceFailed {
                    source: source_name,
                    error: error.to_string(),
                },
                error => Rejection::PromotionFailed {
                    target,
                    error: error.to_string(),
                },
            };
            let answer = SwitchAnswer::Rejected {
                rejection: rejection.clone(),
            };
            (Decision::Reject { rejection }, answer, None)
        }
    }
}

/// The switch to carry out for an approval of `target`.
fn plan(keeper: &Keeper, request: &Request, target: &str, standbys: &[String]) -> Plan {
    let follow = keeper.follow(&request.datahost, target);
    let (planned, force) = match request.kind {
        RequestKind::Switchover { force, .. } => (true, force),
        RequestKind::Failover { .. } => (false, false),
    };
    Plan {
        datahost: request.datahost.clone(),
        source: request.source.clone(),
        target: target.to_string(),
        planned,
        force,
        standbys: standbys.to_vec(),
        follow,
        back: keeper.follow(&request.datahost, &request.source),
    }
}

/// Metrics and a log line for every decision.
fn report_decision(request: &Request, decision: &Decision, epoch: Option<u64>, started: Instant) {
    let result = match decision {
        Decision::Stale => "stale",
        Decision::Approve { .. } => "approved",
        Decision::Reject { rejection } => rejection.kind(),
    };
    metrics::counter!("zerodb_keeper_decisions_total", "datahost" => request.datahost.clone(), "result" => result)
        .increment(1);
    metrics::histogram!("zerodb_keeper_decision_seconds", "result" => result)
        .record(started.elapsed().as_secs_f64());
    match decision {
        Decision::Reject { rejection } => {
            tracing::warn!(datahost = %request.datahost, source = %request.source, reason = ?rejection, "switch rejected")
        }
        Decision::Approve { target } => {
            tracing::warn!(datahost = %request.datahost, from = %request.source, to = %target, epoch, ms = started.elapsed().as_millis() as u64, "switch approved")
        }
        Decision::Stale => {}
    }
}

/// `addrs` (the source's configured address) and every address a
/// standby replicates from that names the same server by another name
/// (`localhost` for `127.0.0.1`, a host name for its IP): both resolve to
/// a common socket address. Only names that differ are looked up.
async fn same_server(addrs: &[String], reports: &Reports) -> Vec<String> {
    let resolve = |a: String| async move {
        let found = tokio::time::timeout(Duration::from_millis(500), tokio::net::lookup_host(a));
        match found.await {
            Ok(Ok(it)) => it.collect::<Vec<_>>(),
            _ => Vec::new(),
        }
    };
    let mut out = addrs.to_vec();
    let Some(configured) = addrs.first() else {
        return out;
    };
    let others: BTreeSet<&String> = reports
        .standbys
        .values()
        .flatten()
        .filter_map(|r| r.replica.as_ref().map(|s| &s.source))
        .filter(|s| !addrs.contains(s))
        .collect();
    if others.is_empty() {
        return out;
    }
    let mine = resolve(configured.clone()).await;
    for other in others {
        let theirs = resolve(other.clone()).await;
        if theirs.iter().any(|a| mine.contains(a)) {
            out.push(other.clone());
        }
    }
    out
}
