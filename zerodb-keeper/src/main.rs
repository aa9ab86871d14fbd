//! zerodb-keeper: decides datasource switches (SPEC §3). The logic is the
//! `zerodb_keeper` library; this binary wires it to its two listeners.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use zerodb_core::admin_http::{install_metrics, serve_http};
use zerodb_core::config::KeeperConfig;
use zerodb_core::process;
use zerodb_keeper::http;

/// zeroDB's keeper: proxies and agents register with it; it decides
/// switches, persists the topology and pushes it to every proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Config file (YAML, or TOML when it ends in .toml). ZERODB_* environment
    /// variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Planned switchover of a dataHost, through a running keeper's admin
    /// API: clients see a pause, not an error.
    Switchover {
        /// The keeper's admin address.
        #[arg(long, default_value = "127.0.0.1:9700")]
        admin: String,
        /// The cluster token.
        #[arg(long)]
        token: String,
        #[arg(long)]
        datahost: String,
        /// The standby to promote (default: the most advanced one).
        #[arg(long)]
        target: Option<String>,
        /// Promote the target even if it is not a caught-up standby of the
        /// source (what it lacks is lost).
        #[arg(long, requires = "target")]
        force: bool,
    },
    /// Confirm the membership after the keeper adopted a topology a proxy
    /// or agent reported (its state was lost): the proxies registered now,
    /// and those named, are all there are. Automatic switches resume.
    Bootstrap {
        /// The keeper's admin address.
        #[arg(long, default_value = "127.0.0.1:9700")]
        admin: String,
        /// The cluster token.
        #[arg(long)]
        token: String,
        /// A proxy that is a member even if it is not registered now.
        #[arg(long = "proxy")]
        proxies: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    process::init_logging();
    match args.command {
        Some(Cmd::Switchover {
            admin,
            token,
            datahost,
            target,
            force,
        }) => {
            let body =
                serde_json::json!({ "datahost": datahost, "target": target, "force": force });
            return admin_post(&admin, &token, "/switchover", &body);
        }
        Some(Cmd::Bootstrap {
            admin,
            token,
            proxies,
        }) => {
            let body = serde_json::json!({ "proxies": proxies });
            return admin_post(&admin, &token, "/bootstrap", &body);
        }
        None => {}
    }
    let path = args.config.context("--config is needed")?;
    let config =
        KeeperConfig::load(&path).with_context(|| format!("loading {}", path.display()))?;
    if args.check {
        println!("config OK: {} dataHost(s)", config.datahosts.len());
        if config.store == zerodb_core::config::StoreKind::Etcd {
            println!(
                "store: etcd at {} under {}, lease {:?}; proxies and agents reach this keeper at {}",
                config.etcd.endpoints.join(","),
                config.etcd.prefix,
                config.etcd.lease_ttl,
                config.advertised()
            );
            if !cfg!(feature = "etcd") {
                anyhow::bail!("this zerodb-keeper was built without the `etcd` feature");
            }
        }
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

async fn run(config: KeeperConfig) -> anyhow::Result<()> {
    // Read before anything uses them: a file that does not load stops the
    // keeper here rather than leaving its calls in clear.
    zerodb_core::control_tls::client_config(&config.control_tls)?;
    let metrics = install_metrics()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (keeper, election) = zerodb_keeper::start(config.clone(), stop_rx.clone())
        .await
        .context("opening the keeper's state")?;
    #[cfg(feature = "fault-points")]
    if let Ok(phase) = std::env::var("KEEPER_FAULT_ABORT_AFTER") {
        let phase = serde_json::from_value(serde_json::Value::String(phase.clone()))
            .with_context(|| format!("KEEPER_FAULT_ABORT_AFTER={phase}: not a phase"))?;
        keeper.abort_after(phase);
    }
    #[cfg(feature = "fault-points")]
    if let Ok(phase) = std::env::var("KEEPER_FAULT_PAUSE_AFTER") {
        let phase = serde_json::from_value(serde_json::Value::String(phase.clone()))
            .with_context(|| format!("KEEPER_FAULT_PAUSE_AFTER={phase}: not a phase"))?;
        keeper.pause_after(phase);
    }
    let control = zerodb_core::admin_http::serve_https(
        "control plane",
        &config.listen,
        http::control_router(keeper.clone()),
        stop_rx.clone(),
        zerodb_core::control_tls::server_config(&config.control_tls)?,
    )
    .await
    .with_context(|| format!("control listener on {}", config.listen))?;
    let operators = http::operator_tokens(&config);
    // SIGHUP reads the operators' token file again (a rotation); nothing
    // else of the config changes without a restart.
    let (rereading, token_file) = (operators.clone(), config.admin_token_file.clone());
    process::on_sighup(move || match &token_file {
        Some(f) => match zerodb_core::tokens::read_token_file(f) {
            Ok(t) => {
                tracing::info!(tokens = t.len(), "SIGHUP: admin_token_file read again");
                rereading.replace(t);
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: admin_token_file refused; the tokens before stay")
            }
        },
        None => tracing::info!(
            "SIGHUP: nothing to read again (no admin_token_file); restart to change the config"
        ),
    });
    let admin = match &config.admin {
        Some(addr) => Some(
            serve_http(
                "admin HTTP",
                addr,
                http::admin_router(keeper.clone(), Some(metrics), operators),
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
    if let Some(e) = election {
        // A leader gives the lead up before it exits.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), e).await;
    }
    let _ = control.await;
    if let Some(a) = admin {
        let _ = a.await;
    }
    Ok(())
}

/// POSTs `body` to a running keeper's admin API and prints the answer.
fn admin_post(
    admin: &str,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let answer: serde_json::Value = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(zerodb_agent::client::Client::new(token).post(
            admin,
            path,
            body,
            std::time::Duration::from_secs(120),
        ))
        .with_context(|| format!("{path} refused or failed"))?;
    println!("{answer}");
    Ok(())
}
