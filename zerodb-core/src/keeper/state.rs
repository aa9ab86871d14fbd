//! What the keeper persists: the epoch, the topology and the registered
//! proxies. Written atomically (a temporary file, fsync, rename, fsync of
//! the directory) before anything is published, so a restarted keeper never
//! hands out an epoch twice and never forgets a proxy that may be writing.

use crate::control::ClusterTopology;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

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
        match std::fs::read(self.path()) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path().display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state durably.
    pub fn save(&self, state: &Persisted) -> std::io::Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let body = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.path())?;
        std::fs::File::open(&self.dir)?.sync_all()
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
            ..Default::default()
        };
        s.save(&st).unwrap();
        assert_eq!(Store::open(&dir).unwrap().load().unwrap(), Some(st));
        assert!(!dir.join("state.json.tmp").exists());
        std::fs::write(dir.join("state.json"), b"{garbage").unwrap();
        assert!(
            s.load().is_err(),
            "a corrupt state is an error, not a fresh start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
