//! Limits on what one client may hold (config keys under `limits:`), and
//! the table of client addresses blocked after failed logins.
//!
//! Names follow MariaDB's system variables where one means the same, so a
//! DBA finds the setting under the name they know.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zerodb_core::config::duration;

/// Limits and timeouts on clients (config keys under `limits:`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `limits.connect_timeout`: how long a new connection may take to log
    /// in (MariaDB's `connect_timeout`).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// `limits.wait_timeout`: a session idle between commands this long
    /// (inside a transaction or not) gets error 4031 and is closed.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
    /// `limits.net_write_timeout`: a client that takes no bytes of its
    /// answer for this long is closed.
    #[serde(with = "duration")]
    pub net_write_timeout: Duration,
    /// `limits.tcp_keepalive`: idle time before the kernel probes a silent
    /// client, on client sockets; `0` turns it off.
    #[serde(with = "duration")]
    pub tcp_keepalive: Duration,
    /// `limits.max_prepared_stmt_count`: prepared statements one session
    /// may hold (MariaDB's is for the whole server).
    pub max_prepared_stmt_count: usize,
    /// `limits.max_session_vars`: distinct `SET` assignments one session
    /// may hold (the proxy keeps them to replay after a switch).
    pub max_session_vars: usize,
    /// `limits.max_connect_errors`: failed logins in a row after which an
    /// address is refused for `host_block_time`; `0` turns it off.
    pub max_connect_errors: u32,
    /// `limits.host_block_time`: how long such an address stays refused.
    #[serde(with = "duration")]
    pub host_block_time: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(28_800),
            net_write_timeout: Duration::from_secs(60),
            tcp_keepalive: Duration::from_secs(60),
            max_prepared_stmt_count: 16_382,
            max_session_vars: 1_000,
            max_connect_errors: 100,
            host_block_time: Duration::from_secs(300),
        }
    }
}

impl LimitsConfig {
    /// What is wrong with these limits, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.connect_timeout.is_zero() {
            return Some("limits.connect_timeout must be more than 0".into());
        }
        if self.wait_timeout.is_zero() {
            return Some("limits.wait_timeout must be more than 0".into());
        }
        if self.net_write_timeout.is_zero() {
            return Some("limits.net_write_timeout must be more than 0".into());
        }
        None
    }
}

/// Sets TCP keepalive on a socket: probes start after `idle` of silence,
/// then every `idle / 4` (at least a second); `idle` zero leaves it off.
pub fn set_keepalive(socket: socket2::SockRef<'_>, idle: Duration) {
    if idle.is_zero() {
        return;
    }
    let every = (idle / 4).max(Duration::from_secs(1));
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(every);
    if let Err(e) = socket.set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Most addresses the table remembers; past this, entries not blocking
/// anyone are dropped (a scan from many addresses cannot grow it).
const MAX_TRACKED: usize = 65_536;

/// Failed logins per client address (MariaDB's host cache, with an expiry
/// instead of `FLUSH HOSTS`).
#[derive(Debug, Default)]
pub struct HostBlocks {
    hosts: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    in_a_row: u32,
    blocked_until: Option<Instant>,
}

impl HostBlocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is refused now.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let mut hosts = self.lock();
        match hosts.get(&ip).and_then(|f| f.blocked_until) {
            Some(until) if until > now => true,
            Some(_) => {
                hosts.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Counts a failed login from `ip`; whether that blocked it.
    pub fn failed(&self, ip: IpAddr, limits: &LimitsConfig, now: Instant) -> bool {
        if limits.max_connect_errors == 0 {
            return false;
        }
        let mut hosts = self.lock();
        if hosts.len() >= MAX_TRACKED && !hosts.contains_key(&ip) {
            hosts.retain(|_, f| f.blocked_until.is_some_and(|u| u > now));
            if hosts.len() >= MAX_TRACKED {
                return false;
            }
        }
        let f = hosts.entry(ip).or_insert(Failures {
            in_a_row: 0,
            blocked_until: None,
        });
        f.in_a_row = f.in_a_row.saturating_add(1);
        if f.in_a_row >= limits.max_connect_errors && f.blocked_until.is_none() {
            f.blocked_until = Some(now + limits.host_block_time);
            return true;
        }
        false
    }

    /// A login from `ip` succeeded: its count starts over.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut hosts = self.lock();
        if hosts.get(&ip).is_some_and(|f| f.blocked_until.is_none()) {
            hosts.remove(&ip);
        }
    }

    /// Addresses blocked now.
    pub fn blocked(&self, now: Instant) -> Vec<IpAddr> {
        self.lock()
            .iter()
            .filter(|(_, f)| f.blocked_until.is_some_and(|u| u > now))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Forgets every count and block (`FLUSH HOSTS`).
    pub fn flush(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_failures_in_a_row_then_released() {
        let limits = LimitsConfig {
            max_connect_errors: 3,
            host_block_time: Duration::from_secs(60),
            ..Default::default()
        };
        let t = HostBlocks::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        assert!(!t.failed(a, &limits, now));
        assert!(!t.failed(a, &limits, now));
        t.succeeded(a);
        assert!(
            !t.failed(a, &limits, now),
            "a success starts the count over"
        );
        assert!(!t.failed(a, &limits, now));
        assert!(t.failed(a, &limits, now), "third in a row");
        assert!(t.is_blocked(a, now));
        assert!(!t.is_blocked(b, now), "only that address");
        t.succeeded(a);
        assert!(t.is_blocked(a, now), "a block outlasts a success elsewhere");
        assert_eq!(t.blocked(now), vec![a]);
        let later = now + Duration::from_secs(61);
        assert!(!t.is_blocked(a, later), "released after host_block_time");
        assert!(!t.failed(a, &limits, later), "counted from zero again");
    }

    #[test]
    fn zero_turns_blocking_off_and_flush_forgets() {
        let off = LimitsConfig {
            max_connect_errors: 0,
            ..Default::default()
        };
        let t = HostBlocks::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(!t.failed(a, &off, now));
        }
        let one = LimitsConfig {
            max_connect_errors: 1,
            ..Default::default()
        };
        assert!(t.failed(a, &one, now));
        t.flush();
        assert!(!t.is_blocked(a, now));
    }
}
