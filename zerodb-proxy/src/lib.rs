//! zeroDB's MySQL proxy: clients speak the MySQL protocol to it; it
//! authenticates them itself, routes each session to the active
//! datasource of its dataHost, and relays results as raw bytes. When the
//! active datasource is swapped (by the keeper, or by an embedder), every
//! session moves to the new one between statements with its state
//! replayed; nobody reconnects.
//!
//! * [`protocol`] — framing, the packets the proxy writes, and the
//!   response parser that lets rows pass as raw bytes (no I/O);
//! * [`conn`] — a framed connection over a socket;
//! * [`auth`] — checking clients against the proxy's user list;
//! * [`backend`], [`pool`] — connections to datasources;
//! * [`topology`] — dataHosts and their active datasource in an
//!   `ArcSwap`, swapped under strictly increasing epochs;
//! * [`health`] — probing datasources;
//! * [`session`] — one client session;
//! * [`server`] — the accept loop, session registry and graceful stop;
//! * [`workers`] — session threads, each with its own event loop;
//! * [`config`] — what the proxy reads;
//! * `cluster` (feature `cluster`) — the proxy's part in a cluster: the
//!   keeper connection, switch requests, the rules of SPEC §4;
//! * `admin` (feature `admin-http`) — `/health`, `/status`, `/metrics`.

#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

#[cfg(feature = "admin-http")]
pub mod admin;
pub mod auth;
pub mod backend;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod errors;
pub mod health;
pub mod hooks;
pub mod pool;
pub mod probe;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod shared;
pub mod sql;
pub mod topology;
pub mod workers;
