//! What the keeper persists: the epoch, the topology and the registered
//! proxies. Written atomically (a temporary file, fsync, rename, fsync of
//! the directory) before anything is published, so a restarted keeper never
//! hands out an epoch twice and never forgets a proxy that may be writing.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use zerodb_core::control::ClusterTopology;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The newest epoch handed out (the topology's epoch may be older when
    /// a promotion failed after reserving one).
    pub epoch: u64,
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
}

fn confirmed() -> bool {
    true
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The persisted state, or `None` on a first start.
    pub fn load(&self) -> std::io::Result<Option<Persisted>> {
        let Some(b) = zerodb_core::durable::read_file(&self.path())? else {
            return Ok(None);
        };
        serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path().display())))
    }

    /// Replaces the state durably.
    pub fn save(&self, state: &Persisted) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        zerodb_core::durable::replace_file(&self.path(), &body)
    }

    /// Appends one JSON line to `decisions.jsonl` (the audit trail).
    pub fn append_decision(&self, line: &serde_json::Value) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("decisions.jsonl"))?;
        let mut s = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        s.push(b'\n');
        f.write_all(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_first_start() {
        let dir = std::env::temp_dir().join(format!("zerodb-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.load().unwrap(), None);
        let st = Persisted {
            epoch: 7,
            proxies: vec!["p1".into()],
            membership_confirmed: true,
            ..Default::default()
        };
        s.save(&st).unwrap();
        assert_eq!(Store::open(&dir).unwrap().load().unwrap(), Some(st));
        assert!(!dir.join("state.json.tmp").exists());
        // A state written before `membership_confirmed` existed is confirmed.
        std::fs::write(
            dir.join("state.json"),
            br#"{"epoch":3,"topology":{"epoch":2,"datahosts":[]},"proxies":[]}"#,
        )
        .unwrap();
        assert!(s.load().unwrap().unwrap().membership_confirmed);
        std::fs::write(dir.join("state.json"), b"{garbage").unwrap();
        assert!(
            s.load().is_err(),
            "a corrupt state is an error, not a fresh start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
