//! The session registry: one handle per live client session (its id, peer,
//! user, backend, the flags that interrupt it), as other sessions, the
//! admin surface and the shutdown see it.

use crate::topology::Datasource;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One live client session, as other sessions and the admin API see it.
#[derive(Debug)]
pub struct SessionHandle {
    /// The proxy's connection id: what the client sees in the greeting and
    /// `CONNECTION_ID()`, and what `KILL` names.
    pub id: u32,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the session started.
    pub started: Instant,
    user: Mutex<String>,
    backend: Mutex<Option<(Arc<Datasource>, u32)>>,
    killed: AtomicBool,
    /// Wakes the session's own waits: it was killed, the proxy is shutting
    /// down, a datasource was marked down, or its buffers are due back.
    attention: Attention,
    /// Running a statement, or inside a transaction.
    busy: AtomicBool,
    /// The registry's tick (see [`Registry::ticks`]) at which the session
    /// last finished a command, or [`RUNNING`] / [`RELEASE`] / [`EMPTY`]:
    /// lets the registry ask a session idle for long to give its buffers
    /// back.
    last_done: AtomicU64,
    /// The tick its idle time counts from once `last_done` no longer
    /// holds it (the registry copies it over when it asks for buffers).
    idle_from: AtomicU64,
    /// Closed by `limits.wait_timeout`.
    timed_out: AtomicBool,
}

/// A flag with one waiter: the session's task. Waiting on it costs a
/// couple of atomic operations and no lock, so every statement can afford
/// it (a `Notify` would take its mutex twice per wait).
#[derive(Debug, Default)]
struct Attention {
    raised: AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl Attention {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        // Looked at before it is taken: the flag is almost never raised,
        // and a plain load keeps the common wait free of a locked
        // instruction.
        let take =
            || self.raised.load(Ordering::Acquire) && self.raised.swap(false, Ordering::AcqRel);
        if take() {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Raised between the first look and the registration.
        if take() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// How often the registry looks for idle sessions: one tick of its coarse
/// clock. A session idle for two ticks (200 to 400 ms) gives its buffers
/// back.
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// `last_done` while a command runs.
const RUNNING: u64 = u64::MAX;
/// `last_done` once the session should give its buffers back (a new
/// session starts so: its login's buffers go at its first wait).
const RELEASE: u64 = u64::MAX - 1;
/// `last_done` once it has, until its next command.
const EMPTY: u64 = u64::MAX - 2;

impl SessionHandle {
    /// The user the client logged in as (empty until it has).
    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_user(&self, u: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = u.to_string();
    }

    /// The datasource and server thread id the session is bound to.
    pub fn backend(&self) -> Option<(Arc<Datasource>, u32)> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_backend(&self, b: Option<(Arc<Datasource>, u32)>) {
        *self.backend.lock().unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Asks the session to close at its next chance.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.attention.raise();
    }

    /// Wakes the session to look again at what it waits for (kept if it
    /// is not waiting, so nothing is missed).
    pub(crate) fn nudge(&self) {
        self.attention.raise();
    }

    /// Resolves at the next kill or nudge (or at once, if one came since
    /// the last wait). Callers check the reason themselves.
    pub(crate) async fn attention(&self) {
        std::future::poll_fn(|cx| self.attention.poll(cx)).await;
    }

    /// Whether the session is running a statement or is inside a
    /// transaction (a planned switchover waits for it).
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    /// Whether the session was asked to close (see [`SessionHandle::kill`]).
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// A command starts (`None`) or ended at the registry tick `done`.
    pub(crate) fn mark_command(&self, done: Option<u64>) {
        self.last_done
            .store(done.unwrap_or(RUNNING), Ordering::Relaxed);
    }

    /// Whether the registry found the session idle for long: it should
    /// give its buffers back before it waits again.
    pub(crate) fn buffers_due_back(&self) -> bool {
        self.last_done.load(Ordering::Relaxed) == RELEASE
    }

    /// Buffers given back: nothing more to ask until the next command.
    pub(crate) fn buffers_given_back(&self) {
        let _ =
            self.last_done
                .compare_exchange(RELEASE, EMPTY, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the session was closed for idling past `limits.wait_timeout`.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// The tick since which the session has been idle, `None` while a
    /// command runs.
    fn idle_since(&self) -> Option<u64> {
        match self.last_done.load(Ordering::Relaxed) {
            RUNNING => None,
            RELEASE | EMPTY => Some(self.idle_from.load(Ordering::Relaxed)),
            done => Some(done),
        }
    }

    pub(crate) async fn killed(&self) {
        while !self.is_killed() {
            self.attention().await;
        }
    }
}

/// Live sessions by proxy connection id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Arc<SessionHandle>>>,
    next_id: AtomicU32,
    /// A coarse clock: how many times the registry looked for idle
    /// sessions, once a [`TICK`]. Reading it is one load where a clock read
    /// and the arithmetic on it would be a statement's largest cost.
    ticks: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(&self, peer: SocketAddr) -> Arc<SessionHandle> {
        let mut map = self.lock();
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !map.contains_key(&id) {
                break id;
            }
        };
        let h = Arc::new(SessionHandle {
            id,
            peer,
            started: Instant::now(),
            user: Mutex::new(String::new()),
            backend: Mutex::new(None),
            killed: AtomicBool::new(false),
            attention: Attention::default(),
            busy: AtomicBool::new(false),
            last_done: AtomicU64::new(RELEASE),
            idle_from: AtomicU64::new(self.ticks()),
            timed_out: AtomicBool::new(false),
        });
        map.insert(id, h.clone());
        h
    }

    pub(crate) fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// The live session with connection id `id`.
    pub fn get(&self, id: u32) -> Option<Arc<SessionHandle>> {
        self.lock().get(&id).cloned()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session, in no particular order.
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.lock().values().cloned().collect()
    }

    /// The registry's coarse clock, in [`TICK`]s.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Advances the coarse clock by a tick; asks every session idle for
    /// two ticks to give its buffers back (a busy client keeps its buffers
    /// from one statement to the next; an idle one holds none), and closes
    /// every session idle for `wait_ticks` (`limits.wait_timeout`).
    /// Returns how many it closed.
    pub(crate) fn tick(&self, wait_ticks: u64) -> usize {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let mut closed = 0;
        for s in self.lock().values() {
            let Some(since) = s.idle_since() else {
                continue;
            };
            if now.saturating_sub(since) >= wait_ticks && !s.is_killed() {
                s.timed_out.store(true, Ordering::Release);
                s.kill();
                closed += 1;
                continue;
            }
            let done = s.last_done.load(Ordering::Relaxed);
            if done >= EMPTY {
                continue;
            }
            if now.saturating_sub(done) >= 2
                && s.last_done
                    .compare_exchange(done, RELEASE, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                s.idle_from.store(done, Ordering::Relaxed);
                s.nudge();
            }
        }
        closed
    }

    /// Wakes every session to look at what changed.
    pub(crate) fn nudge_all(&self) {
        for s in self.lock().values() {
            s.nudge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test]
    async fn attention_raised_before_the_wait_is_kept_and_taken_once() {
        let r = Registry::default();
        let h = r.register(peer());
        h.nudge();
        tokio::time::timeout(Duration::from_secs(1), h.attention())
            .await
            .expect("a nudge before the wait is not lost");
        let again = tokio::time::timeout(Duration::from_millis(50), h.attention()).await;
        assert!(again.is_err(), "one nudge wakes one wait");
    }

    #[tokio::test]
    async fn attention_wakes_a_waiting_session() {
        let r = Registry::default();
        let h = r.register(peer());
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.killed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A nudge alone does not end `killed`; a kill does.
        h.nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.kill();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("kill wakes the waiter")
            .expect("no panic");
    }

    #[test]
    fn idle_sessions_are_asked_for_their_buffers_busy_ones_are_not() {
        let r = Registry::default();
        let fresh = r.register(peer());
        let idle = r.register(peer());
        let running = r.register(peer());
        let recent = r.register(peer());
        // A new session gives its login's buffers back at its first wait.
        assert!(fresh.buffers_due_back());
        fresh.buffers_given_back();
        assert!(!fresh.buffers_due_back());

        idle.mark_command(Some(r.ticks()));
        running.mark_command(None);
        r.tick(u64::MAX);
        assert!(!idle.buffers_due_back(), "idle for less than two ticks");
        recent.mark_command(Some(r.ticks()));
        r.tick(u64::MAX);
        assert!(idle.buffers_due_back(), "idle for two ticks");
        assert!(!running.buffers_due_back(), "a command is running");
        assert!(!recent.buffers_due_back(), "finished a command just now");
        assert!(!fresh.buffers_due_back(), "holds nothing");
    }

    #[test]
    fn sessions_idle_for_the_wait_timeout_are_closed_running_ones_are_not() {
        let r = Registry::default();
        let fresh = r.register(peer());
        let idle = r.register(peer());
        let running = r.register(peer());
        idle.mark_command(Some(r.ticks()));
        running.mark_command(None);
        assert_eq!(r.tick(3), 0);
        assert_eq!(r.tick(3), 0);
        // `idle` gave its buffers back at tick 2: its idle time still
        // counts from its last command.
        assert!(idle.buffers_due_back());
        idle.buffers_given_back();
        assert_eq!(r.tick(3), 2, "fresh and idle, after 3 ticks");
        assert!(fresh.is_killed() && fresh.timed_out());
        assert!(idle.is_killed() && idle.timed_out());
        assert!(!running.is_killed(), "a command is running");
        assert_eq!(r.tick(3), 0, "closed once");
        running.mark_command(Some(r.ticks()));
        for _ in 0..2 {
            assert_eq!(r.tick(3), 0);
        }
        assert_eq!(r.tick(3), 1);
        assert!(running.timed_out());
    }
}
