//! TLS to clients (config keys under `tls:`), on rustls with the `ring`
//! provider.
//!
//! A client asks for TLS in the handshake (an SSL request: its
//! capabilities with `CLIENT_SSL`, before its real answer); the session
//! then runs the TLS handshake on the same socket and reads everything
//! after through it. rustls is driven by hand, through its buffer API
//! ([`rustls::Connection::read_tls`], `write_tls`, `reader`, `writer`),
//! so the relay keeps its own non-blocking reads and writes (see
//! [`crate::conn`]). The certificate and key are read at start and at
//! each reload.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// TLS to clients (config keys under `tls:`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `tls.cert`: the certificate chain, PEM, the proxy's own first.
    /// Absent: TLS is not offered.
    pub cert: Option<PathBuf>,
    /// `tls.key`: its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// `tls.require`: refuse clients that do not use TLS (error 3159).
    pub require: bool,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `cert` without `key`, `key` without `cert`, or `require` without
    /// either.
    #[error("tls: {0}")]
    Incomplete(&'static str),
    /// A file could not be read or holds no usable PEM.
    #[error("tls.{what}: {path}: {reason}")]
    Pem {
        /// `cert` or `key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match, say).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// The rustls server config these settings describe, or `None` when
    /// TLS is not offered.
    pub fn server_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) if self.require => {
                return Err(TlsError::Incomplete("`require` needs `cert` and `key`"))
            }
            (None, None) => return Ok(None),
            _ => return Err(TlsError::Incomplete("`cert` and `key` go together")),
        };
        let pem_err = |what, path: &PathBuf, reason: String| TlsError::Pem {
            what,
            path: path.display().to_string(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err("cert", cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err("cert", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_err("cert", cert, "no certificate in it".into()));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("key", key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        Ok(Some(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_settings_are_refused() {
        let c = |cert: Option<&str>, key: Option<&str>, require| TlsConfig {
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
            require,
        };
        assert!(c(None, None, false).server_config().unwrap().is_none());
        assert!(c(None, None, true).server_config().is_err());
        assert!(c(Some("a"), None, false).server_config().is_err());
        let e = c(
            Some("/nonexistent/c.pem"),
            Some("/nonexistent/k.pem"),
            false,
        )
        .server_config()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls.cert") && e.contains("/nonexistent/c.pem"),
            "{e}"
        );
    }
}
