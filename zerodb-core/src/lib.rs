//! zeroDB's shared core: what the proxy, the keeper and the agent all
//! speak and decide, with no I/O framework beyond tokio.
//!
//! * [`policy`] — the seed's policy keys;
//! * [`control`] — the messages between proxies, keeper and agents,
//!   rejections included;
//! * [`decision`] — the keeper's decision on a switch request, pure;
//! * [`governance`] — a proxy's own rules (alert, unregister, offline,
//!   back online), a pure state machine;
//! * [`keepers`] — following the leading keeper of a group: which keeper
//!   to try next, the newest term seen, pure;
//! * [`config`] — loading config files with environment overrides, and
//!   the keeper's config, which an embedding proxy builds too;
//! * [`durable`] — files that survive a crash whole;
//! * [`process`] — logging and graceful stop for the binaries;
//! * `admin_http` (feature `admin-http`) — serving axum routers, the
//!   cluster token check, the Prometheus exporter.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::too_many_lines)]

#[cfg(feature = "admin-http")]
pub mod admin_http;
pub mod config;
pub mod control;
#[cfg(feature = "tls")]
pub mod control_tls;
pub mod decision;
pub mod durable;
pub mod governance;
pub mod keepers;
pub mod policy;
pub mod process;
pub mod tokens;
