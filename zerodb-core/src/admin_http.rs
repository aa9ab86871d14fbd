//! What every role's admin and control HTTP surface shares (feature
//! `admin-http`): serving an axum router until a stop signal, the cluster
//! token check, and the Prometheus exporter behind `/metrics`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets (seconds) for every `*_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The Prometheus recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the Prometheus recorder for this process and keeps it trimmed.
/// Call once, early, from a binary (inside a tokio runtime).
pub fn install_metrics() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    let h = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            h.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves any router (a proxy's, a keeper's, an agent's) until `stop`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

/// Binds an HTTP listener and serves `router` on it until `stop` changes.
pub async fn serve_http(
    what: &str,
    addr: &str,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    serve_https(what, addr, router, stop, None).await
}

/// Like [`serve_http`], over TLS with `tls` when given (HTTPS, WSS).
pub async fn serve_https(
    what: &str,
    addr: &str,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let stopped = async move {
        let _ = stop.changed().await;
    };
    let local = listener.local_addr()?;
    Ok(match tls {
        None => {
            tracing::info!(listen = %local, "{what} listening");
            tokio::spawn(serve_router(listener, router, stopped))
        }
        Some(config) => {
            tracing::info!(listen = %local, "{what} listening (TLS)");
            let listener = crate::control_tls::TlsListener::new(listener, config)?;
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            })
        }
    })
}

/// `/metrics` in Prometheus text format.
pub fn metrics_response(metrics: Option<&PrometheusHandle>) -> Response {
    match metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// Refuses every request to `router` that does not carry the cluster token
/// (`Authorization: Bearer <token>`) with 401.
pub fn require_token(router: Router, token: &str) -> Router {
    require_tokens(
        router,
        crate::tokens::Tokens::new(vec![token.to_string()]),
        "cluster token",
    )
}

/// Refuses every request to `router` that does not carry one of `tokens`
/// with 401 ("`what` missing or wrong").
pub fn require_tokens(router: Router, tokens: crate::tokens::Tokens, what: &'static str) -> Router {
    router.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let tokens = tokens.clone();
            async move {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if tokens.accepts(presented) {
                    next.run(req).await
                } else {
                    metrics::counter!("zerodb_control_unauthorized_total").increment(1);
                    (
                        StatusCode::UNAUTHORIZED,
                        format!("{what} missing or wrong\n"),
                    )
                        .into_response()
                }
            }
        },
    ))
}
