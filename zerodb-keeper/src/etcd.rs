//! Keepers on etcd (SPEC §8): the state in one key, the leader by a
//! lease-bound key, the decision log bounded.
//!
//! Keys, under the configured prefix:
//! * `state` — the [`Persisted`] state as JSON. Every write is one etcd
//!   transaction that compares the state's revision (compare-and-swap:
//!   an epoch is never handed out twice) **and** that the `leader` key is
//!   still the one this keeper created: a keeper that lost the lead writes
//!   nothing, even a write it had begun.
//! * `leader` — [`LeaderInfo`] as JSON, bound to the leader's lease. It
//!   disappears when the lease expires (the leader died, paused, or lost
//!   etcd) or is revoked (it stopped cleanly), and the first keeper to
//!   create it again leads.
//! * `decisions/<unix ms>-<n>` — the decisions, the newest
//!   `etcd.decisions_kept` only. Each keeper also appends its own to
//!   `state_dir/decisions.jsonl`.
//!
//! [`campaign`] runs the election: a follower polls the leader key; a
//! leader keeps its lease alive and tells [`Leadership`] until when it
//! surely holds it; losing it (or etcd) makes it a follower at once.

use crate::keeper::{Keeper, KeeperError};
use crate::lead::{LeaderInfo, Leadership, Role};
use crate::store::{Change, FileStore, Persisted, Store, StoreError};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zerodb_core::config::KeeperConfig;

/// The keepers' shared state in etcd, and this keeper's claim on the lead.
pub struct Etcd {
    client: Client,
    prefix: String,
    ttl: Duration,
    /// The create revision of the leader key while this keeper leads: every
    /// write checks that the key is still that one.
    owner: Mutex<Option<i64>>,
    /// The state key's revision and value as this keeper last read or
    /// wrote them (a write then needs one round trip).
    last: Mutex<Option<(i64, Option<Persisted>)>>,
    /// This keeper's own decision log, `state_dir/decisions.jsonl`.
    local: FileStore,
    decisions_kept: usize,
    seq: AtomicU64,
    me: LeaderInfo,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .field("owner", &*lock(&self.owner))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call to etcd, bounded by the lease's TTL and timed. A call the
/// client could not even send (the member it picked is down: the
/// connection was refused) is made again at once, on another member,
/// within the same bound: with one member of three dead, a third of the
/// calls would otherwise fail. The future is built anew for each try.
macro_rules! etcd_call {
    ($etcd:expr, $op:expr, $fut:expr $(,)?) => {{
        let etcd: &Etcd = $etcd;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + etcd.ttl;
        let r = loop {
            match tokio::time::timeout_at(deadline, $fut).await {
                Ok(Err(e)) if never_sent(&e) && tokio::time::Instant::now() < deadline => {
                    metrics::counter!("zerodb_keeper_etcd_resent_total", "op" => $op).increment(1);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                r => break r,
            }
        };
        etcd.finish_call($op, started, r)
    }};
}

/// Whether `e` says the request never left: the connection to the member
/// the client picked was refused. Safe to send again, even a write.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message() == "tcp connect error"
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn etcd_err(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

fn corrupt(key: &str, source: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        path: format!("etcd:{key}"),
        source,
    }
}

impl Etcd {
    /// Connects to the endpoints `cfg.etcd` names, as its user if any.
    pub async fn connect(cfg: &KeeperConfig) -> Result<Arc<Self>, KeeperError> {
        let e = &cfg.etcd;
        let setup = |what: &str, err: &dyn std::fmt::Display| {
            KeeperError::StoreSetup(format!("etcd {what}: {err}"))
        };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(e.lease_ttl)
            .with_timeout(e.lease_ttl)
            // A member cut off from etcd's majority answers nothing
            // rather than something old.
            .with_require_leader(true)
            .with_keep_alive(e.lease_ttl / 2, e.lease_ttl)
            .with_auto_token_refresh(true);
        if let (Some(user), Some(file)) = (&e.user, &e.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|err| setup(&format!("password_file {}", file.display()), &err))?;
            opts = opts.with_user(user.clone(), password.trim_end_matches(['\n', '\r']));
        }
        if let Some(tls) = &e.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|err| setup(&format!("tls {}", p.display()), &err))
            };
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?));
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(t);
        }
        let scheme = if e.tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = e
            .endpoints
            .iter()
            .map(|a| {
                if a.contains("://") {
                    a.clone()
                } else {
                    format!("{scheme}://{a}")
                }
            })
            .collect();
        let client = Client::connect(&endpoints, Some(opts))
            .await
            .map_err(|err| setup("connect", &err))?;
        Ok(Arc::new(Self {
            client,
            prefix: e.prefix.clone(),
            ttl: e.lease_ttl,
            owner: Mutex::new(None),
            last: Mutex::new(None),
            local: FileStore::open(&cfg.state_dir)?,
            decisions_kept: e.decisions_kept.max(1),
            seq: AtomicU64::new(0),
            me: LeaderInfo {
                advertise: cfg.advertised().to_string(),
                admin: cfg.admin.clone(),
                term: None,
            },
        }))
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Ends a call made by [`etcd_call!`]: times it
    /// (`zerodb_keeper_etcd_seconds`) and turns a timeout into an error.
    fn finish_call<T>(
        &self,
        op: &'static str,
        started: Instant,
        r: Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        metrics::histogram!("zerodb_keeper_etcd_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        match r {
            Ok(r) => r.map_err(etcd_err),
            Err(_) => Err(StoreError::Etcd(format!(
                "{op}: no answer within {:?}",
                self.ttl
            ))),
        }
    }

    /// The state and its revision (0: no state yet).
    async fn read(&self) -> Result<(i64, Option<Persisted>), StoreError> {
        let key = self.key("state");
        let mut kv = self.client.kv_client();
        let resp = etcd_call!(self, "get", kv.get(key.clone(), None))?;
        let read = match resp.kvs().first() {
            None => (0, None),
            Some(kv) => (
                kv.mod_revision(),
                Some(serde_json::from_slice(kv.value()).map_err(|e| corrupt(&key, e))?),
            ),
        };
        *lock(&self.last) = Some(read.clone());
        Ok(read)
    }

    fn set_owner(&self, owner: Option<i64>) {
        *lock(&self.owner) = owner;
        *lock(&self.last) = None;
    }

    /// The leader as its key says (`None`: no leader now).
    async fn leader(&self) -> Result<Option<(i64, LeaderInfo)>, StoreError> {
        let key = self.key("leader");
        let mut kv = self.client.kv_client();
        let resp = etcd_call!(self, "get", kv.get(key.clone(), None))?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let info = serde_json::from_slice(kv.value()).map_err(|e| corrupt(&key, e))?;
                Ok(Some((kv.lease(), info)))
            }
        }
    }

    /// Tries to become the leader: creates the leader key bound to a fresh
    /// lease if there is none. Returns the lease, the key's revision and
    /// when the lease was asked for; or the leader there is.
    async fn try_lead(&self) -> Result<Result<Won, Option<LeaderInfo>>, StoreError> {
        if let Some((_, info)) = self.leader().await? {
            return Ok(Err(Some(info)));
        }
        let asked = Instant::now();
        let mut lease = self.client.lease_client();
        let ttl_s = self.ttl.as_secs_f64().ceil() as i64;
        let granted = etcd_call!(self, "lease_grant", lease.grant(ttl_s, None))?;
        let key = self.key("leader");
        let value = serde_json::to_vec(&self.me).map_err(|e| corrupt(&key, e))?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(etcd_client::PutOptions::new().with_lease(granted.id())),
            )])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = etcd_call!(self, "txn", kv.txn(txn.clone()))?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            return Ok(Ok(Won {
                lease: granted.id(),
                revision,
                asked,
            }));
        }
        let _ = etcd_call!(self, "lease_revoke", lease.revoke(granted.id()));
        let other = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice(kv.value()).ok()),
            _ => None,
        });
        Ok(Err(other))
    }

    /// Writes the term this keeper now leads under into its leader key
    /// (same key, same lease), for followers' `/status`.
    async fn announce(&self, won: &Won, term: u64) -> Result<(), StoreError> {
        let key = self.key("leader");
        let me = LeaderInfo {
            term: Some(term),
            ..self.me.clone()
        };
        let value = serde_json::to_vec(&me).map_err(|e| corrupt(&key, e))?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                won.revision,
            )])
            .and_then([TxnOp::put(
                key,
                value,
                Some(etcd_client::PutOptions::new().with_lease(won.lease)),
            )]);
        let mut kv = self.client.kv_client();
        etcd_call!(self, "txn", kv.txn(txn.clone())).map(|_| ())
    }

    /// Ends this keeper's lease (a clean stop, or a lost lead): the next
    /// keeper need not wait for it to expire.
    async fn resign(&self, lease: i64) {
        let mut l = self.client.lease_client();
        if let Err(e) = etcd_call!(self, "lease_revoke", l.revoke(lease)) {
            tracing::debug!(error = %e, "lease not revoked; it expires");
        }
    }

    async fn trim_decisions(&self) -> Result<(), StoreError> {
        let prefix = self.key("decisions/");
        let mut kv = self.client.kv_client();
        let count = etcd_call!(
            self,
            "get",
            kv.get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )?
        .count();
        let extra = count - self.decisions_kept as i64;
        if extra <= 0 {
            return Ok(());
        }
        let oldest = etcd_call!(
            self,
            "get",
            kv.get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Ascend)
                        .with_limit(extra),
                ),
            ),
        )?;
        let (Some(first), Some(last)) = (oldest.kvs().first(), oldest.kvs().last()) else {
            return Ok(());
        };
        let mut end = last.key().to_vec();
        end.push(0);
        etcd_call!(
            self,
            "delete",
            kv.delete(
                first.key().to_vec(),
                Some(DeleteOptions::new().with_range(end.clone())),
            ),
        )?;
        Ok(())
    }
}

/// An election won.
#[derive(Debug, Clone, Copy)]
struct Won {
    lease: i64,
    revision: i64,
    /// When the lease was asked for: it surely lasts one TTL from then.
    asked: Instant,
}

#[async_trait::async_trait]
impl Store for Etcd {
    async fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.read().await?.1)
    }

    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError> {
        let state_key = self.key("state");
        let leader_key = self.key("leader");
        for _ in 0..3 {
            let owner = (*lock(&self.owner)).ok_or(StoreError::NotLeader)?;
            let cached = lock(&self.last).clone();
            let (revision, current) = match cached {
                Some(c) => c,
                None => self.read().await?,
            };
            let mut next = current.unwrap_or_default();
            change(&mut next);
            let body = serde_json::to_vec(&next).map_err(|e| corrupt(&state_key, e))?;
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(state_key.clone(), CompareOp::Equal, revision),
                    Compare::create_revision(leader_key.clone(), CompareOp::Equal, owner),
                ])
                .and_then([TxnOp::put(state_key.clone(), body, None)])
                .or_else([TxnOp::get(leader_key.clone(), None)]);
            let mut kv = self.client.kv_client();
            let resp = match etcd_call!(self, "txn", kv.txn(txn.clone())) {
                Ok(r) => r,
                Err(e) => {
                    // It may or may not have been written: read it again.
                    *lock(&self.last) = None;
                    return Err(e);
                }
            };
            if resp.succeeded() {
                let written = resp.header().map_or(0, |h| h.revision());
                *lock(&self.last) = Some((written, Some(next.clone())));
                return Ok(next);
            }
            *lock(&self.last) = None;
            let leader_now = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
                _ => None,
            });
            if leader_now != Some(owner) {
                return Err(StoreError::NotLeader);
            }
            // The state changed under this keeper's cached revision: read
            // it again and retry.
        }
        Err(StoreError::Etcd(
            "the state kept changing under this keeper".into(),
        ))
    }

    async fn append_decision(&self, decision: &serde_json::Value) -> Result<(), StoreError> {
        self.local.append_decision(decision).await?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let key = self.key(&format!(
            "decisions/{:016}-{n:06}",
            crate::record::unix_ms()
        ));
        let body = serde_json::to_vec(decision).map_err(|e| corrupt(&key, e))?;
        let mut kv = self.client.kv_client();
        etcd_call!(self, "put", kv.put(key.clone(), body.clone(), None))?;
        self.trim_decisions().await
    }
}

/// Runs the election until `stop` changes: leads when it can, follows
/// otherwise, and tells `lead` which. A leader that stops cleanly gives
/// the lead up at once (its lease is revoked).
pub async fn campaign(
    keeper: Arc<Keeper>,
    etcd: Arc<Etcd>,
    lead: Arc<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    // A follower notices a vanished leader within this (etcd itself
    // expires leases every half second or so).
    let poll = (etcd.ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(250));
    loop {
        if *stop.borrow() {
            return;
        }
        match etcd.try_lead().await {
            Ok(Ok(won)) => {
                serve_as_leader(&keeper, &etcd, &lead, won, &mut stop).await;
                // Leave the next election to the others for one lease: a
                // keeper that just lost the lead (or could not take it
                // over) is the least fit to lead.
                tokio::select! {
                    _ = tokio::time::sleep(etcd.ttl) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Ok(Err(leader)) => {
                if lead.role()
                    != (Role::Follower {
                        leader: leader.clone(),
                    })
                {
                    tracing::info!(leader = ?leader.as_ref().map(|l| &l.advertise), "following");
                    lead.set(Role::Follower { leader });
                }
            }
            Err(e) => {
                if lead.role() != (Role::Follower { leader: None }) {
                    tracing::warn!(error = %e, "etcd unreachable: not deciding");
                    lead.set(Role::Follower { leader: None });
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Leads from an election won until the lease is lost or `stop` changes.
async fn serve_as_leader(
    keeper: &Arc<Keeper>,
    etcd: &Arc<Etcd>,
    lead: &Arc<Leadership>,
    won: Won,
    stop: &mut watch::Receiver<bool>,
) {
    etcd.set_owner(Some(won.revision));
    lead.set(Role::TakingOver);
    lead.lease_held_until(won.asked + etcd.ttl);
    let (lost_tx, mut lost) = watch::channel(false);
    let renewing = tokio::spawn(keep_alive(etcd.clone(), lead.clone(), won.lease, lost_tx));
    let term = tokio::select! {
        t = keeper.take_over() => t,
        _ = lost.changed() => Err(KeeperError::Store(StoreError::NotLeader)),
    };
    match term {
        Ok(term) => {
            lead.set(Role::Leader { term });
            if let Err(e) = etcd.announce(&won, term).await {
                tracing::warn!(error = %e, "cannot write the term into the leader key");
            }
            tracing::warn!(term, advertise = %etcd.me.advertise, "leading");
            tokio::select! {
                _ = lost.changed() => tracing::error!("lease lost: no longer leading"),
                _ = stop.changed() => tracing::info!("stopping: giving up the lead"),
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot take the lead"),
    }
    renewing.abort();
    etcd.set_owner(None);
    lead.set(Role::Follower { leader: None });
    keeper.step_down();
    etcd.resign(won.lease).await;
}

/// Keeps the lease alive, three times per TTL; each acknowledged renewal
/// extends what `lead` knows by one TTL from when it was sent. Ends (and
/// says so on `lost`) when the lease surely lapsed or etcd says it is
/// gone.
async fn keep_alive(etcd: Arc<Etcd>, lead: Arc<Leadership>, lease: i64, lost: watch::Sender<bool>) {
    let every = etcd.ttl / 3;
    let mut stream = None;
    // After a failed renewal (the member the stream went to died), the
    // next try goes at once, on a new stream.
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        wait = Duration::from_millis(10);
        if lead.lease_left().is_none() {
            break;
        }
        if stream.is_none() {
            let mut l = etcd.client.lease_client();
            match etcd_call!(&etcd, "lease_keep_alive", l.keep_alive(lease)) {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    continue;
                }
            }
        }
        let Some((keeper, answers)) = stream.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        let renewed = async {
            keeper.keep_alive().await?;
            answers.message().await
        };
        // Bounded by the renewal period: a stream to a member that died
        // must not eat the whole lease.
        let answered = tokio::time::timeout(every, renewed).await;
        match etcd.finish_call("lease_keep_alive", sent, answered) {
            Ok(Some(r)) if r.ttl() > 0 => {
                lead.lease_held_until(sent + etcd.ttl);
                wait = every;
            }
            Ok(Some(_)) => {
                tracing::error!("etcd says the lease expired");
                break;
            }
            Ok(None) | Err(_) => stream = None,
        }
    }
    let _ = lost.send(true);
}

#[cfg(test)]
mod tests {
    //! The store against a real etcd (Debian's etcd 3.4, one member).
    use super::*;
    use zerodb_testkit::etcd::EtcdCluster;

    async fn keeper_handle(etcd: &EtcdCluster, tag: &str, kept: usize) -> Arc<Etcd> {
        keeper_at(etcd, tag, kept).await.0
    }

    /// A keeper's handle on `etcd`, and its `state_dir`.
    async fn keeper_at(
        etcd: &EtcdCluster,
        tag: &str,
        kept: usize,
    ) -> (Arc<Etcd>, std::path::PathBuf) {
        let mut cfg = KeeperConfig {
            state_dir: zerodb_testkit::scratch(&format!("etcd-store-{tag}")),
            ..KeeperConfig::default()
        };
        cfg.etcd.endpoints = etcd.endpoints();
        cfg.etcd.prefix = format!("/zerodb/{tag}");
        cfg.etcd.lease_ttl = Duration::from_secs(1);
        cfg.etcd.decisions_kept = kept;
        (Etcd::connect(&cfg).await.expect("connect"), cfg.state_dir)
    }

    async fn lead(e: &Etcd) -> Won {
        let won = e.try_lead().await.expect("etcd").expect("no leader yet");
        e.set_owner(Some(won.revision));
        won
    }

    /// A keeper whose lease is gone writes nothing, even with its cached
    /// revision still current; the new leader writes on from the newest
    /// state, and an epoch is never handed out twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_keeper_writes_nothing() {
        let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start("store", 1))
            .await
            .expect("etcd");
        let (a, b) = (
            keeper_handle(&etcd, "deposed", 10).await,
            keeper_handle(&etcd, "deposed", 10).await,
        );
        assert!(matches!(
            a.update(&|s: &mut Persisted| s.epoch += 1).await,
            Err(StoreError::NotLeader)
        ));
        let won = lead(&a).await;
        assert!(
            matches!(b.try_lead().await, Ok(Err(Some(_)))),
            "one leader at a time"
        );
        let s = a
            .update(&|s: &mut Persisted| s.epoch += 1)
            .await
            .expect("a writes");
        assert_eq!(s.epoch, 1);
        // A's lease ends (as when it expires); B leads.
        a.resign(won.lease).await;
        lead(&b).await;
        // The state is as A last wrote it: only the leader key stops A.
        assert!(matches!(
            a.update(&|s: &mut Persisted| s.epoch += 1).await,
            Err(StoreError::NotLeader)
        ));
        let s = b
            .update(&|s: &mut Persisted| s.epoch += 1)
            .await
            .expect("b writes");
        assert_eq!(s.epoch, 2);
        assert_eq!(b.load().await.expect("load").map(|s| s.epoch), Some(2));
        // B's cached revision is stale after another write: it reads again.
        *lock(&b.last) = Some((1, None));
        let s = b
            .update(&|s: &mut Persisted| s.epoch += 1)
            .await
            .expect("b again");
        assert_eq!(s.epoch, 3, "the newest state, not the cached one");
        drop(etcd);
    }

    /// The shared decision log keeps the newest `decisions_kept`; each
    /// keeper's own file keeps them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_decision_log_is_bounded() {
        let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start("log", 1))
            .await
            .expect("etcd");
        let (e, dir) = keeper_at(&etcd, "log", 3).await;
        for i in 0..5 {
            e.append_decision(&serde_json::json!({ "n": i }))
                .await
                .expect("append");
        }
        let mut kv = e.client.kv_client();
        let kept = kv
            .get(e.key("decisions/"), Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        let values: Vec<serde_json::Value> = kept
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        assert_eq!(
            values,
            (2..5)
                .map(|n| serde_json::json!({ "n": n }))
                .collect::<Vec<_>>()
        );
        let local = std::fs::read_to_string(dir.join("decisions.jsonl")).expect("local log");
        assert_eq!(local.lines().count(), 5);
        drop(etcd);
    }
}
