//! TLS on the control plane (`control_tls:` in every role's config).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// TLS between proxies, keepers and agents (`control_tls:`).
///
/// With `cert` and `key`, this process serves its control listener over
/// TLS (HTTPS, WSS). With `ca`, it calls its peers over TLS and checks
/// their certificates against `ca`, by the host of the address it
/// dials. With `mutual`, its listener also asks callers for a certificate
/// signed by `ca`, and it presents `cert` when it calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlTlsConfig {
    /// `control_tls.cert`: this process's certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// `control_tls.key`: its private key, PEM.
    pub key: Option<PathBuf>,
    /// `control_tls.ca`: the CA that signed the peers' certificates, PEM.
    pub ca: Option<PathBuf>,
    /// `control_tls.mutual`: callers must present a certificate signed by
    /// `ca`.
    pub mutual: bool,
}

impl ControlTlsConfig {
    /// What is wrong with these settings, if anything (files are read
    /// when the configs are built, see `admin_http`).
    pub fn problem(&self) -> Option<&'static str> {
        if self.cert.is_some() != self.key.is_some() {
            return Some("control_tls: `cert` and `key` go together");
        }
        if self.mutual && (self.ca.is_none() || self.cert.is_none()) {
            return Some("control_tls: `mutual` needs `ca`, `cert` and `key`");
        }
        None
    }

    /// Whether calls to peers go over TLS.
    pub fn calls_over_tls(&self) -> bool {
        self.ca.is_some()
    }
}
