//! zeroDB's keeper: proxies register with it and agents report to it; it
//! decides datasource switches (SPEC §3, the pure
//! [`zerodb_core::decision::decide`]), carries them out, persists the
//! topology and pushes it to every proxy.
//!
//! * [`keeper`] — [`Keeper`]: members, votes, agents' reports, decisions;
//! * [`store`] — what the keeper persists, and where;
//! * [`http`] — the control router (proxies' WebSockets, agents'
//!   heartbeats) and the admin router.

#![forbid(unsafe_code)]

pub mod http;
pub mod keeper;
pub mod store;

pub use keeper::{DecisionRecord, Keeper, KeeperError};
