//! The switch driven by fakes in paused time: every phase failing, a
//! timeout at each step, a stop between persist and publish, the planned
//! and unplanned paths.

use super::*;
use crate::store::Change;
use std::collections::HashSet;
use zerodb_agent::ops::OpsError;
use zerodb_agent::AgentError;
use zerodb_core::control::{AgentReport, BinlogPos, DataHostState};

/// What the fakes saw, in order, across agents and proxies.
type Log = Arc<Mutex<Vec<String>>>;

fn log(l: &Log, what: String) {
    l.lock().unwrap().push(what);
}

/// How a fake agent answers one kind of order.
#[derive(Clone, Copy, PartialEq)]
enum Behave {
    /// The server answers with an error.
    Fail,
    /// The agent answers that its server does not.
    Down,
    /// Nobody answers.
    Hang,
    /// The keeper no longer leads: the order is withheld.
    NotLeading,
}

#[derive(Default)]
struct FakeAgents {
    log: Log,
    /// (datasource, order) → behaviour; absent: success.
    rules: HashMap<(String, &'static str), Behave>,
}

fn kind_name(k: &OrderKind) -> &'static str {
    match k {
        OrderKind::Promote => "promote",
        OrderKind::Fence => "fence",
        OrderKind::Unfence => "unfence",
        OrderKind::Follow { .. } => "follow",
        OrderKind::CatchUp { .. } => "catch_up",
    }
}

use std::collections::HashMap;

#[async_trait::async_trait]
impl Agents for FakeAgents {
    async fn report(&self, datasource: &str, _timeout: Duration) -> Option<AgentReport> {
        log(&self.log, format!("report {datasource}"));
        Some(AgentReport {
            datasource: datasource.into(),
            alive: true,
            binlog_end: Some(BinlogPos {
                file: "mysql-bin.000001".into(),
                pos: 1000,
            }),
            ..Default::default()
        })
    }

    async fn order(
        &self,
        datasource: &str,
        order: Order,
        timeout: Duration,
    ) -> Result<(), OrderError> {
        let name = kind_name(&order.kind);
        log(&self.log, format!("{name} {datasource} @{}", order.epoch));
        match self.rules.get(&(datasource.to_string(), name)) {
            None => Ok(()),
            Some(Behave::Fail) => Err(OrderError::Agent(AgentError::Ops(OpsError::Failed(
                "Access denied; you need the READ_ONLY ADMIN privilege".into(),
            )))),
            Some(Behave::Down) => Err(OrderError::Agent(AgentError::Ops(OpsError::Timeout(
                format!("{datasource}:3306"),
            )))),
            Some(Behave::Hang) => {
                tokio::time::sleep(timeout).await;
                Err(OrderError::Timeout(timeout))
            }
            Some(Behave::NotLeading) => Err(OrderError::NotLeading),
        }
    }
}

#[derive(Debug, Default)]
struct FakeStore {
    state: Mutex<Persisted>,
    updates: Mutex<usize>,
    /// Which updates (0: the epoch's reservation, 1: the topology) fail.
    fail: HashSet<usize>,
}

#[async_trait::async_trait]
impl Store for FakeStore {
    async fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(Some(self.state.lock().unwrap().clone()))
    }

    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError> {
        let n = {
            let mut u = self.updates.lock().unwrap();
            *u += 1;
            *u - 1
        };
        if self.fail.contains(&n) {
            return Err(StoreError::Io {
                path: "fake".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        let mut s = self.state.lock().unwrap();
        change(&mut s);
        Ok(s.clone())
    }

    async fn append_decision(&self, _: &serde_json::Value) -> Result<(), StoreError> {
        Ok(())
    }
}

struct FakeProxies {
    log: Log,
    /// Sessions still open after the grace period.
    open: u64,
}

#[async_trait::async_trait]
impl Proxies for FakeProxies {
    async fn hold(&self, datahost: &str, grace: Duration, _max: Duration, _wait: Duration) -> u64 {
        log(&self.log, format!("hold {datahost}"));
        tokio::time::sleep(grace).await;
        self.open
    }

    fn release(&self, datahost: &str) {
        log(&self.log, format!("release {datahost}"));
    }

    fn publish(&self, topology: &ClusterTopology) {
        let active = &topology.datahosts[0].active;
        log(&self.log, format!("publish {active} @{}", topology.epoch));
    }
}

/// A dataHost of three: mysql_1 active, mysql_11 the target, mysql_12 a
/// standby to re-point. Epoch 4 is the newest handed out.
struct World {
    log: Log,
    agents: Arc<FakeAgents>,
    store: FakeStore,
    proxies: FakeProxies,
    timings: KeeperTimings,
    background: Background,
    plan: Plan,
}

impl World {
    fn new(planned: bool) -> Self {
        let log: Log = Arc::default();
        let store = FakeStore::default();
        *store.state.lock().unwrap() = Persisted {
            epoch: 4,
            topology: ClusterTopology {
                epoch: 3,
                term: 0,
                datahosts: vec![DataHostState::new(
                    "dh1",
                    "mysql_1",
                    ["mysql_1", "mysql_11", "mysql_12"],
                )],
            },
            ..Default::default()
        };
        Self {
            agents: Arc::new(FakeAgents {
                log: log.clone(),
                rules: HashMap::new(),
            }),
            proxies: FakeProxies {
                log: log.clone(),
                open: 0,
            },
            log,
            store,
            timings: KeeperTimings::default(),
            background: Background::default(),
            plan: Plan {
                datahost: "dh1".into(),
                source: "mysql_1".into(),
                target: "mysql_11".into(),
                planned,
                force: false,
                standbys: vec!["mysql_11".into(), "mysql_12".into()],
                follow: Some(Follow {
                    addr: "10.0.0.11:3306".into(),
                    user: "repl".into(),
                    password: "pw".into(),
                }),
                back: Some(Follow {
                    addr: "10.0.0.1:3306".into(),
                    user: "repl".into(),
                    password: "pw".into(),
                }),
            },
        }
    }

    fn rule(&mut self, datasource: &str, order: &'static str, b: Behave) {
        Arc::get_mut(&mut self.agents)
            .expect("no switch running")
            .rules
            .insert((datasource.into(), order), b);
    }

    /// Runs the switch and every background order it started; returns
    /// its outcome and what agents and proxies saw, in order.
    async fn run(
        &self,
        stop_after: Option<Phase>,
    ) -> (Result<Persisted, SwitchError>, Vec<String>) {
        let mut switch = Switch {
            plan: &self.plan,
            agents: self.agents.clone(),
            proxies: &self.proxies,
            store: &self.store,
            term: 0,
            timings: &self.timings,
            background: &self.background,
            stop_after,
            pause_after: None,
            phases_ms: BTreeMap::new(),
        };
        let result = switch.run().await;
        self.background.finish().await;
        let seen = self.log.lock().unwrap().clone();
        (result, seen)
    }

    fn stored(&self) -> Persisted {
        self.store.state.lock().unwrap().clone()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_failover_fences_then_promotes_persists_and_publishes() {
    let w = World::new(false);
    let (result, seen) = w.run(None).await;
    let state = result.expect("switched");
    assert_eq!(state.epoch, 5, "the next epoch");
    assert_eq!(state.topology.epoch, 5);
    let dh = &state.topology.datahosts[0];
    assert_eq!(dh.active, "mysql_11");
    assert_eq!(dh.standbys, strings(&["mysql_1", "mysql_12"]));
    assert_eq!(
        state.switch, None,
        "the intent is cleared with the topology"
    );
    // The source answered its fence: no second one in the background.
    assert_eq!(
        seen,
        strings(&[
            "fence mysql_1 @5",
            "promote mysql_11 @5",
            "publish mysql_11 @5",
            "follow mysql_12 @5",
        ])
    );
}

/// Rule 4 of the safety issue, as a table: how the old source's fence
/// ends decides whether the target is promoted, how long that waits, and
/// whether the fence is tried again in the background.
#[tokio::test(start_paused = true)]
async fn a_failover_promotes_only_once_an_answering_source_is_fenced() {
    let fence_timeout = KeeperTimings::default().fence_timeout;
    // (the fence's behaviour, switched, waited before the promotion,
    // what agents and proxies saw)
    let table: [(Behave, bool, Duration, &[&str]); 3] = [
        // The server answered and refused: the target is left untouched,
        // the fence (which may have half-landed) lifted.
        (
            Behave::Fail,
            false,
            Duration::ZERO,
            &[
                "fence mysql_1 @5",
                "unfence mysql_1 @5",
                "publish mysql_1 @5",
            ],
        ),
        // Its agent cannot reach it (killed): the switch goes on, and the
        // fence is tried again behind it.
        (
            Behave::Down,
            true,
            Duration::ZERO,
            &[
                "fence mysql_1 @5",
                "promote mysql_11 @5",
                "publish mysql_11 @5",
                "fence mysql_1 @5",
                "follow mysql_12 @5",
            ],
        ),
        // Nobody answers (paused, cut off): `fence_timeout` is waited.
        (
            Behave::Hang,
            true,
            fence_timeout,
            &[
                "fence mysql_1 @5",
                "promote mysql_11 @5",
                "publish mysql_11 @5",
                "fence mysql_1 @5",
                "follow mysql_12 @5",
            ],
        ),
    ];
    for (behave, switched, waited, expected) in table {
        let mut w = World::new(false);
        w.rule("mysql_1", "fence", behave);
        let started = tokio::time::Instant::now();
        let (result, _) = w.run(Some(Phase::Fence)).await;
        let fence_result = result.map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(started.elapsed(), waited, "{expected:?}");
        let mut w = World::new(false);
        w.rule("mysql_1", "fence", behave);
        let (result, mut seen) = w.run(None).await;
        assert_eq!(result.is_ok(), switched, "{result:?}");
        if !switched {
            assert!(matches!(result, Err(SwitchError::Fence { .. })));
            assert!(fence_result.is_err());
        }
        // The background fence and re-pointing run in any order.
        let mut expected = strings(expected);
        if switched {
            seen[3..].sort();
            expected[3..].sort();
        }
        assert_eq!(seen, expected);
        let active = &w.stored().topology.datahosts[0].active;
        assert_eq!(active, if switched { "mysql_11" } else { "mysql_1" });
    }
}

#[tokio::test(start_paused = true)]
async fn a_switchover_holds_fences_and_catches_up_before_promoting() {
    let w = World::new(true);
    let (result, seen) = w.run(None).await;
    assert!(result.is_ok());
    assert_eq!(
        seen,
        strings(&[
            "hold dh1",
            "fence mysql_1 @5",
            "report mysql_1",
            "catch_up mysql_11 @5",
            "promote mysql_11 @5",
            "publish mysql_11 @5",
            "follow mysql_12 @5",
        ])
    );
}

/// Every phase failing, planned: what was done is undone, newest first;
/// the topology stays, published again under the switch's epoch.
#[tokio::test(start_paused = true)]
async fn each_failing_phase_of_a_switchover_is_compensated() {
    let table: [(&str, &str, &[&str]); 3] = [
        // A fence that failed may still have landed: it is lifted too.
        (
            "mysql_1",
            "fence",
            &[
                "hold dh1",
                "fence mysql_1 @5",
                "unfence mysql_1 @5",
                "release dh1",
                "publish mysql_1 @5",
            ],
        ),
        (
            "mysql_11",
            "catch_up",
            &[
                "hold dh1",
                "fence mysql_1 @5",
                "report mysql_1",
                "catch_up mysql_11 @5",
                "unfence mysql_1 @5", // the fence lifted
                "release dh1",
                "publish mysql_1 @5", // the unchanged topology, under epoch 5
            ],
        ),
        (
            "mysql_11",
            "promote",
            &[
                "hold dh1",
                "fence mysql_1 @5",
                "report mysql_1",
                "catch_up mysql_11 @5",
                "promote mysql_11 @5",
                "unfence mysql_1 @5",
                "release dh1",
                "publish mysql_1 @5",
            ],
        ),
    ];
    for (ds, order, expected) in table {
        let mut w = World::new(true);
        w.rule(ds, order, Behave::Fail);
        let (result, seen) = w.run(None).await;
        assert!(result.is_err(), "{order}");
        assert_eq!(seen, strings(expected), "{order} failing");
        let stored = w.stored();
        assert_eq!(stored.topology.datahosts[0].active, "mysql_1", "{order}");
        assert_eq!(
            stored.epoch, 5,
            "the reserved epoch is never handed out again"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_promotion_in_a_failover_changes_no_topology() {
    let mut w = World::new(false);
    w.rule("mysql_11", "promote", Behave::Fail);
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::Promote { .. })));
    assert_eq!(
        seen,
        strings(&[
            "fence mysql_1 @5",
            "promote mysql_11 @5",
            "unfence mysql_1 @5",
            "publish mysql_1 @5"
        ]),
        "the fence lifted; the unchanged topology under the new epoch"
    );
    let stored = w.stored();
    assert_eq!(stored.topology.epoch, 5);
    assert_eq!(stored.topology.datahosts[0].active, "mysql_1");
    assert_eq!(stored.switch, None, "the intent is cleared");
}

#[tokio::test(start_paused = true)]
async fn no_epoch_no_order() {
    let mut w = World::new(true);
    w.store.fail.insert(0);
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::Reserve(_))));
    assert!(seen.is_empty(), "{seen:?}");
}

/// The topology cannot be persisted after the promotion (the disk is
/// full): the fence stays (the target is writable), the proxies are
/// released, nothing published.
#[tokio::test(start_paused = true)]
async fn a_topology_that_cannot_be_persisted_is_not_published() {
    // The promoted target is fenced again, then the source's fence
    // lifted: the topology keeps the source. Before, both stayed as the
    // switch left them (the source fenced, the target writable), and the
    // target's agent then fenced it too: nothing took writes.
    let mut w = World::new(true);
    w.store.fail.extend([1, 2]);
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::Persist(_))));
    assert_eq!(
        seen,
        strings(&[
            "hold dh1",
            "fence mysql_1 @5",
            "report mysql_1",
            "catch_up mysql_11 @5",
            "promote mysql_11 @5",
            "fence mysql_11 @5",
            "unfence mysql_1 @5",
            "release dh1",
        ])
    );
    // A failover's target, which its promotion left replicating from
    // nobody, is pointed back at the source: a true standby for the next
    // request, even while the source is dead.
    let mut w = World::new(false);
    w.store.fail.extend([1, 2]);
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::Persist(_))));
    assert_eq!(
        seen,
        strings(&[
            "fence mysql_1 @5",
            "promote mysql_11 @5",
            "fence mysql_11 @5",
            "report mysql_11",
            "follow mysql_11 @5",
            "unfence mysql_1 @5",
        ])
    );
}

/// An agent that never answers costs exactly its phase's timeout, and the
/// switch ends there.
#[tokio::test(start_paused = true)]
async fn a_timeout_at_each_step() {
    let t = KeeperTimings::default();
    let table = [
        ("mysql_1", "fence", t.agent_timeout),
        ("mysql_11", "catch_up", t.catch_up_timeout + t.agent_timeout),
        (
            "mysql_11",
            "promote",
            t.promote_timeout + t.agent_timeout * 2,
        ),
    ];
    for (ds, order, timeout) in table {
        let mut w = World::new(true);
        w.rule(ds, order, Behave::Hang);
        let started = tokio::time::Instant::now();
        // Measured up to the promotion.
        let (result, seen) = w.run(Some(Phase::Promote)).await;
        let hung = seen.iter().any(|e| e.starts_with(&format!("{order} {ds}")));
        assert!(hung && result.is_err(), "{order}: {result:?}");
        // The grace period, then the hung step; the compensating promotion
        // of the source (after a fence) answers at once.
        let elapsed = started.elapsed();
        let expected = t.switchover_grace + timeout;
        assert_eq!(elapsed, expected, "{order}");
    }
}

/// A keeper that stops between persist and publish (a crash) has the new
/// topology on disk and nothing undone: the next keeper publishes it.
#[tokio::test(start_paused = true)]
async fn a_stop_between_persist_and_publish_leaves_the_topology_persisted() {
    let w = World::new(false);
    let (result, seen) = w.run(Some(Phase::Persist)).await;
    assert!(matches!(result, Err(SwitchError::Stopped(Phase::Persist))));
    assert!(!seen.iter().any(|e| e.starts_with("publish")), "{seen:?}");
    let stored = w.stored();
    assert_eq!(stored.topology.datahosts[0].active, "mysql_11");
    assert_eq!(stored.topology.epoch, 5);
}

/// A stop right after the reservation leaves the intent persisted, for
/// the next keeper to finish or roll back.
#[tokio::test(start_paused = true)]
async fn the_intent_is_persisted_before_the_first_order() {
    let w = World::new(true);
    let (result, seen) = w.run(Some(Phase::Reserve)).await;
    assert!(matches!(result, Err(SwitchError::Stopped(Phase::Reserve))));
    assert!(seen.is_empty());
    let intent = w.stored().switch.expect("intent persisted");
    assert_eq!(
        (
            intent.epoch,
            intent.source.as_str(),
            intent.target.as_str(),
            intent.planned
        ),
        (5, "mysql_1", "mysql_11", true)
    );
}

#[tokio::test(start_paused = true)]
async fn a_forced_switchover_goes_on_without_catching_up() {
    let mut w = World::new(true);
    w.plan.force = true;
    w.rule("mysql_11", "catch_up", Behave::Fail);
    let (result, seen) = w.run(None).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.contains(&"promote mysql_11 @5".to_string()));
    assert!(!seen.contains(&"release dh1".to_string()));
}

#[tokio::test(start_paused = true)]
async fn open_sessions_after_the_grace_do_not_stop_a_switchover() {
    let mut w = World::new(true);
    w.proxies.open = 3;
    let (result, _) = w.run(None).await;
    assert!(result.is_ok());
}

/// A promotion whose answer never came may have happened: the target is
/// fenced again before the source's fence is lifted, so the two are never
/// writable together.
#[tokio::test(start_paused = true)]
async fn a_promotion_without_an_answer_fences_the_target_again() {
    let mut w = World::new(true);
    w.rule("mysql_11", "promote", Behave::Hang);
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::Promote { .. })));
    let tail = &seen[seen.len() - 4..];
    assert_eq!(
        tail,
        strings(&[
            "fence mysql_11 @5",
            "unfence mysql_1 @5",
            "release dh1",
            "publish mysql_1 @5",
        ])
    );
}

/// Keepers on etcd: a keeper that loses the lead in the middle of a
/// switch stops there. It compensates nothing (its orders would be
/// withheld, its writes refused) and leaves the intent for the next
/// leader to roll back.
#[tokio::test(start_paused = true)]
async fn a_switch_that_loses_the_lead_stops_and_leaves_its_intent() {
    for order in ["fence", "promote"] {
        let mut w = World::new(order == "fence");
        w.rule(
            if order == "fence" {
                "mysql_1"
            } else {
                "mysql_11"
            },
            order,
            Behave::NotLeading,
        );
        let (result, seen) = w.run(None).await;
        let e = result.expect_err("stopped");
        assert!(e.lead_lost(), "{order}: {e}");
        assert!(
            seen.iter().all(|s| !s.starts_with("unfence")
                && !s.starts_with("publish")
                && !s.starts_with("release")),
            "{order}: nothing compensated: {seen:?}"
        );
        let stored = w.stored();
        assert_eq!(
            stored.switch.map(|i| i.epoch),
            Some(5),
            "{order}: the intent stays"
        );
        assert_eq!(stored.topology.datahosts[0].active, "mysql_1");
    }
}

/// A switch begun under an earlier term (the keeper lost the lead and won
/// it back, and its takeover rolled the switch back) changes no topology
/// when it gets to persist it.
#[tokio::test(start_paused = true)]
async fn a_switch_under_an_earlier_term_persists_nothing() {
    let w = World::new(false);
    w.store.state.lock().unwrap().term = 7;
    let (result, seen) = w.run(None).await;
    assert!(matches!(result, Err(SwitchError::LeadLost)), "{result:?}");
    let stored = w.stored();
    assert_eq!(stored.topology.datahosts[0].active, "mysql_1");
    assert_eq!(stored.topology.epoch, 3);
    assert!(!seen.iter().any(|s| s.starts_with("publish")), "{seen:?}");
}
