//! Probing datasources.
//!
//! Each datasource is probed on an interval over a connection of the
//! prober's own (COM_PING, with a timeout). A datasource is marked down after
//! `fall` consecutive failures and up again after `rise` consecutive
//! successes; every flip is logged, counted and broadcast to subscribers.

use crate::backend::{BackendConn, BackendError, BackendKey};
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

/// What one probe found (SPEC §7: only a failure a switch can cure asks
/// for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The server answered the ping.
    Answered,
    /// The server answered with an error (too many connections 1040,
    /// access denied 1045, host blocked 1129, …): it is alive, and another
    /// datasource would not cure that. An alert, not a failed probe.
    Refused {
        /// The MySQL error code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// No answer, or no usable one: a failed probe.
    Failed(String),
}

impl ProbeOutcome {
    /// The outcome of a probe that finished within its timeout.
    pub fn of(result: Result<(), BackendError>) -> Self {
        match result {
            Ok(()) => ProbeOutcome::Answered,
            Err(
                BackendError::Login { code, message, .. }
                | BackendError::Server { code, message, .. },
            ) => ProbeOutcome::Refused { code, message },
            Err(e) => ProbeOutcome::Failed(e.to_string()),
        }
    }

    /// Whether the probe counts as failed.
    pub fn failed(&self) -> bool {
        matches!(self, ProbeOutcome::Failed(_))
    }
}

/// One fresh probe on a new connection (for a keeper's vote), within
/// `timeout`.
pub async fn probe_once(params: &crate::backend::ConnectParams, timeout: Duration) -> ProbeOutcome {
    let probe = async {
        let mut c = BackendConn::connect(params, BackendKey::default()).await?;
        c.ping().await
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => ProbeOutcome::of(r),
        Err(_) => ProbeOutcome::Failed(format!("no answer within {timeout:?}")),
    }
}

/// Whether the login of `params` holds `SUPER` or `READ_ONLY ADMIN` on the
/// server (granted to it directly, `ALL PRIVILEGES` included), so that its
/// writes pass `read_only` and fencing cannot stop them; `None` when the
/// server does not say within `timeout`.
pub async fn bypasses_read_only(
    params: &crate::backend::ConnectParams,
    timeout: Duration,
) -> Option<bool> {
    const QUERY: &str = "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
        WHERE PRIVILEGE_TYPE IN ('SUPER', 'READ_ONLY ADMIN') \
        AND GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
        SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')";
    Some(ask(params, QUERY, timeout).await? != b"0")
}

/// Whether the server answers with `read_only=OFF` (`false` when it does
/// not answer within `timeout`, or says anything else).
pub async fn writable(params: &crate::backend::ConnectParams, timeout: Duration) -> bool {
    ask(params, "SELECT @@global.read_only", timeout)
        .await
        .as_deref()
        == Some(b"0")
}

/// The first column of the first row `query` returns on a fresh
/// connection, if the server answers it within `timeout`.
async fn ask(
    params: &crate::backend::ConnectParams,
    query: &str,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let asked = async {
        let mut c = BackendConn::connect(params, BackendKey::default()).await?;
        c.execute(query).await
    };
    let out = tokio::time::timeout(timeout, asked).await.ok()?.ok()?;
    out.first_value().map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_is_an_answer_not_a_failure() {
        let login = |code| BackendError::Login {
            addr: "a".into(),
            code,
            message: "m".into(),
        };
        for code in [1040, 1045, 1129, 1053] {
            let o = ProbeOutcome::of(Err(login(code)));
            assert!(matches!(o, ProbeOutcome::Refused { code: c, .. } if c == code));
            assert!(!o.failed(), "{code}");
        }
        let refused = BackendError::Connect {
            addr: "a".into(),
            reason: "connection refused".into(),
        };
        assert!(ProbeOutcome::of(Err(refused)).failed());
        let lost = BackendError::Lost {
            addr: "a".into(),
            reason: "eof".into(),
        };
        assert!(ProbeOutcome::of(Err(lost)).failed());
        assert!(!ProbeOutcome::of(Ok(())).failed());
    }

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
