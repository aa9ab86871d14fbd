//! zeroDB: a fault-tolerant MySQL middleware.
//!
//! The library holds everything the binaries wire together, so it can be
//! embedded in a proxy of one's own:
//!
//! * [`protocol`] — framing, the packets the proxy writes, and the response
//!   parser that lets rows pass through as raw bytes;
//! * [`auth`] — checking clients against the proxy's user list;
//! * [`backend`], [`pool`] — connections to datasources;
//! * [`topology`] — dataHosts and their active datasource in an `ArcSwap`,
//!   swapped under strictly increasing epochs;
//! * [`health`] — probing datasources;
//! * [`session`] — one client session: relay, state tracking, replay on a
//!   swap, prepared statements, KILL;
//! * [`server`] — the accept loop, session registry and graceful shutdown;
//! * [`workers`] — session threads, each with its own event loop;
//! * [`admin`] — the HTTP surface (`/health`, `/status`, `/metrics`);
//! * [`config`], [`policy`] — configuration, with the seed's policy keys;
//! * [`decision`] — the keeper's decision on a switch request (pure);
//! * [`governance`] — the proxy's own rules (pure state machine);
//! * [`control`] — messages between proxies, keeper and agents.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod control;
pub mod decision;
pub mod durable;
pub mod errors;
pub mod governance;
pub mod health;
pub mod hooks;
pub mod keeper;
pub mod policy;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sql;
pub mod topology;
pub mod workers;
