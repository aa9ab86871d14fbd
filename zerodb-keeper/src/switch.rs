//! Carrying out an approved switch (SPEC §3 step 7), as explicit phases:
//!
//! 1. **reserve** the next epoch, with the switch's intent, in one durable
//!    write;
//! 2. a planned switchover only: **hold** new statements in every proxy and
//!    let open transactions finish, **fence** the old source, and let the
//!    target **catch up** with its binlog end;
//!    A failover **fences** the old source first too, waiting at most
//!    `fence_timeout`: a server that answers is fenced before the target
//!    is promoted, or the switch is rejected; one that does not
//!    (dead, paused, cut off) is fenced by its agent when it sees the new
//!    epoch, and in the background meanwhile;
//! 3. **promote** the target;
//! 4. **persist** the new topology, then **publish** it to every proxy;
//! 5. **re-point** the other standbys to the new source, in the background.
//!
//! A phase that fails ends the switch through one compensation path,
//! which undoes what was done, newest first: a fence without a promotion
//! is lifted, held proxies are released. Background work is tracked
//! ([`Background`]), not detached. The switch reaches agents, proxies and
//! the store only through the [`Agents`], [`Proxies`] and [`Store`]
//! traits, so its tests run on fakes in paused time.

use crate::agents::Agents;
use crate::record::unix_ms;
use crate::store::{Persisted, Store, StoreError, SwitchIntent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use zerodb_agent::client::OrderError;
use zerodb_core::config::KeeperTimings;
use zerodb_core::control::{ClusterTopology, Order, OrderKind};

/// How a switch reaches the registered proxies.
#[async_trait::async_trait]
pub trait Proxies: Send + Sync {
    /// Asks every connected proxy to hold new statements for `datahost`
    /// (for at most `max`) and to let sessions in a statement or a
    /// transaction finish for up to `grace`; waits up to `wait` for their
    /// answers. Returns how many sessions were still open.
    async fn hold(&self, datahost: &str, grace: Duration, max: Duration, wait: Duration) -> u64;
    /// The switchover did not happen: every proxy serves `datahost` again.
    fn release(&self, datahost: &str);
    /// Sends every connected proxy the new topology.
    fn publish(&self, topology: &ClusterTopology);
}

/// Stops this process with SIGSTOP (fault injection): it goes on where it
/// was when an operator or a test sends SIGCONT.
#[cfg(feature = "fault-points")]
fn pause_process(phase: Phase) {
    tracing::error!(?phase, "fault point: pausing (SIGSTOP)");
    let pid = std::process::id().to_string();
    if let Err(e) = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
    {
        tracing::error!(error = %e, "fault point: cannot pause");
    }
    tracing::warn!(?phase, "fault point: continued");
}

#[cfg(not(feature = "fault-points"))]
fn pause_process(_phase: Phase) {}

/// The phases of a switch, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The epoch and intent are persisted.
    Reserve,
    /// Proxies hold new statements (planned).
    Hold,
    /// The old source is fenced (a failover: or does not answer).
    Fence,
    /// The target has applied the old source's binlog (planned).
    CatchUp,
    /// The target is writable.
    Promote,
    /// The new topology is persisted.
    Persist,
    /// The new topology is sent to every proxy.
    Publish,
}

/// What to switch: decided by [`zerodb_core::decision::decide`].
#[derive(Clone, Debug)]
pub struct Plan {
    /// The dataHost switched.
    pub datahost: String,
    /// Its active datasource now.
    pub source: String,
    /// The standby to promote.
    pub target: String,
    /// An operator's switchover (the source is alive: hold, fence, catch
    /// up first), not a failover.
    pub planned: bool,
    /// An operator forced the target: a failed catch-up does not stop it.
    pub force: bool,
    /// The dataHost's standbys now (the target among them).
    pub standbys: Vec<String>,
    /// How the other standbys follow the target, when it is known: its
    /// address and the replication login.
    pub follow: Option<Follow>,
    /// How the target follows the source again when the switch is rolled
    /// back after the target may have been promoted.
    pub back: Option<Follow>,
}

/// Where and as whom standbys replicate from a new source.
#[derive(Clone, Debug)]
pub struct Follow {
    /// The new source's address (host:port).
    pub addr: String,
    /// The replication user.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// Why a switch did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// No epoch could be reserved: nothing was ordered.
    #[error("cannot persist the epoch: {0}")]
    Reserve(#[source] StoreError),
    /// The old source could not be fenced: in a switchover, or in a
    /// failover where its server answered.
    #[error("cannot fence the source {source_name}: {error}")]
    Fence {
        /// The old source.
        source_name: String,
        /// What its agent said.
        #[source]
        error: OrderError,
    },
    /// The target did not catch up with the old source (planned).
    #[error("{target} did not catch up: {error}")]
    CatchUp {
        /// The target.
        target: String,
        /// What its agent said.
        #[source]
        error: OrderError,
    },
    /// The target could not be promoted.
    #[error("{error}")]
    Promote {
        /// The target.
        target: String,
        /// What its agent said.
        #[source]
        error: OrderError,
    },
    /// The new topology could not be persisted (the target was promoted).
    #[error("cannot persist the topology: {0}")]
    Persist(#[source] StoreError),
    /// A fault point stopped the keeper after this phase, as a crash
    /// would: nothing was compensated.
    #[error("stopped after {0:?}")]
    Stopped(Phase),
    /// The keeper lost the lead (or won it back under a new term) during
    /// the switch: it gave no more orders and wrote nothing, and whoever
    /// leads now rolls the switch back from its intent.
    #[error("the lead was lost during the switch")]
    LeadLost,
}

impl SwitchError {
    /// Whether the switch stopped because this keeper may no longer act:
    /// it must not compensate either (its orders would be withheld, its
    /// writes refused); the next leader does.
    pub fn lead_lost(&self) -> bool {
        match self {
            SwitchError::LeadLost => true,
            SwitchError::Reserve(e) | SwitchError::Persist(e) => {
                matches!(e, StoreError::NotLeader)
            }
            SwitchError::Fence { error, .. }
            | SwitchError::CatchUp { error, .. }
            | SwitchError::Promote { error, .. } => matches!(error, OrderError::NotLeading),
            SwitchError::Stopped(_) => false,
        }
    }
}

/// Background work the keeper started and still tracks (fencing a dead
/// source, re-pointing standbys).
#[derive(Debug, Default)]
pub struct Background {
    tasks: Mutex<JoinSet<()>>,
}

impl Background {
    /// Runs `work` in the background, forgetting work that has finished.
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(work);
    }

    /// Waits for all the work started so far.
    pub async fn finish(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// What a switch has done so far: what compensation must undo.
#[derive(Clone, Copy, Debug, Default)]
struct Done {
    held: bool,
    fenced: bool,
    promoted: bool,
    /// The promotion's answer did not come (a timeout, a dropped call): it
    /// may have happened.
    promotion_unknown: bool,
    /// The old source's agent confirmed the fence.
    fence_confirmed: bool,
}

/// Whether the order was surely not carried out: the server refused it,
/// or no agent was there to call. After anything else (no answer in time,
/// a dropped connection) it may have been.
fn refused(error: &OrderError) -> bool {
    matches!(error, OrderError::NoAgent(_)) || error.server_answered()
}

/// One switch in progress.
pub struct Switch<'a> {
    /// What to switch.
    pub plan: &'a Plan,
    /// The agents of the dataHost's datasources.
    pub agents: Arc<dyn Agents>,
    /// The registered proxies.
    pub proxies: &'a dyn Proxies,
    /// Where the epoch and the topology are persisted.
    pub store: &'a dyn Store,
    /// The leading keeper's term, carried by every order (0: a sole
    /// keeper on the file store).
    pub term: u64,
    /// Timeouts of each phase.
    pub timings: &'a KeeperTimings,
    /// Where background orders run.
    pub background: &'a Background,
    /// Stop as a crash would, right after this phase (fault injection).
    pub stop_after: Option<Phase>,
    /// Pause the whole process (SIGSTOP) right after this phase, as a
    /// keeper frozen by its machine would be; it goes on when continued
    /// (fault injection, feature `fault-points`).
    pub pause_after: Option<Phase>,
    /// Milliseconds per phase, for the decision's record.
    pub phases_ms: BTreeMap<&'static str, u64>,
}

impl Switch<'_> {
    /// Carries the switch out; on success returns the persisted state with
    /// the new topology, already published.
    pub async fn run(&mut self) -> Result<Persisted, SwitchError> {
        let epoch = self.reserve().await?;
        let mut done = Done::default();
        let result = self.phases(epoch, &mut done).await;
        if let Err(e) = &result {
            if !matches!(e, SwitchError::Stopped(_)) && !e.lead_lost() {
                self.compensate(epoch, done).await;
            }
        }
        result
    }

    fn check(&self, phase: Phase) -> Result<(), SwitchError> {
        if self.pause_after == Some(phase) {
            pause_process(phase);
        }
        match self.stop_after {
            Some(p) if p == phase => Err(SwitchError::Stopped(phase)),
            _ => Ok(()),
        }
    }

    fn timed(&mut self, name: &'static str, since: Instant) {
        let d = since.elapsed();
        metrics::histogram!("zerodb_keeper_phase_seconds", "phase" => name).record(d.as_secs_f64());
        self.phases_ms.insert(name, d.as_millis() as u64);
    }

    async fn phases(&mut self, epoch: u64, done: &mut Done) -> Result<Persisted, SwitchError> {
        let plan = self.plan;
        if plan.planned {
            let started = Instant::now();
            self.hold().await;
            done.held = true;
            self.timed("hold", started);
            self.check(Phase::Hold)?;
            // Counted before it is sent: a fence whose answer is late may
            // still land, and lifting one that did not is harmless.
            done.fenced = true;
            self.fence(epoch).await?;
            self.check(Phase::Fence)?;
            self.catch_up(epoch).await?;
            self.timed("fence_and_catch_up", started);
            self.check(Phase::CatchUp)?;
        } else {
            let started = Instant::now();
            done.fenced = true;
            self.fence_first(epoch, done).await?;
            self.timed("fence", started);
            self.check(Phase::Fence)?;
        }
        self.promote(epoch, done).await?;
        self.check(Phase::Promote)?;
        self.conclude(epoch, done).await
    }

    /// Promotes the target.
    async fn promote(&mut self, epoch: u64, done: &mut Done) -> Result<(), SwitchError> {
        let plan = self.plan;
        let started = Instant::now();
        self.order(
            &plan.target,
            epoch,
            OrderKind::Promote,
            // The agent's own apply timeout is `promote_timeout`: wait a
            // little longer, so its answer, success or not, arrives.
            self.timings.promote_timeout + self.timings.agent_timeout * 2,
        )
        .await
        .map_err(|error| {
            done.promotion_unknown = !refused(&error);
            SwitchError::Promote {
                target: plan.target.clone(),
                error,
            }
        })?;
        done.promoted = true;
        self.timed("promote", started);
        Ok(())
    }

    /// After the promotion: the old source fenced behind (unless it was
    /// before), the topology persisted and published, the other standbys
    /// re-pointed.
    async fn conclude(&mut self, epoch: u64, done: &Done) -> Result<Persisted, SwitchError> {
        if !self.plan.planned && !done.fence_confirmed {
            self.fence_in_background(epoch);
        }
        let started = Instant::now();
        let state = self.persist(epoch).await?;
        self.check(Phase::Persist)?;
        self.proxies.publish(&state.topology);
        self.timed("publish", started);
        self.check(Phase::Publish)?;
        self.repoint(epoch);
        Ok(state)
    }

    async fn order(
        &self,
        datasource: &str,
        epoch: u64,
        kind: OrderKind,
        timeout: Duration,
    ) -> Result<(), OrderError> {
        self.agents
            .order(
                datasource,
                Order {
                    epoch,
                    term: self.term,
                    kind,
                },
                timeout,
            )
            .await
    }

    async fn reserve(&self) -> Result<u64, SwitchError> {
        let plan = self.plan;
        let intent = SwitchIntent {
            datahost: plan.datahost.clone(),
            source: plan.source.clone(),
            target: plan.target.clone(),
            epoch: 0,
            planned: plan.planned,
        };
        let epoch = self
            .store
            .reserve_epoch(&intent)
            .await
            .map_err(SwitchError::Reserve)?;
        metrics::gauge!("zerodb_keeper_epoch").set(epoch as f64);
        self.check(Phase::Reserve)?;
        Ok(epoch)
    }

    /// Holds new statements in every proxy and lets open transactions
    /// finish (up to the grace period).
    async fn hold(&self) {
        let t = self.timings;
        let grace = t.switchover_grace;
        let max = grace + t.catch_up_timeout + t.promote_timeout + t.agent_timeout * 4;
        let open = self
            .proxies
            .hold(&self.plan.datahost, grace, max, grace + t.agent_timeout)
            .await;
        if open > 0 {
            tracing::warn!(
                open,
                "sessions still open after the grace period: they lose their transaction"
            );
        }
    }

    async fn fence(&self, epoch: u64) -> Result<(), SwitchError> {
        let source = &self.plan.source;
        self.order(source, epoch, OrderKind::Fence, self.timings.agent_timeout)
            .await
            .map_err(|error| SwitchError::Fence {
                source_name: source.clone(),
                error,
            })
    }

    /// A failover's fence of the old source, before the promotion: a server
    /// that answers within `fence_timeout` is fenced, or the switch ends
    /// here (the target untouched); one that does not answer does not stop
    /// the switch.
    async fn fence_first(&self, epoch: u64, done: &mut Done) -> Result<(), SwitchError> {
        let source = &self.plan.source;
        let timeout = self.timings.fence_timeout;
        match self.order(source, epoch, OrderKind::Fence, timeout).await {
            Ok(()) => {
                done.fence_confirmed = true;
                Ok(())
            }
            Err(error) if error.server_answered() => Err(SwitchError::Fence {
                source_name: source.clone(),
                error,
            }),
            Err(error) => {
                tracing::warn!(datasource = %source, %error, "the old source does not answer: promoting; its agent fences it when it sees the new epoch");
                Ok(())
            }
        }
    }

    /// Lets the target apply everything the fenced source wrote (when its
    /// binlog end can be read). A forced switchover goes on without.
    async fn catch_up(&self, epoch: u64) -> Result<(), SwitchError> {
        let (plan, t) = (self.plan, self.timings);
        let end = self.agents.report(&plan.source, t.agent_timeout).await;
        let Some(position) = end.and_then(|r| r.binlog_end) else {
            return Ok(());
        };
        let timeout_ms = t.catch_up_timeout.as_millis() as u64;
        let kind = OrderKind::CatchUp {
            position,
            timeout_ms,
        };
        let caught_up = self
            .order(
                &plan.target,
                epoch,
                kind,
                t.catch_up_timeout + t.agent_timeout,
            )
            .await;
        match caught_up {
            Err(error) if plan.force => {
                tracing::warn!(%error, "forced switchover: promoting without catching up");
                Ok(())
            }
            Err(error) => Err(SwitchError::CatchUp {
                target: plan.target.clone(),
                error,
            }),
            Ok(()) => Ok(()),
        }
    }

    /// Best effort, in the background: a paused or dead source does not
    /// answer, and its agent fences it when it sees the new epoch.
    fn fence_in_background(&self, epoch: u64) {
        let agents = self.agents.clone();
        let source = self.plan.source.clone();
        let (timeout, term) = (self.timings.agent_timeout, self.term);
        self.background.spawn(async move {
            let order = Order {
                epoch,
                term,
                kind: OrderKind::Fence,
            };
            if let Err(e) = agents.order(&source, order, timeout).await {
                tracing::warn!(datasource = %source, error = %e, "source not fenced now; its agent fences it when it sees the new epoch");
            }
        });
    }

    async fn persist(&self, epoch: u64) -> Result<Persisted, SwitchError> {
        let plan = self.plan;
        let standbys: Vec<String> = std::iter::once(plan.source.clone())
            .chain(plan.standbys.iter().filter(|s| **s != plan.target).cloned())
            .collect();
        let (datahost, target, term) = (plan.datahost.clone(), plan.target.clone(), self.term);
        let state = self
            .store
            .update(&move |s: &mut Persisted| {
                if s.term != term {
                    return; // another leadership's state: not this switch's to change
                }
                // Never below the newest topology (switches are serialised,
                // but a reported topology may have been adopted meanwhile).
                if s.topology.epoch >= epoch {
                    s.epoch += 1;
                    s.topology.epoch = s.epoch;
                } else {
                    s.topology.epoch = epoch;
                }
                if let Some(d) = s.topology.datahosts.iter_mut().find(|d| d.name == datahost) {
                    d.active = target.clone();
                    d.standbys = standbys.clone();
                }
                s.switch = None;
                s.last_switch_unix_ms.insert(datahost.clone(), unix_ms());
            })
            .await
            .map_err(SwitchError::Persist)?;
        if state.term != self.term {
            return Err(SwitchError::LeadLost);
        }
        Ok(state)
    }

    /// Re-points the surviving standbys to the new source, in the
    /// background (a standby not re-pointed now rejoins from its agent's
    /// heartbeat).
    fn repoint(&self, epoch: u64) {
        let plan = self.plan;
        let Some(follow) = &plan.follow else { return };
        for s in plan.standbys.iter().filter(|s| **s != plan.target) {
            let (agents, s) = (self.agents.clone(), s.clone());
            let kind = OrderKind::Follow {
                source: follow.addr.clone(),
                user: follow.user.clone(),
                password: follow.password.clone(),
            };
            let (timeout, term) = (self.timings.agent_timeout * 4, self.term);
            self.background.spawn(async move {
                let order = Order { epoch, term, kind };
                if let Err(e) = agents.order(&s, order, timeout).await {
                    tracing::warn!(datasource = %s, error = %e, "standby not re-pointed; it rejoins from its agent's heartbeat");
                }
            });
        }
    }

    /// Rolls back a switch a keeper began and did not end: it stopped
    /// between reserving the epoch and persisting the topology (SPEC §7).
    /// Nothing was published, so no client wrote to the target, and the
    /// proxies, which kept the old topology, may have written to the
    /// source since: finishing the switch on what the crashed keeper knew
    /// could lose those writes. So the target is fenced again unless it
    /// still replicates, read-only; one that replicates from nobody (its
    /// promotion reset replication) is pointed back at the source
    /// (`source_follow`; a failover's only), so it is a true standby for
    /// the next decision.
    /// Then the source's fence is lifted, held proxies released, and the
    /// unchanged topology persisted under the switch's epoch. The proxies'
    /// next request decides afresh, with votes. Returns the state then.
    pub async fn recover(&mut self, epoch: u64) -> Result<Persisted, SwitchError> {
        let plan = self.plan;
        tracing::warn!(datahost = %plan.datahost, source = %plan.source, target = %plan.target, epoch,
            "a switch was interrupted by the keeper's stop: rolling it back");
        // The target is fenced even when it still looks like a standby: a
        // promotion the previous keeper ordered may be running there now
        // (it applies the relay log first), and the agent carries this
        // fence out only after it. A standby's agent lifts the fence at its
        // next heartbeat, when it finds it replicates the source.
        let done = Done {
            held: plan.planned,
            fenced: true,
            promotion_unknown: true,
            ..Done::default()
        };
        self.compensate(epoch, done).await;
        Ok(self
            .store
            .load()
            .await
            .map_err(SwitchError::Persist)?
            .unwrap_or_default())
    }

    /// Points a failover's fenced target back at the source when it
    /// replicates from nobody (its promotion reset replication), so that
    /// it is a true standby for the next decision: it was one when the
    /// decision chose it (no errant transaction) and took no client write
    /// since, the topology naming it never having been published. A
    /// switchover's may have been forced, and rejoins from its agent's
    /// heartbeat, which checks. Read after the fence, which came after
    /// any promotion.
    async fn point_back(&self, epoch: u64) {
        let plan = self.plan;
        let (false, Some(back)) = (plan.planned, &plan.back) else {
            return;
        };
        let t = self.timings.agent_timeout;
        let target = self.agents.report(&plan.target, t).await;
        if target.as_ref().is_some_and(|r| r.replica.is_some()) {
            return;
        }
        let kind = OrderKind::Follow {
            source: back.addr.clone(),
            user: back.user.clone(),
            password: back.password.clone(),
        };
        if let Err(e) = self.order(&plan.target, epoch, kind, t * 4).await {
            tracing::error!(datasource = %plan.target, error = %e, "cannot point the target back at the source; it rejoins from its agent's heartbeat when the source answers");
        }
    }

    /// Undoes what a failed switch did, newest first. A target whose
    /// promotion may have happened is fenced again; a source fenced for a
    /// switch whose target was not promoted is made writable again
    /// (`Unfence`: `read_only` cleared, nothing else); held proxies are
    /// released. Then the unchanged topology
    /// is persisted under the switch's epoch, its intent cleared, and
    /// published: agents that took the epoch's orders follow the keeper's
    /// topology again.
    async fn compensate(&self, epoch: u64, done: Done) {
        let plan = self.plan;
        let t = self.timings.agent_timeout;
        // A target that was (or may have been) promoted is fenced again:
        // the topology keeps the source. Only once it surely is may the
        // source take writes again.
        let mut target_writable = false;
        if done.promoted || done.promotion_unknown {
            if let Err(e) = self.order(&plan.target, epoch, OrderKind::Fence, t).await {
                tracing::error!(datasource = %plan.target, error = %e, "its promotion may have happened and it cannot be fenced: an operator must check read_only");
                target_writable = done.promoted || !refused(&e);
            } else {
                self.point_back(epoch).await;
            }
        }
        if done.fenced && !target_writable {
            let timeout = self.timings.agent_timeout;
            let undo = self
                .order(&plan.source, epoch, OrderKind::Unfence, timeout)
                .await;
            if let Err(e) = undo {
                tracing::error!(datasource = %plan.source, error = %e, "the switch failed and the source may stay read-only: an operator must check read_only");
            }
        }
        if done.held {
            self.proxies.release(&plan.datahost);
        }
        let term = self.term;
        let restamp = move |s: &mut Persisted| {
            if s.term != term {
                return; // another leadership rolls it back
            }
            s.topology.epoch = s.topology.epoch.max(epoch);
            s.switch = None;
        };
        match self.store.update(&restamp).await {
            Ok(state) => self.proxies.publish(&state.topology),
            Err(e) => {
                tracing::error!(error = %e, "cannot persist the topology after a failed switch")
            }
        }
    }
}

#[cfg(test)]
mod tests;
