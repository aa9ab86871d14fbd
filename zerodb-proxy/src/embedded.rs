//! Joining the cluster a proxy's config names (feature `embedded-keeper`):
//! the keeper at `keeper: host:port` (or the leader among several keepers
//! listed), or, with `keeper: embedded`, a keeper
//! started inside this process, listening for other proxies on
//! `embedded_keeper.listen` and doing the agents' work itself for
//! datasources without one.

use crate::cluster::Cluster;
use crate::shared::Shared;
use std::sync::Arc;
use tokio::sync::watch;
use zerodb_keeper::{Keeper, KeeperError};

/// The proxy in its cluster.
#[derive(Debug)]
pub struct Joined {
    /// The proxy's part: its keeper connection and its rules.
    pub cluster: Arc<Cluster>,
    /// The keeper this process runs, with `keeper: embedded`.
    pub keeper: Option<Arc<Keeper>>,
}

/// The embedded keeper could not start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Its state could not be opened.
    #[error("starting the embedded keeper: {0}")]
    Keeper(#[from] KeeperError),
    /// Its control listener could not be bound.
    #[error("embedded keeper listener on {addr}: {source}")]
    Listen {
        /// `embedded_keeper.listen`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Joins the cluster `shared.config` names, until `stop` changes; `None`
/// for a standalone proxy (no `keeper`).
pub async fn join(
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<Option<Joined>, JoinError> {
    let config = &shared.config;
    let Some(keeper_addr) = &config.keeper else {
        return Ok(None);
    };
    let (addr, token, keeper) = if config.embedded_keeper() {
        let mut kcfg = config.keeper_config();
        if kcfg.token.is_empty() {
            kcfg.token = zerodb_core::control::random_token();
        }
        let token = kcfg.token.clone();
        let keeper = Keeper::open(kcfg).await?;
        let listen = &config.embedded_keeper.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| JoinError::Listen {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| JoinError::Listen {
                addr: listen.clone(),
                source,
            })?
            .to_string();
        tracing::info!(listen = %addr, "embedded keeper listening");
        let mut until = stop.clone();
        let router = zerodb_keeper::http::control_router(keeper.clone());
        let stopped = async move {
            let _ = until.changed().await;
        };
        // `ProxyConfig::validate` read the files already.
        match zerodb_core::control_tls::server_config(&config.control_tls)
            .ok()
            .flatten()
        {
            Some(tls) => {
                let listener = zerodb_core::control_tls::TlsListener::new(listener, tls).map_err(
                    |source| JoinError::Listen {
                        addr: listen.clone(),
                        source,
                    },
                )?;
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                });
            }
            None => {
                tokio::spawn(zerodb_core::admin_http::serve_router(
                    listener, router, stopped,
                ));
            }
        }
        keeper.spawn_local_agents(config.cluster.heartbeat_interval, stop.clone());
        (vec![addr], token, Some(keeper))
    } else {
        let token = config.token.clone().unwrap_or_default();
        (keeper_addr.to_vec(), token, None)
    };
    let cluster = Cluster::join(shared.clone(), addr, token);
    cluster.spawn(stop);
    Ok(Some(Joined { cluster, keeper }))
}
