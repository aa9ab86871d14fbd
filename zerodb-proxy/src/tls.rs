//! TLS to clients (config keys under `tls:`) and to datasources
//! (`datahosts[].tls`), on rustls with the `ring` provider.
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
    /// A datasource's host cannot be checked against a certificate.
    #[error("tls: {0}")]
    Name(String),
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

/// How the proxy's connections to a dataHost's datasources use TLS
/// (`datahosts[].tls.mode`), as MySQL clients name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTlsMode {
    /// In clear.
    #[default]
    Disabled,
    /// TLS when the server offers it, unverified; in clear otherwise.
    Preferred,
    /// TLS, or no connection; the certificate is not verified.
    Required,
    /// TLS with a certificate signed by `ca`; any name.
    VerifyCa,
    /// TLS with a certificate signed by `ca` for the datasource's host.
    VerifyIdentity,
}

/// TLS to a dataHost's datasources (`datahosts[].tls`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// `datahosts[].tls.mode`.
    pub mode: BackendTlsMode,
    /// `datahosts[].tls.ca`: PEM CA certificates to verify against (needed
    /// by `verify_ca` and `verify_identity`).
    pub ca: Option<PathBuf>,
}

/// What a connection to a datasource needs to start TLS.
#[derive(Debug)]
pub struct BackendTls {
    /// The mode it was built for (never `Disabled`).
    pub mode: BackendTlsMode,
    /// The rustls client config.
    pub config: Arc<rustls::ClientConfig>,
}

impl BackendTlsConfig {
    /// The client side of TLS these settings describe; `None` for
    /// `disabled`.
    pub fn client(&self) -> Result<Option<Arc<BackendTls>>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match self.mode {
            BackendTlsMode::Disabled => return Ok(None),
            BackendTlsMode::Preferred | BackendTlsMode::Required => Arc::new(Verifier {
                webpki: None,
                names: false,
                refuse: false,
                provider: provider.clone(),
            }),
            BackendTlsMode::VerifyCa | BackendTlsMode::VerifyIdentity => {
                let Some(ca) = &self.ca else {
                    return Err(TlsError::Incomplete(
                        "`verify_ca` and `verify_identity` need `ca`",
                    ));
                };
                let mut roots = rustls::RootCertStore::empty();
                let pem_err = |reason: String| TlsError::Pem {
                    what: "ca",
                    path: ca.display().to_string(),
                    reason,
                };
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem_err(e.to_string()))? {
                    roots
                        .add(cert.map_err(|e| pem_err(e.to_string()))?)
                        .map_err(|e| pem_err(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(pem_err("no certificate in it".into()));
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| pem_err(e.to_string()))?;
                Arc::new(Verifier {
                    webpki: Some(webpki),
                    names: self.mode == BackendTlsMode::VerifyIdentity,
                    refuse: false,
                    provider: provider.clone(),
                })
            }
        };
        Ok(Some(Arc::new(BackendTls::with(
            self.mode, provider, verifier,
        )?)))
    }

    /// [`Self::client`], or when that fails (a CA file gone since the
    /// config was checked), TLS that accepts no server: never clear
    /// where the config asked for TLS.
    pub fn client_or_refusing(&self) -> Option<Arc<BackendTls>> {
        self.client().unwrap_or_else(|e| {
            tracing::error!(error = %e, "no datasource of this dataHost will be reached");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(Verifier {
                webpki: None,
                names: false,
                refuse: true,
                provider: provider.clone(),
            });
            BackendTls::with(BackendTlsMode::Required, provider, verifier)
                .ok()
                .map(Arc::new)
        })
    }
}

impl BackendTls {
    fn with(
        mode: BackendTlsMode,
        provider: Arc<rustls::crypto::CryptoProvider>,
        verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    ) -> Result<Self, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            mode,
            config: Arc::new(config),
        })
    }
}

/// Checks a datasource's certificate as the mode asks: its chain (with
/// `webpki`) and its name (with `names`); the handshake's signatures
/// always. With `refuse`, no certificate passes.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    names: bool,
    refuse: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::client::danger::ServerCertVerified;
        use rustls::{CertificateError, Error};
        if self.refuse {
            return Err(Error::General(
                "the dataHost's TLS settings could not be read".into(),
            ));
        }
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The name a datasource's certificate is checked against: the host of
/// its `host:port` address.
pub fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        TlsError::Name(format!(
            "`{host}` is no name to check a certificate against: {e}"
        ))
    })
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
