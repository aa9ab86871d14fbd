//! TLS on the control plane (feature `tls`): the rustls configs
//! [`ControlTlsConfig`] describes, and (feature `admin-http`) a listener
//! that serves an axum router over TLS.

use crate::config::{ConfigError, ControlTlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
#[cfg(feature = "admin-http")]
use {
    std::net::SocketAddr,
    std::time::Duration,
    tokio::net::{TcpListener, TcpStream},
    tokio_rustls::server::TlsStream,
};

/// Longest a caller may take over its TLS handshake.
#[cfg(feature = "admin-http")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn invalid(what: &str, path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("control_tls.{what}: {}: {e}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid("cert", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("cert", path, e))?;
    if certs.is_empty() {
        return Err(invalid("cert", path, "no certificate in it"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in chain(path)? {
        roots.add(c).map_err(|e| invalid("ca", path, e))?;
    }
    Ok(Arc::new(roots))
}

/// This process's certificate and key, if it has them.
fn identity(
    cfg: &ControlTlsConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, ConfigError> {
    if let Some(p) = cfg.problem() {
        return Err(ConfigError::Invalid(p.into()));
    }
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Ok(None);
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("key", key, e))?;
    Ok(Some((chain(cert)?, key)))
}

/// The listener's TLS: `None` without `cert`. With `mutual`, callers must
/// present a certificate signed by `ca`.
pub fn server_config(
    cfg: &ControlTlsConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let Some((certs, key)) = identity(cfg)? else {
        return Ok(None);
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("control_tls: {e}")))?;
    let builder = match (&cfg.ca, cfg.mutual) {
        (Some(ca), true) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                    .build()
                    .map_err(|e| invalid("ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Invalid(format!("control_tls: {e}")))?;
    Ok(Some(Arc::new(config)))
}

/// The TLS of calls to peers: `None` without `ca`. Peers are checked
/// against `ca` and the host they are dialled by; with `mutual`, this
/// process presents its own certificate.
pub fn client_config(
    cfg: &ControlTlsConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
    let Some(ca) = &cfg.ca else {
        return Ok(None);
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("control_tls: {e}")))?
        .with_root_certificates(roots(ca)?);
    let config = match identity(cfg)? {
        Some((certs, key)) if cfg.mutual => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| ConfigError::Invalid(format!("control_tls: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

#[cfg(feature = "admin-http")]
/// A listener whose connections arrive with their TLS handshake done
/// (each handshake runs in a task of its own, so a slow caller delays
/// nobody; one failed or slower than 10 s is dropped).
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

#[cfg(feature = "admin-http")]
impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("zerodb_control_tls_refused_total").increment(1);
                            tracing::info!(%peer, error = %e, "control-plane TLS handshake failed");
                        }
                        Err(_) => tracing::info!(%peer, "control-plane TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

#[cfg(feature = "admin-http")]
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accept task is gone (it never ends while this lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
