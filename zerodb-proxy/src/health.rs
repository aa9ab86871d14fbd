//! Probing datasources.
//!
//! Each datasource is probed on an interval over a connection of the
//! prober's own (COM_PING, with a timeout). A datasource is marked down after
//! `fall` consecutive failures and up again after `rise` consecutive
//! successes; every flip is logged, counted and broadcast to subscribers.

use crate::backend::{BackendConn, BackendKey};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Probe settings (config keys under `health:`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Time between probes of one datasource.
    #[serde(with = "zerodb_core::config::duration")]
    pub interval: Duration,
    /// A probe that takes longer has failed.
    #[serde(with = "zerodb_core::config::duration")]
    pub timeout: Duration,
    /// Consecutive failures that mark a datasource down.
    pub fall: u32,
    /// Consecutive successes that mark it up again.
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            fall: 3,
            rise: 2,
        }
    }
}

/// What the prober knows of one datasource.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    last_rtt_us: AtomicU64,
    probes: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            // Innocent until proven otherwise: a proxy starts serving.
            up: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            last_rtt_us: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        }
    }
}

/// A snapshot for status pages.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// Whether the datasource is up.
    pub up: bool,
    /// Failed probes in a row (0 after a success).
    pub consecutive_failures: u32,
    /// Round trip of the last successful probe, in microseconds (0 before
    /// any).
    pub last_rtt_us: u64,
    /// Probes made since the proxy started.
    pub probes: u64,
}

impl Health {
    /// Whether the datasource is up: true at start, false after `health.fall`
    /// failed probes in a row, true again after `health.rise` successes.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Failed probes in a row (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Acquire)
    }

    /// The state and counters now, for `/status`.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            up: self.is_up(),
            consecutive_failures: self.consecutive_failures(),
            last_rtt_us: self.last_rtt_us.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
        }
    }

    /// Records one probe; returns `Some(new_state)` when the state flipped.
    pub fn record(&self, ok: bool, rtt: Duration, cfg: &HealthConfig) -> Option<bool> {
        self.probes.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.last_rtt_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Release);
            let s = self.consecutive_successes.fetch_add(1, Ordering::AcqRel) + 1;
            if !self.is_up() && s >= cfg.rise {
                self.up.store(true, Ordering::Release);
                return Some(true);
            }
        } else {
            self.consecutive_successes.store(0, Ordering::Release);
            let f = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if self.is_up() && f >= cfg.fall {
                self.up.store(false, Ordering::Release);
                return Some(false);
            }
        }
        None
    }
}

/// A datasource changed state.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The datasource's name.
    pub datasource: String,
    /// Its new state.
    pub up: bool,
    /// Failed probes in a row when it flipped (0 when it came up).
    pub consecutive_failures: u32,
}

/// One fresh probe on a new connection (for a keeper's vote): whether the
/// datasource answered a COM_PING within `timeout`.
pub async fn probe_once(params: &crate::backend::ConnectParams, timeout: Duration) -> bool {
    let probe = async {
        let mut c = BackendConn::connect(params, BackendKey::default()).await?;
        c.ping().await
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
}

/// Whether the server answers with `read_only=OFF` (`false` when it does
/// not answer within `timeout`, or says anything else).
pub async fn writable(params: &crate::backend::ConnectParams, timeout: Duration) -> bool {
    let ask = async {
        let mut c = BackendConn::connect(params, BackendKey::default()).await?;
        c.execute("SELECT @@global.read_only").await
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(out)) => out.first_value() == Some(b"0"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_after_fall_and_rise() {
        let h = Health::default();
        let cfg = HealthConfig {
            fall: 3,
            rise: 2,
            ..Default::default()
        };
        let d = Duration::from_millis(1);
        assert_eq!(h.record(false, d, &cfg), None);
        assert_eq!(h.record(false, d, &cfg), None);
        assert_eq!(
            h.record(false, d, &cfg),
            Some(false),
            "third failure marks down"
        );
        assert_eq!(h.record(false, d, &cfg), None, "already down");
        assert_eq!(h.record(true, d, &cfg), None);
        assert_eq!(
            h.record(false, d, &cfg),
            None,
            "a failure resets the rise count"
        );
        assert_eq!(h.record(true, d, &cfg), None);
        assert_eq!(h.record(true, d, &cfg), Some(true));
        assert!(h.is_up());
    }
}
