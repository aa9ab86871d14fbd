//! The registered proxies as the keeper sees them: their sessions (one
//! WebSocket each, a heartbeat, a session timeout, as in ZooKeeper), and
//! the requests the keeper sends them with typed answers: votes for a
//! failover, holds for a planned switchover. Also how a switch reaches
//! them ([`crate::switch::Proxies`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use zerodb_core::control::{ClusterTopology, FromKeeper};
use zerodb_core::decision::{Member, Vote};

/// One registered proxy.
#[derive(Debug)]
struct Proxy {
    last_seen: Instant,
    /// The process registered under this name (0: unknown).
    instance: u64,
    /// The live connection, if any: its id and outbound channel.
    conn: Option<(u64, mpsc::UnboundedSender<FromKeeper>)>,
}

/// A proxy's answer to a request of the keeper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// To a vote request: whether a fresh probe of the source failed.
    Vote {
        /// The probe failed: the proxy approves the switch.
        down: bool,
    },
    /// To a hold: sessions still in a statement or transaction when the
    /// grace period ended.
    Held {
        /// How many.
        open: u32,
    },
}

/// A proxy's row on the keeper's status page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Its session expired.
    pub lost: bool,
    /// It has a live connection.
    pub connected: bool,
    /// Milliseconds since its last sign of life.
    pub last_seen_ms_ago: u64,
}

/// The registered proxies.
#[derive(Debug)]
pub struct Members {
    session_timeout: Duration,
    proxies: Mutex<BTreeMap<String, Proxy>>,
    /// Requests sent to proxies, by id, awaiting an answer.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Members {
    /// `names` were members before a restart: they get one session timeout
    /// to come back before they count as lost.
    pub fn new(session_timeout: Duration, names: &[String]) -> Self {
        Self {
            session_timeout,
            proxies: Mutex::new(Self::fresh(names)),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// `names`, none connected, each just seen.
    fn fresh(names: &[String]) -> BTreeMap<String, Proxy> {
        let now = Instant::now();
        names
            .iter()
            .map(|n| {
                let p = Proxy {
                    last_seen: now,
                    instance: 0,
                    conn: None,
                };
                (n.clone(), p)
            })
            .collect()
    }

    /// Starts over with `names` as the members, none connected, each with
    /// one session timeout to (re)connect: a keeper that takes the lead
    /// (or loses it, with no names). Connections held until now are
    /// dropped, and with them their sessions.
    pub fn reset(&self, names: &[String]) {
        *lock(&self.proxies) = Self::fresh(names);
        lock(&self.pending).clear();
    }

    /// A fresh id for a connection or a request.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `name` (process `instance`, 0: unknown) is live on connection
    /// `conn`; returns the connection it replaces, if any (its session had
    /// closed or expired, or was this same process's). A name whose
    /// session is live (connected, heard within the session timeout) in
    /// another process is not taken over: `Err` with that connection's id.
    pub fn connect(
        &self,
        name: &str,
        instance: u64,
        conn: u64,
        tx: mpsc::UnboundedSender<FromKeeper>,
    ) -> Result<Option<u64>, u64> {
        let mut proxies = lock(&self.proxies);
        if let Some(p) = proxies
            .get(name)
            .filter(|p| self.live_elsewhere(p, instance))
        {
            return Err(p.conn.as_ref().map_or(0, |(id, _)| *id));
        }
        let old = proxies.insert(
            name.to_string(),
            Proxy {
                last_seen: Instant::now(),
                instance,
                conn: Some((conn, tx)),
            },
        );
        Ok(old.and_then(|p| p.conn.map(|(id, _)| id)))
    }

    /// Whether `name` has a live session (a connection still open, heard
    /// from within the session timeout) in a process other than `instance` (0: unknown, any other).
    pub fn is_live_elsewhere(&self, name: &str, instance: u64) -> bool {
        lock(&self.proxies)
            .get(name)
            .is_some_and(|p| self.live_elsewhere(p, instance))
    }

    fn live_elsewhere(&self, p: &Proxy, instance: u64) -> bool {
        let same_process = instance != 0 && p.instance == instance;
        !same_process
            && p.conn.as_ref().is_some_and(|(_, tx)| !tx.is_closed())
            && p.last_seen.elapsed() < self.session_timeout
    }

    /// A sign of life on `conn`; `false` when that connection no longer
    /// stands for a member (it was removed, or replaced).
    pub fn heartbeat(&self, name: &str, conn: u64) -> bool {
        match lock(&self.proxies).get_mut(name) {
            Some(p) if p.conn.as_ref().is_some_and(|(id, _)| *id == conn) => {
                p.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// The connection closed: the proxy stays a member until its session
    /// times out.
    pub fn disconnected(&self, name: &str, conn: u64) {
        if let Some(p) = lock(&self.proxies).get_mut(name) {
            if p.conn.as_ref().is_some_and(|(id, _)| *id == conn) {
                p.conn = None;
            }
        }
    }

    /// Forgets `name`; whether it was a member.
    pub fn remove(&self, name: &str) -> bool {
        lock(&self.proxies).remove(name).is_some()
    }

    /// Makes `names` members that count as lost until they register.
    pub fn expect(&self, names: &[String]) {
        let lost_since = Instant::now()
            .checked_sub(self.session_timeout * 2)
            .unwrap_or_else(Instant::now);
        let mut proxies = lock(&self.proxies);
        for name in names {
            proxies.entry(name.clone()).or_insert(Proxy {
                last_seen: lost_since,
                instance: 0,
                conn: None,
            });
        }
    }

    /// Every member, lost or not.
    pub fn list(&self) -> Vec<Member> {
        let now = Instant::now();
        lock(&self.proxies)
            .iter()
            .map(|(n, p)| Member {
                name: n.clone(),
                lost: now.duration_since(p.last_seen) > self.session_timeout,
            })
            .collect()
    }

    /// Members whose session expired more than `after` ago.
    pub fn lost_longer_than(&self, after: Duration) -> Vec<String> {
        let now = Instant::now();
        lock(&self.proxies)
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) > self.session_timeout + after)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Rows for the status page.
    pub fn status(&self) -> Vec<MemberStatus> {
        let now = Instant::now();
        lock(&self.proxies)
            .iter()
            .map(|(n, p)| {
                let ago = now.duration_since(p.last_seen);
                MemberStatus {
                    name: n.clone(),
                    lost: ago > self.session_timeout,
                    connected: p.conn.is_some(),
                    last_seen_ms_ago: ago.as_millis() as u64,
                }
            })
            .collect()
    }

    fn connections(&self) -> Vec<(String, mpsc::UnboundedSender<FromKeeper>)> {
        lock(&self.proxies)
            .iter()
            .filter_map(|(n, p)| p.conn.as_ref().map(|(_, tx)| (n.clone(), tx.clone())))
            .collect()
    }

    /// Sends `message` to every connected proxy.
    pub fn send_all(&self, message: &FromKeeper) {
        for (name, tx) in self.connections() {
            if tx.send(message.clone()).is_err() {
                tracing::debug!(proxy = %name, "message to a closing connection");
            }
        }
    }

    /// A proxy answered request `id`.
    pub fn answered(&self, id: u64, answer: Answer) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(answer);
        }
    }

    /// Sends every connected proxy the message `make(id)` makes and waits
    /// until `deadline` for their answers (`None`: no answer in time).
    pub async fn ask(
        &self,
        deadline: tokio::time::Instant,
        make: impl Fn(u64) -> FromKeeper,
    ) -> BTreeMap<String, Option<Answer>> {
        let mut waits = Vec::new();
        let mut answers = BTreeMap::new();
        for (name, tx) in self.connections() {
            let id = self.next_id();
            let (atx, arx) = oneshot::channel();
            lock(&self.pending).insert(id, atx);
            if tx.send(make(id)).is_err() {
                answers.insert(name, None);
                continue;
            }
            waits.push(async move {
                let a = tokio::time::timeout_at(deadline, arx)
                    .await
                    .ok()
                    .and_then(Result::ok);
                (name, a)
            });
        }
        answers.extend(futures_util::future::join_all(waits).await);
        lock(&self.pending).retain(|_, tx| !tx.is_closed());
        answers
    }

    /// Every member's vote on whether `source` of `datahost` is down,
    /// within `timeout` (members not connected cannot answer).
    pub async fn votes(
        &self,
        datahost: &str,
        source: &str,
        timeout: Duration,
    ) -> BTreeMap<String, Vote> {
        let deadline = tokio::time::Instant::now() + timeout;
        let answers = self
            .ask(deadline, |id| FromKeeper::VoteRequest {
                id,
                datahost: datahost.to_string(),
                datasource: source.to_string(),
            })
            .await;
        let mut votes: BTreeMap<String, Vote> = answers
            .into_iter()
            .map(|(name, a)| {
                let v = match a {
                    Some(Answer::Vote { down: true }) => Vote::Down,
                    Some(Answer::Vote { down: false }) => Vote::Up,
                    _ => Vote::NoAnswer,
                };
                (name, v)
            })
            .collect();
        for m in self.list() {
            votes.entry(m.name).or_insert(Vote::NoAnswer);
        }
        votes
    }
}

#[async_trait::async_trait]
impl crate::switch::Proxies for Members {
    async fn hold(&self, datahost: &str, grace: Duration, max: Duration, wait: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + wait;
        let held = self
            .ask(deadline, |id| FromKeeper::Hold {
                id,
                datahost: datahost.to_string(),
                grace_ms: grace.as_millis() as u64,
                max_ms: max.as_millis() as u64,
            })
            .await;
        held.values()
            .map(|a| match a {
                Some(Answer::Held { open }) => u64::from(*open),
                _ => 0,
            })
            .sum()
    }

    fn release(&self, datahost: &str) {
        self.send_all(&FromKeeper::Release {
            datahost: datahost.to_string(),
        });
    }

    fn publish(&self, topology: &ClusterTopology) {
        self.send_all(&FromKeeper::Topology {
            topology: topology.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(m: &Members, name: &str) -> mpsc::UnboundedReceiver<FromKeeper> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = m.next_id();
        m.connect(name, 0, id, tx).expect("a new name");
        rx
    }

    /// SPEC §7 rule 11: a name whose session is live is not taken over;
    /// one whose connection closed, or whose session expired while its
    /// connection stayed open (a half-open TCP), is replaced.
    #[test]
    fn a_name_is_taken_over_only_once_its_session_closed_or_expired() {
        let m = Members::new(Duration::from_millis(50), &[]);
        let first = member(&m, "p1");
        let (tx, _rx) = mpsc::unbounded_channel();
        assert_eq!(m.connect("p1", 7, 100, tx.clone()), Err(1), "live");
        drop(first);
        assert_eq!(m.connect("p1", 7, 101, tx), Ok(Some(1)), "closed: replaced");
        let (tx, _rx2) = mpsc::unbounded_channel();
        assert_eq!(
            m.connect("p1", 8, 102, tx.clone()),
            Err(101),
            "another process"
        );
        assert_eq!(
            m.connect("p1", 7, 103, tx.clone()),
            Ok(Some(101)),
            "the same process reconnecting before its close was seen"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            m.connect("p1", 8, 104, tx),
            Ok(Some(103)),
            "expired: replaced"
        );
    }

    /// Votes come back typed; a member that does not answer, or is not
    /// connected, is `NoAnswer`.
    #[tokio::test(start_paused = true)]
    async fn votes_are_typed_and_silence_is_no_answer() {
        let m = std::sync::Arc::new(Members::new(Duration::from_secs(3), &["p3".into()]));
        let mut p1 = member(&m, "p1");
        let _p2 = member(&m, "p2");
        let answering = {
            let m = m.clone();
            tokio::spawn(async move {
                if let Some(FromKeeper::VoteRequest { id, .. }) = p1.recv().await {
                    m.answered(id, Answer::Vote { down: true });
                }
            })
        };
        let votes = m.votes("dh1", "mysql_1", Duration::from_secs(1)).await;
        answering.await.unwrap();
        assert_eq!(votes.get("p1"), Some(&Vote::Down));
        assert_eq!(votes.get("p2"), Some(&Vote::NoAnswer), "silent");
        assert_eq!(votes.get("p3"), Some(&Vote::NoAnswer), "not connected");
    }

    /// A hold's answer counts the sessions still open; a vote's answer to
    /// a hold counts nothing.
    #[tokio::test(start_paused = true)]
    async fn holds_sum_open_sessions() {
        use crate::switch::Proxies;
        let m = std::sync::Arc::new(Members::new(Duration::from_secs(3), &[]));
        let mut rx = Vec::new();
        for n in ["p1", "p2"] {
            rx.push(member(&m, n));
        }
        let answers = [Answer::Held { open: 2 }, Answer::Vote { down: true }];
        for (mut r, a) in rx.into_iter().zip(answers) {
            let m = m.clone();
            tokio::spawn(async move {
                if let Some(FromKeeper::Hold { id, .. }) = r.recv().await {
                    m.answered(id, a);
                }
            });
        }
        let s = Duration::from_secs(1);
        assert_eq!(m.hold("dh1", s, s, s).await, 2);
    }
}
