//! A custom proxy built on the zerodb-proxy library: everything the
//! standalone zerodb-proxy does (no failover: no keeper), plus a
//! hook of its own that refuses `UPDATE` and `DELETE` without a `WHERE`
//! clause, answering with MySQL's own error for it (1175, as the server does
//! under `sql_safe_updates`).
//!
//!     cargo run -p zerodb-examples --bin guarded-proxy -- --config proxy.yaml

#![forbid(unsafe_code)]

use std::sync::Arc;
use zerodb_proxy::config::ProxyConfig;
use zerodb_proxy::errors::ClientError;
use zerodb_proxy::hooks::{StatementContext, StatementHook};
use zerodb_proxy::server::Proxy;
use zerodb_proxy::sql;

/// Refuses whole-table writes.
struct NoUnboundedWrites;

impl StatementHook for NoUnboundedWrites {
    fn check(&self, ctx: &StatementContext<'_>, text: &[u8]) -> Result<(), ClientError> {
        let kw = sql::first_keyword(text);
        let is_write = kw.starts_with(b"UPDATE\0") || kw.starts_with(b"DELETE\0");
        if is_write && !contains_word(text, b"WHERE") {
            return Err(ClientError::new(
                1175,
                "HY000",
                format!(
                    "guarded-proxy: {} without WHERE refused for user '{}' on dataHost '{}'",
                    String::from_utf8_lossy(kw.split(|b| *b == 0).next().unwrap_or_default()),
                    ctx.user,
                    ctx.datahost
                ),
            ));
        }
        Ok(())
    }
}

fn contains_word(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len()).enumerate().any(|(i, w)| {
        let before = i == 0 || !text[i - 1].is_ascii_alphanumeric();
        let after = text
            .get(i + word.len())
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        before && after && w.eq_ignore_ascii_case(word)
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => path.clone(),
        [path] => path.clone(),
        _ => anyhow::bail!("usage: guarded-proxy --config FILE"),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let config = ProxyConfig::load(path.as_ref())?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let admin_addr = config.admin.clone();
        let proxy = Proxy::new(config)
            .with_hook(Arc::new(NoUnboundedWrites))
            .bind()
            .await?;
        // The same admin surface as zerodb-proxy, metrics included.
        let metrics = zerodb_core::admin_http::install_metrics()?;
        let admin = tokio::net::TcpListener::bind(&admin_addr).await?;
        tokio::spawn(zerodb_proxy::admin::serve(
            admin,
            proxy.shared().clone(),
            Some(metrics),
            std::future::pending(),
        ));
        proxy
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        Ok(())
    })
}
