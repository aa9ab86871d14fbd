//! Starting a keeper as its config says: alone on the file store, or as
//! one of a group on etcd, with the election running beside it.

use crate::agents::AgentSet;
use crate::keeper::{Keeper, KeeperError};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zerodb_core::config::{KeeperConfig, StoreKind};

/// Opens the keeper `cfg` describes: on the file store
/// ([`Keeper::open`]), or on etcd, where its election runs until `stop`
/// changes; the handle ends once it gave the lead up.
pub async fn start(
    cfg: KeeperConfig,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<Keeper>, Option<JoinHandle<()>>), KeeperError> {
    match cfg.store {
        StoreKind::File => Ok((Keeper::open(cfg).await?, None)),
        StoreKind::Etcd => on_etcd(cfg, stop).await,
    }
}

#[cfg(feature = "etcd")]
async fn on_etcd(
    cfg: KeeperConfig,
    stop: watch::Receiver<bool>,
) -> Result<(Arc<Keeper>, Option<JoinHandle<()>>), KeeperError> {
    use crate::lead::Leadership;
    let etcd = crate::etcd::Etcd::connect(&cfg).await?;
    let agents = AgentSet::from_config(&cfg);
    let local = agents.local();
    let lead = Arc::new(Leadership::follower());
    let keeper = Keeper::build(cfg, etcd.clone(), Arc::new(agents), local, lead.clone()).await?;
    let election = tokio::spawn(crate::etcd::campaign(keeper.clone(), etcd, lead, stop));
    Ok((keeper, Some(election)))
}

#[cfg(not(feature = "etcd"))]
async fn on_etcd(
    _cfg: KeeperConfig,
    _stop: watch::Receiver<bool>,
) -> Result<(Arc<Keeper>, Option<JoinHandle<()>>), KeeperError> {
    let _ = AgentSet::from_config;
    Err(KeeperError::StoreNotBuilt("etcd"))
}
