//! zerodb-proxy: the MySQL proxy binary. All logic lives in zerodb-core.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use zerodb_core::config::ProxyConfig;
use zerodb_core::server::Proxy;

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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZERODB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ProxyConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
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
        .block_on(run(config))
}

async fn run(config: ProxyConfig) -> anyhow::Result<()> {
    let metrics = zerodb_core::admin::install_metrics().map_err(anyhow::Error::msg)?;
    let admin_addr = config.admin.clone();
    let proxy = Proxy::new(config).bind().await?;
    let shared = proxy.shared().clone();
    let admin = tokio::net::TcpListener::bind(&admin_addr)
        .await
        .with_context(|| format!("admin listener on {admin_addr}"))?;
    tracing::info!(admin = %admin.local_addr()?, "admin HTTP listening");
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(zerodb_core::admin::serve(
        admin,
        shared,
        Some(metrics),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    proxy.run(shutdown_signal()).await;
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
