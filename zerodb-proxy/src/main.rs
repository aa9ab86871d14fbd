//! zerodb-proxy: the MySQL proxy binary. The logic is the `zerodb_proxy`
//! library (and, with `keeper: embedded`, `zerodb_keeper`); this binary
//! wires it to its listeners.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use zerodb_core::admin_http::{install_metrics, serve_http};
use zerodb_core::process;
use zerodb_proxy::cluster::Cluster;
use zerodb_proxy::config::ProxyConfig;
use zerodb_proxy::server::Proxy;

/// zeroDB's fault-tolerant MySQL proxy.
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
    let config = ProxyConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
        for w in config.warnings() {
            println!("{w}");
        }
        println!(
            "config OK: {} dataHost(s), {} user(s)",
            config.datahosts.len(),
            config.users.len()
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config, args.config))
}

async fn run(config: ProxyConfig, path: PathBuf) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let proxy = Proxy::new(config.clone()).bind().await?;
    let shared = proxy.shared().clone();
    let _ = shared.config_path.set(path);
    let reloading = shared.clone();
    process::on_sighup(move || {
        tracing::info!("SIGHUP: reading the config again");
        // The outcome is logged and counted by `from_file`.
        let _ = zerodb_proxy::reload::from_file(&reloading);
    });
    let mut admin = zerodb_proxy::admin::router(shared.clone(), Some(metrics.clone()));

    // The cluster: a keeper of our own, or the one configured.
    let joined = zerodb_proxy::embedded::join(&shared, stop_rx.clone()).await?;
    if let Some(keeper) = joined.as_ref().and_then(|j| j.keeper.clone()) {
        // The proxy's operator tokens (a reload reads them again), else
        // the keeper's own rule: the cluster token.
        let operators = match config.admin_token_file {
            Some(_) => shared.operators.clone(),
            None => zerodb_keeper::http::operator_tokens(keeper.config()),
        };
        admin = admin.nest(
            "/keeper",
            zerodb_keeper::http::admin_router(keeper, Some(metrics.clone()), operators),
        );
    }
    let cluster: Option<Arc<Cluster>> = joined.map(|j| j.cluster);

    let admin_task = serve_http("admin HTTP", &config.admin, admin, stop_rx.clone()).await?;
    let leaving: Option<Arc<Cluster>> = cluster.clone();
    proxy
        .run(async move {
            process::shutdown_signal().await;
            if let Some(c) = leaving {
                c.leave("shutting down").await;
            }
        })
        .await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    Ok(())
}
