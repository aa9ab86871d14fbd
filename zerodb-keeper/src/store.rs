//! What the keeper persists, behind the [`Store`] trait: the newest epoch
//! handed out, the topology, the registered proxies, maintenance, and the
//! switch under way. Every write is a compare-and-swap on the newest
//! state ([`Store::update`]), so an epoch is never handed out twice, by a
//! restarted keeper or (with a shared store) by two keepers.
//!
//! [`FileStore`] is the default: one JSON file written atomically (a
//! temporary file, fsync, rename, fsync of the directory) before anything
//! is published, and `decisions.jsonl` beside it.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zerodb_core::control::ClusterTopology;

/// The keeper's persisted state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The newest epoch handed out (the topology's epoch may be older when
    /// a switch failed after reserving one).
    pub epoch: u64,
    /// The term of the leading keeper, raised by each keeper that takes
    /// the lead (keepers on etcd; 0 with one keeper on the file store).
    /// Never below a term a proxy or agent reports.
    #[serde(default)]
    pub term: u64,
    /// The topology in force.
    pub topology: ClusterTopology,
    /// Registered proxies, by name.
    pub proxies: Vec<String>,
    /// DataHosts in maintenance.
    #[serde(default)]
    pub maintenance: Vec<String>,
    /// False after the keeper adopted a topology a proxy or agent reported
    /// (its own state was lost or older): it cannot know which proxies were
    /// members, so no automatic switch happens until an operator confirms
    /// the membership (`POST /bootstrap`).
    #[serde(default = "confirmed")]
    pub membership_confirmed: bool,
    /// The switch under way, written with its epoch before the first order
    /// and cleared with the topology it ends in.
    #[serde(default)]
    pub switch: Option<SwitchIntent>,
    /// When each dataHost last switched (Unix ms), written with the
    /// topology, so that a restarted keeper keeps the cooldown.
    #[serde(default)]
    pub last_switch_unix_ms: std::collections::BTreeMap<String, u64>,
}

fn confirmed() -> bool {
    true
}

/// A switch the keeper has begun: enough for a keeper that restarts in the
/// middle of it to finish or roll it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchIntent {
    /// The dataHost switched.
    pub datahost: String,
    /// Its active datasource before the switch.
    pub source: String,
    /// The datasource promoted.
    pub target: String,
    /// The epoch reserved for the switch.
    pub epoch: u64,
    /// An operator's switchover (the source was alive and is fenced first).
    pub planned: bool,
}

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// What was read or written.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// This keeper does not hold the lead (keepers on etcd): it writes
    /// nothing.
    #[error("this keeper does not lead; nothing was written")]
    NotLeader,
    /// etcd could not be reached, or refused.
    #[error("etcd: {0}")]
    Etcd(String),
    /// What is stored does not parse.
    #[error("{path}: {source}")]
    Corrupt {
        /// What was read.
        path: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// A change to the persisted state (see [`Store::update`]).
pub type Change<'c> = dyn Fn(&mut Persisted) + Send + Sync + 'c;

/// Where the keeper's state lives.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The state, or `None` before the first write (a first start).
    async fn load(&self) -> Result<Option<Persisted>, StoreError>;

    /// Applies `change` to the newest state (the default one before the
    /// first write) and writes the result durably, in one step: no other
    /// update comes between the read and the write. Returns what was
    /// written; on failure nothing changes.
    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError>;

    /// Appends one decision to the audit trail.
    async fn append_decision(&self, decision: &serde_json::Value) -> Result<(), StoreError>;

    /// Reserves the epoch after the newest handed out, recording `intent`
    /// (its `epoch` is filled in) in the same write. Returns the epoch.
    async fn reserve_epoch(&self, intent: &SwitchIntent) -> Result<u64, StoreError> {
        let state = self
            .update(&|s: &mut Persisted| {
                s.epoch += 1;
                s.switch = Some(SwitchIntent {
                    epoch: s.epoch,
                    ..intent.clone()
                });
            })
            .await?;
        Ok(state.epoch)
    }
}

/// The state in `dir/state.json`, decisions in `dir/decisions.jsonl`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// The state last read or written: updates are serialised here.
    state: Mutex<Option<Persisted>>,
}

impl FileStore {
    /// Uses `dir`, creating it if need be.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Mutex::new(None),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path().display().to_string(),
            source,
        }
    }

    fn read(&self) -> Result<Option<Persisted>, StoreError> {
        let Some(b) = zerodb_core::durable::read_file(&self.path()).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.path().display().to_string(),
                source,
            })
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let read = self.read()?;
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = read.clone();
        Ok(read)
    }

    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError> {
        let mut cached = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = match cached.as_ref() {
            Some(s) => s.clone(),
            None => self.read()?.unwrap_or_default(),
        };
        change(&mut next);
        let body = serde_json::to_vec_pretty(&next).map_err(|source| StoreError::Corrupt {
            path: self.path().display().to_string(),
            source,
        })?;
        zerodb_core::durable::replace_file(&self.path(), &body).map_err(|e| self.io(e))?;
        *cached = Some(next.clone());
        Ok(next)
    }

    async fn append_decision(&self, decision: &serde_json::Value) -> Result<(), StoreError> {
        let path = self.dir.join("decisions.jsonl");
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut line = serde_json::to_vec(decision).map_err(|source| StoreError::Corrupt {
            path: path.display().to_string(),
            source,
        })?;
        line.push(b'\n');
        f.write_all(&line).map_err(io)
    }
}

/// A state in memory only: for tests, and for a keeper whose state need
/// not survive its process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Option<Persisted>>,
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn update(&self, change: &Change<'_>) -> Result<Persisted, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = state.clone().unwrap_or_default();
        change(&mut next);
        *state = Some(next.clone());
        Ok(next)
    }

    async fn append_decision(&self, _decision: &serde_json::Value) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zerodb-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn round_trip_and_first_start() {
        let dir = scratch("trip");
        let s = FileStore::open(&dir).unwrap();
        assert_eq!(s.load().await.unwrap(), None);
        let written = s
            .update(&|st: &mut Persisted| {
                st.epoch = 7;
                st.proxies = vec!["p1".into()];
                st.membership_confirmed = true;
            })
            .await
            .unwrap();
        let reopened = FileStore::open(&dir).unwrap();
        assert_eq!(reopened.load().await.unwrap(), Some(written));
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "no temporary file left behind");
        // A state written before `membership_confirmed` existed is confirmed.
        std::fs::write(
            dir.join("state.json"),
            br#"{"epoch":3,"topology":{"epoch":2,"datahosts":[]},"proxies":[]}"#,
        )
        .unwrap();
        assert!(s.load().await.unwrap().unwrap().membership_confirmed);
        std::fs::write(dir.join("state.json"), b"{garbage").unwrap();
        assert!(
            matches!(s.load().await, Err(StoreError::Corrupt { .. })),
            "a corrupt state is an error, not a fresh start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Epochs are reserved one after another, each with its intent, and
    /// concurrent updates never lose one another's change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn epochs_are_reserved_once_each() {
        let dir = scratch("cas");
        let s = std::sync::Arc::new(FileStore::open(&dir).unwrap());
        let intent = SwitchIntent {
            datahost: "dh1".into(),
            source: "a".into(),
            target: "b".into(),
            epoch: 0,
            planned: false,
        };
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (s, intent) = (s.clone(), intent.clone());
            tasks.push(tokio::spawn(async move {
                let e = s.reserve_epoch(&intent).await.unwrap();
                s.update(&move |st: &mut Persisted| st.proxies.push(format!("p{i}")))
                    .await
                    .unwrap();
                e
            }));
        }
        let mut epochs = Vec::new();
        for t in tasks {
            epochs.push(t.await.unwrap());
        }
        epochs.sort_unstable();
        assert_eq!(epochs, (1..=8).collect::<Vec<_>>());
        let st = FileStore::open(&dir)
            .unwrap()
            .load()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.epoch, 8);
        assert_eq!(st.proxies.len(), 8);
        assert_eq!(st.switch.map(|i| i.epoch), Some(8));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
