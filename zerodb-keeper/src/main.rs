//! zerodb-keeper: decides datasource switches (SPEC §3). All logic lives in
//! zerodb-core; this binary wires the keeper to its two listeners.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use zerodb_core::config::KeeperConfig;
use zerodb_core::keeper::{http, Keeper};
use zerodb_core::process;

/// zeroDB's keeper: proxies and agents register with it; it decides
/// switches, persists the topology and pushes it to every proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Config file (YAML, or TOML when it ends in .toml). ZERODB_* environment
    /// variables override it.
    #[arg(long, short)]
    config: PathBuf,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    process::init_logging();
    let config = KeeperConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
        println!("config OK: {} dataHost(s)", config.datahosts.len());
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: KeeperConfig) -> anyhow::Result<()> {
    let metrics = zerodb_core::admin::install_metrics().map_err(anyhow::Error::msg)?;
    let keeper = Keeper::open(config.clone()).context("opening the keeper's state")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control = process::serve_http(
        "control plane",
        &config.listen,
        http::control_router(keeper.clone()),
        stop_rx.clone(),
    )
    .await
    .with_context(|| format!("control listener on {}", config.listen))?;
    let admin = match &config.admin {
        Some(addr) => Some(
            process::serve_http(
                "admin HTTP",
                addr,
                http::admin_router(keeper.clone(), Some(metrics)),
                stop_rx.clone(),
            )
            .await
            .with_context(|| format!("admin listener on {addr}"))?,
        ),
        None => None,
    };
    keeper.spawn_local_agents(config.timings.session_timeout / 8, stop_rx);
    process::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = control.await;
    if let Some(a) = admin {
        let _ = a.await;
    }
    Ok(())
}
