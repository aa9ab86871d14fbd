//! zerodb-agent: runs beside one MySQL/MariaDB server; reports its state to
//! the keeper and promotes or fences it on the keeper's order. The logic is
//! the `zerodb_agent` library; this binary wires it to its listeners.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use zerodb_agent::client::Client;
use zerodb_agent::config::AgentConfig;
use zerodb_agent::ops::MysqlOps;
use zerodb_agent::{http, AgentCore};
use zerodb_core::admin_http::{install_metrics, serve_http, serve_https};
use zerodb_core::process;

/// zeroDB's agent for one datasource.
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
    let config = AgentConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
        println!("config OK: datasource {}", config.datasource.name);
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let ds = &config.datasource;
    let ops = MysqlOps::new(
        &ds.name,
        &ds.addr,
        &ds.user,
        &ds.password,
        config.timeout,
        config.load_measure,
        ds.binlog_index.clone(),
    );
    let core = Arc::new(
        AgentCore::new(ops, config.promote_timeout)
            .with_state_dir(&config.state_dir)
            .with_context(|| format!("agent state in {}", config.state_dir.display()))?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Its admin listener only reports: nothing to guard or read again.
    process::on_sighup(|| {
        tracing::info!("SIGHUP: zerodb-agent reads nothing again; restart it to change its config");
    });
    let server_tls = zerodb_core::control_tls::server_config(&config.control_tls)?;
    let client_tls = zerodb_core::control_tls::client_config(&config.control_tls)?;
    let control = serve_https(
        "control plane",
        &config.listen,
        http::control_router(core.clone(), &config.token),
        stop_rx.clone(),
        server_tls,
    )
    .await
    .with_context(|| format!("control listener on {}", config.listen))?;
    let admin = serve_http(
        "admin HTTP",
        &config.admin,
        http::admin_router(core.clone(), Some(metrics)),
        stop_rx.clone(),
    )
    .await
    .with_context(|| format!("admin listener on {}", config.admin))?;
    let heartbeat = tokio::spawn(http::heartbeat_loop(
        core,
        Client::with_tls(&config.token, client_tls),
        config.keeper.to_vec(),
        config.listen.clone(),
        config.heartbeat_interval,
        stop_rx,
    ));
    process::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(control, admin, heartbeat);
    Ok(())
}
