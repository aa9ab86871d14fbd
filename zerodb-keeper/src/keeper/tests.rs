//! The keeper over fakes: a memory store, agents that report and obey,
//! proxies as channels.

use super::*;
use crate::store::MemoryStore;
use crate::switch::Phase;
use zerodb_agent::client::OrderError;
use zerodb_core::control::{Order, Rejection, ReplicaStatus, Request, RequestKind, SwitchAnswer};
use zerodb_core::decision::Decision;

/// mysql_11 is a true standby of mysql_1; every order succeeds, but
/// promotions while `refuse_promotions` is set.
#[derive(Default)]
struct Obedient {
    refuse_promotions: std::sync::atomic::AtomicBool,
    /// The orders given, as `kind datasource @epoch`.
    orders: Mutex<Vec<String>>,
    /// mysql_1 does not answer and mysql_11 replicates from nobody.
    promoted_alone: std::sync::atomic::AtomicBool,
}

impl Obedient {
    fn orders(&self) -> Vec<String> {
        lock(&self.orders).clone()
    }
}

#[async_trait::async_trait]
impl Agents for Obedient {
    async fn report(&self, datasource: &str, _timeout: Duration) -> Option<AgentReport> {
        if self
            .promoted_alone
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Replicating from nobody, and fenced again by its agent when
            // the keeper went away.
            return (datasource == "mysql_11").then(|| AgentReport {
                datasource: datasource.into(),
                alive: true,
                read_only: Some(true),
                fenced: true,
                ..Default::default()
            });
        }
        let replica = (datasource == "mysql_11").then(|| ReplicaStatus {
            source: "10.0.0.1:3306".into(),
            sql_running: true,
            ..Default::default()
        });
        Some(AgentReport {
            datasource: datasource.into(),
            alive: true,
            read_only: Some(datasource == "mysql_11"),
            load: Some(0.1),
            replica,
            ..Default::default()
        })
    }

    async fn order(&self, ds: &str, order: Order, _: Duration) -> Result<(), OrderError> {
        let refuse = self
            .refuse_promotions
            .load(std::sync::atomic::Ordering::Relaxed);
        let kind = serde_json::to_value(&order.kind).expect("an order serialises");
        let kind = kind["order"].as_str().unwrap_or("?").to_string();
        lock(&self.orders).push(format!("{kind} {ds} @{}", order.epoch));
        match order.kind {
            zerodb_core::control::OrderKind::Promote if refuse => {
                Err(OrderError::NoAgent(ds.into()))
            }
            _ => Ok(()),
        }
    }
}

fn config() -> KeeperConfig {
    let yaml = r#"
token: t
need_vote: false
datahosts:
  - name: dh1
    user: u
    datasources:
      - {name: mysql_1, addr: "10.0.0.1:3306"}
      - {name: mysql_11, addr: "10.0.0.11:3306"}
"#;
    KeeperConfig::from_yaml(yaml).expect("config")
}

async fn keeper(store: &Arc<MemoryStore>) -> Arc<Keeper> {
    keeper_with(store, Arc::new(Obedient::default())).await
}

async fn keeper_with(store: &Arc<MemoryStore>, agents: Arc<Obedient>) -> Arc<Keeper> {
    Keeper::with_parts(config(), store.clone(), agents, Vec::new())
        .await
        .expect("keeper")
}

/// Registers proxy p1 on `k`; keep the receiver for its connection to
/// stay open.
async fn register_p1(k: &Keeper) -> mpsc::UnboundedReceiver<FromKeeper> {
    let (tx, rx) = mpsc::unbounded_channel();
    k.register("p1", 0, k.next_id(), tx)
        .await
        .expect("register");
    rx
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

/// A keeper that stops between persisting a switch's topology and
/// publishing it (a crash) left the new topology persisted: the next
/// keeper gives it to every proxy that registers.
#[tokio::test(start_paused = true)]
async fn a_keeper_restarted_between_persist_and_publish_hands_out_the_new_topology() {
    let store = Arc::new(MemoryStore::default());
    let k = keeper(&store).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = k
        .register("p1", 0, k.next_id(), tx)
        .await
        .expect("register");
    assert_eq!(
        (first.epoch, first.datahosts[0].active.as_str()),
        (1, "mysql_1")
    );

    k.stop_switches_after(Some(Phase::Persist));
    let answer = crate::request::request_switch(&k, failover()).await;
    assert!(
        matches!(&answer, SwitchAnswer::Rejected { rejection: Rejection::PromotionFailed { error, .. } } if error.contains("Persist")),
        "{answer:?}"
    );
    assert!(rx.try_recv().is_err(), "nothing published");
    drop(k);

    let restarted = keeper(&store).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let t = restarted
        .register("p1", 0, restarted.next_id(), tx)
        .await
        .expect("register");
    assert_eq!((t.epoch, t.datahosts[0].active.as_str()), (2, "mysql_11"));
    assert_eq!(restarted.state().switch, None);
}

/// An approved failover through the keeper: promoted, persisted, pushed
/// to the registered proxy, recorded with its phases.
#[tokio::test(start_paused = true)]
async fn an_approved_failover_is_pushed_and_recorded() {
    let store = Arc::new(MemoryStore::default());
    let k = keeper(&store).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    k.register("p1", 0, k.next_id(), tx)
        .await
        .expect("register");
    let answer = crate::request::request_switch(&k, failover()).await;
    assert!(
        matches!(answer, SwitchAnswer::Switched { .. }),
        "{answer:?}"
    );
    match rx.try_recv() {
        Ok(FromKeeper::Topology { topology }) => {
            assert_eq!(topology.datahosts[0].active, "mysql_11")
        }
        other => panic!("expected the new topology, got {other:?}"),
    }
    let d = k.decisions().pop().expect("recorded");
    assert_eq!(d.epoch, Some(2));
    for phase in ["reports", "promote", "publish"] {
        assert!(
            d.phases_ms.contains_key(phase),
            "{phase}: {:?}",
            d.phases_ms
        );
    }
    k.finish_background().await;
}

/// SPEC §7 rule 2: a failed promotion is recorded, and automatic requests
/// for the dataHost are refused until `switch_backoff` has passed, instead
/// of trying again at every request.
#[tokio::test(start_paused = true)]
async fn a_failed_promotion_backs_off_the_next_attempts() {
    let store = Arc::new(MemoryStore::default());
    let agents = Arc::new(Obedient::default());
    agents
        .refuse_promotions
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let k = keeper_with(&store, agents.clone()).await;
    let reason = |a: &SwitchAnswer| match a {
        SwitchAnswer::Rejected { rejection } => rejection.kind(),
        SwitchAnswer::Switched { .. } => "switched",
        SwitchAnswer::Stale { .. } => "stale",
    };
    let first = crate::request::request_switch(&k, failover()).await;
    assert_eq!(reason(&first), "PromotionFailed");
    agents
        .refuse_promotions
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let soon = crate::request::request_switch(&k, failover()).await;
    assert_eq!(reason(&soon), "Backoff");
    tokio::time::advance(k.config().timings.switch_backoff).await;
    let later = crate::request::request_switch(&k, failover()).await;
    assert_eq!(reason(&later), "switched");
    let kinds: Vec<_> = k
        .decisions()
        .iter()
        .map(|d| match &d.decision {
            Decision::Reject { rejection } => rejection.kind(),
            _ => "approve",
        })
        .collect();
    assert_eq!(kinds, ["PromotionFailed", "Backoff", "approve"]);
    k.finish_background().await;
}

/// A proxy reports only the dataHosts it serves: adopting its topology
/// changes those and keeps the others, with standbys from the config.
#[test]
fn a_partial_report_is_merged_per_datahost() {
    let mut mine = ClusterTopology {
        epoch: 3,
        term: 0,
        datahosts: vec![
            DataHostState::new("dh1", "a", ["a", "b", "c"]),
            DataHostState::new("dh2", "x", ["x", "y"]),
        ],
    };
    let reported = ClusterTopology {
        epoch: 7,
        term: 0,
        datahosts: vec![DataHostState::new("dh1", "c", ["a", "c"])],
    };
    let config = vec![
        ("dh1".to_string(), vec!["a".into(), "b".into(), "c".into()]),
        ("dh2".to_string(), vec!["x".into(), "y".into()]),
    ];
    adopt_topology(&mut mine, &reported, &config);
    assert_eq!(mine.epoch, 7);
    assert_eq!(
        mine.datahosts[0],
        DataHostState::new("dh1", "c", ["a", "b", "c"])
    );
    assert_eq!(
        mine.datahosts[1],
        DataHostState::new("dh2", "x", ["x", "y"])
    );
}

/// SPEC §7 rule 5: a keeper stopped (as by a crash) after each phase from
/// the epoch's reservation to the promotion left the switch's intent
/// persisted; the next keeper rolls it back before serving: the target,
/// maybe promoted, fenced again first, then the source's fence lifted, and
/// the unchanged topology stamped with the switch's epoch.
#[tokio::test(start_paused = true)]
async fn a_keeper_restarted_mid_switch_rolls_the_switch_back() {
    for phase in [Phase::Reserve, Phase::Fence, Phase::Promote] {
        let store = interrupted_after(phase).await;

        let agents = Arc::new(Obedient::default());
        let restarted = keeper_with(&store, agents.clone()).await;
        // The target fenced first, even though it still replicates
        // read-only (a promotion may be running there: its agent fences
        // after it); then the source's fence lifted.
        assert_eq!(
            agents.orders(),
            ["fence mysql_11 @2", "unfence mysql_1 @2"],
            "{phase:?}"
        );
        let s = restarted.state();
        assert_eq!(s.switch, None, "{phase:?}");
        assert_eq!(s.topology.epoch, 2);
        assert_eq!(s.topology.datahosts[0].active, "mysql_1");
        // Not a switch: no cooldown; the proxies' next request switches.
        let _p1 = register_p1(&restarted).await;
        let again = crate::request::request_switch(&restarted, failover()).await;
        assert!(
            matches!(&again, SwitchAnswer::Switched { topology } if topology.epoch == 3),
            "{phase:?}: {again:?}"
        );
        restarted.finish_background().await;
    }
}

/// A store left by a keeper that stopped after `phase` of a failover
/// from mysql_1 to mysql_11, with p1 registered.
async fn interrupted_after(phase: Phase) -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::default());
    let k = keeper(&store).await;
    let _p1 = register_p1(&k).await;
    k.stop_switches_after(Some(phase));
    let answer = crate::request::request_switch(&k, failover()).await;
    assert!(matches!(answer, SwitchAnswer::Rejected { .. }), "{phase:?}");
    let intent = k.state().switch.expect("the intent stays persisted");
    assert_eq!((intent.epoch, intent.target.as_str()), (2, "mysql_11"));
    store
}

/// SPEC §7 rule 5, after the promotion: the target replicates from
/// nobody (its agent fenced it again when the keeper went away). The next
/// keeper does not finish the switch on the crashed keeper's word (the
/// proxies may have written to the source since): it fences the target,
/// lifts the source's fence and points the target back at the source, a
/// true standby for the next decision, which switches. A target that
/// does not answer is fenced again all the same.
#[tokio::test(start_paused = true)]
async fn a_keeper_restarted_after_the_promotion_points_the_target_back() {
    let store = interrupted_after(Phase::Promote).await;
    let agents = Arc::new(Obedient::default());
    agents
        .promoted_alone
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let restarted = keeper_with(&store, agents.clone()).await;
    let s = restarted.state();
    assert_eq!(s.switch, None);
    assert_eq!(s.topology.epoch, 2);
    assert_eq!(s.topology.datahosts[0].active, "mysql_1");
    assert_eq!(
        agents.orders(),
        [
            "fence mysql_11 @2",
            "follow mysql_11 @2",
            "unfence mysql_1 @2"
        ],
    );
    drop(restarted);

    // Neither answers: the promotion is unknown, the target fenced again.
    let store = interrupted_after(Phase::Promote).await;
    let silent = Arc::new(Silent::default());
    let restarted = Keeper::with_parts(config(), store.clone(), silent.clone(), Vec::new())
        .await
        .expect("keeper");
    assert_eq!(restarted.topology().datahosts[0].active, "mysql_1");
    assert_eq!(restarted.state().switch, None);
    assert_eq!(
        lock(&silent.0).first().map(String::as_str),
        Some("fence mysql_11"),
        "the target first"
    );
}

/// Agents that never answer; the orders given, as `kind datasource`.
#[derive(Default)]
struct Silent(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Agents for Silent {
    async fn report(&self, _: &str, _: Duration) -> Option<AgentReport> {
        None
    }

    async fn order(&self, ds: &str, order: Order, t: Duration) -> Result<(), OrderError> {
        let kind = serde_json::to_value(&order.kind).expect("an order serialises");
        lock(&self.0).push(format!("{} {ds}", kind["order"].as_str().unwrap_or("?")));
        Err(OrderError::Timeout(t))
    }
}

/// SPEC §7 rule 5: the cooldown is persisted with the topology, so a
/// restarted keeper does not switch the same dataHost back at once.
#[tokio::test(start_paused = true)]
async fn a_restarted_keeper_keeps_the_cooldown() {
    let store = Arc::new(MemoryStore::default());
    let k = keeper(&store).await;
    let _p1 = register_p1(&k).await;
    let first = crate::request::request_switch(&k, failover()).await;
    assert!(matches!(first, SwitchAnswer::Switched { .. }), "{first:?}");
    k.finish_background().await;
    drop(k);

    let restarted = keeper(&store).await;
    let _p1 = register_p1(&restarted).await;
    let back = Request {
        source: "mysql_11".into(),
        ..failover()
    };
    let answer = crate::request::request_switch(&restarted, back).await;
    assert!(
        matches!(
            answer,
            SwitchAnswer::Rejected {
                rejection: Rejection::Cooldown { .. }
            }
        ),
        "{answer:?}"
    );
}

/// SPEC §7 rule 11: saved state whose active datasource the config no
/// longer lists stops the keeper at start, with a clear error.
#[tokio::test(start_paused = true)]
async fn saved_state_naming_an_unconfigured_active_refuses_to_start() {
    let store = Arc::new(MemoryStore::default());
    store
        .update(&|s: &mut Persisted| {
            s.epoch = 7;
            s.topology = ClusterTopology {
                epoch: 7,
                term: 0,
                datahosts: vec![DataHostState::new("dh1", "mysql_9", ["mysql_9"])],
            };
        })
        .await
        .expect("saved");
    let err = Keeper::with_parts(
        config(),
        store.clone(),
        Arc::new(Obedient::default()),
        Vec::new(),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, KeeperError::UnknownActive { active, .. } if active == "mysql_9"),
        "{err}"
    );
}
