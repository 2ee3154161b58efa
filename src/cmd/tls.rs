//! TLS flags shared by the commands that listen: `/metrics` of `run` and
//! `vault serve`, and the vault API itself.

use clap::Args;
use consentry_runtime::http::{server_tls, TlsConfig, TlsFiles};
use std::path::PathBuf;

/// `/metrics` over TLS (both flags, or neither).
#[derive(Args, Clone, Debug, Default)]
pub struct MetricsTlsArgs {
    /// Serve /metrics and /healthz over TLS with this certificate chain (PEM).
    #[arg(long, env = "CONSENTRY_METRICS_TLS_CERT", requires = "metrics_tls_key")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --metrics-tls-cert.
    #[arg(long, env = "CONSENTRY_METRICS_TLS_KEY", requires = "metrics_tls_cert")]
    pub metrics_tls_key: Option<PathBuf>,
}

impl MetricsTlsArgs {
    pub fn config(&self) -> anyhow::Result<Option<TlsConfig>> {
        match (&self.metrics_tls_cert, &self.metrics_tls_key) {
            (Some(cert), Some(key)) => Ok(Some(server_tls(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            })?)),
            _ => Ok(None),
        }
    }
}
