//! zeroDB's agent: runs beside one MySQL/MariaDB server, reports its state
//! to the keeper, and promotes or fences it on the keeper's orders (each
//! under an epoch it checks). When the keeper's topology says its server
//! is no longer the active datasource it fences it by itself (SPEC §5).
//!
//! * [`agent`] — [`AgentCore`], the agent's logic without a transport;
//! * [`ops`] — what it does to its server, over SQL;
//! * [`http`] — the agent over HTTP: control and admin routers, the
//!   heartbeat to the keeper;
//! * [`client`] — the control plane's HTTP client, and the handle through
//!   which the keeper reaches an agent (remote, or in-process for a
//!   datasource without one);
//! * [`config`] — what `zerodb-agent` reads.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::too_many_lines)]

pub mod agent;
pub mod client;
pub mod config;
pub mod http;
pub mod ops;

pub use agent::{AgentCore, AgentError, SavedState};
