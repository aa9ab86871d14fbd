//! zeroDB's keeper: proxies register with it and agents report to it; it
//! decides datasource switches (SPEC §3, the pure
//! [`zerodb_core::decision::decide`]), carries them out, persists the
//! topology and pushes it to every proxy.
//!
//! * [`keeper`] — [`Keeper`]: state, sessions, agents' reports, epochs
//!   that never go backwards, maintenance, status;
//! * [`request`] — a switch request: gathering the decision's inputs,
//!   deciding, answering, recording;
//! * [`switch`] — carrying an approved switch out, phase by phase, with
//!   one compensation path;
//! * [`members`] — the registered proxies and their typed answers;
//! * [`agents`] — how the keeper reaches agents;
//! * [`store`] — what the keeper persists, and where;
//! * `etcd` — keepers on etcd: the shared state, the election (feature
//!   `etcd`);
//! * [`start`] — a keeper as its config says: alone, or in a group on
//!   etcd;
//! * [`lead`] — whether this keeper may decide (keepers on etcd: while it
//!   leads under a lease);
//! * [`record`] — the decisions' record;
//! * [`http`] — the control router (proxies' WebSockets, agents'
//!   heartbeats) and the admin router.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::too_many_lines)]

pub mod agents;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod http;
pub mod keeper;
pub mod lead;
pub mod members;
pub mod record;
pub mod request;
pub mod start;
pub mod store;
pub mod switch;

pub use keeper::{Keeper, KeeperError};
pub use record::DecisionRecord;
pub use start::start;
