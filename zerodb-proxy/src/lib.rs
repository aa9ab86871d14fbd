//! zeroDB's MySQL proxy: clients speak the MySQL protocol to it; it
//! authenticates them itself, routes each session to the active
//! datasource of its dataHost, and relays results as raw bytes. When the
//! active datasource is swapped (by the keeper, or by an embedder), every
//! session moves to the new one between statements with its state
//! replayed; nobody reconnects.
//!
//! * [`protocol`] — framing, the packets the proxy writes, and the
//!   response parser that lets rows pass as raw bytes (no I/O);
//! * [`conn`], [`tls`] — a framed connection over a socket, in clear or
//!   over TLS;
//! * [`auth`], [`users`] — the proxy's user list and checking clients
//!   against it;
//! * [`backend`], [`pool`] — connections to datasources;
//! * [`topology`] — dataHosts and their active datasource in an
//!   `ArcSwap`, swapped under strictly increasing epochs;
//! * [`health`] — probing datasources;
//! * [`session`] — one client session;
//! * [`server`] — the accept loop, session registry and graceful stop;
//! * [`workers`] — session threads, each with its own event loop;
//! * [`config`], [`limits`], [`reload`] — what the proxy reads, the
//!   bounds it keeps on each client, and reading the config again;
//! * `cluster` (feature `cluster`) — the proxy's part in a cluster: the
//!   keeper connection, switch requests, the rules of SPEC §4;
//! * `admin` (feature `admin-http`) — `/health`, `/status`, `/metrics`;
//! * `embedded` (feature `embedded-keeper`) — joining the cluster the
//!   config names, running the keeper in-process for `keeper: embedded`.
//!
//! # Embedding a proxy
//!
//! Without failover (no keeper), the proxy serves the configured active
//! datasource, and the embedder swaps it under a newer epoch; every session
//! moves at its next statement:
//!
//! ```
//! use zerodb_proxy::{config::ProxyConfig, server::Proxy};
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyConfig::from_yaml(r#"
//! listen: 127.0.0.1:0
//! users: [{name: app, password: app-pw}]
//! datahosts:
//!   - name: dh1
//!     user: zerodb
//!     datasources: [{name: m1, addr: "127.0.0.1:3306"}, {name: m11, addr: "127.0.0.1:3316"}]
//! "#)?;
//! let proxy = Proxy::new(config).bind().await?;
//! let swap = proxy.shared().topology.swap_active("dh1", "m11", 1)?;
//! assert_eq!((swap.from.as_str(), swap.to.as_str()), ("m1", "m11"));
//! // Serves until the future resolves (here at once), then drains.
//! proxy.run(async {}).await;
//! # Ok(()) }
//! ```
//!
//! With failover, the config names a keeper (`keeper: host:port`, or
//! `embedded` to run it in this process, feature `embedded-keeper`) and
//! [`embedded::join`] joins it; switches then come from the keeper:
//!
//! ```
//! use zerodb_proxy::{config::ProxyConfig, embedded, server::Proxy};
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let state = std::env::temp_dir().join(format!("zerodb-doc-{}", std::process::id()));
//! let config = ProxyConfig::from_yaml(&format!(r#"
//! listen: 127.0.0.1:0
//! keeper: embedded
//! embedded_keeper: {{state_dir: "{}"}}
//! users: [{{name: app, password: app-pw}}]
//! datahosts:
//!   - name: dh1
//!     user: zerodb
//!     datasources: [{{name: m1, addr: "127.0.0.1:3306"}}, {{name: m11, addr: "127.0.0.1:3316"}}]
//! "#, state.display()))?;
//! let proxy = Proxy::new(config).bind().await?;
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let joined = embedded::join(proxy.shared(), stop).await?.expect("a keeper is configured");
//! assert!(joined.keeper.is_some(), "the keeper runs in this process");
//! proxy.run(async {}).await;
//! stop_tx.send(true)?;
//! # // Its in-process agents may still be writing their state: best effort.
//! # let _ = std::fs::remove_dir_all(&state);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::too_many_lines)]

pub mod accounts;
#[cfg(feature = "admin-http")]
pub mod admin;
pub mod auth;
pub mod backend;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod conn;
#[cfg(feature = "embedded-keeper")]
pub mod embedded;
pub mod errors;
pub mod fuzz;
pub mod health;
pub mod hooks;
pub mod limits;
pub mod pool;
pub mod probe;
pub mod protocol;
pub mod registry;
pub mod reload;
pub mod server;
pub mod session;
pub mod shared;
pub mod sql;
pub mod tls;
pub mod topology;
pub mod users;
pub mod workers;
