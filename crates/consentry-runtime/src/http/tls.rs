//! The server's TLS configuration from PEM files: certificate chain,
//! private key and, for mutual TLS, the CA of its callers.

use super::*;

/// A server's TLS configuration, as [`server_tls`] builds it.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Where a server's certificate chain, private key and (for mutual TLS)
/// the CA that signs its callers' certificates are, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

pub(super) fn tls_error(what: &'static str, path: &Path, detail: impl ToString) -> HttpError {
    HttpError::Tls {
        what,
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

pub(super) fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(what, path, pem_detail(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, path, pem_detail(&e)))?;
    if certs.is_empty() {
        return Err(tls_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A PEM error without anything read from the file (an I/O error names
/// its kind only).
pub(super) fn pem_detail(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {}", io.kind()),
        E::NoItemsFound => "holds no PEM item of the expected kind".into(),
        _ => "is not valid PEM".into(),
    }
}

/// The server's TLS configuration: TLS 1.2 and 1.3 by ring, ALPN
/// `http/1.1`, client certificates required and checked against
/// `client_ca` when given.
pub fn server_tls(files: &TlsFiles) -> Result<TlsConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error("private key", &files.key, pem_detail(&e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("certificate", &files.cert, e))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("client CA", ca)? {
                roots.add(cert).map_err(|e| tls_error("client CA", ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| tls_error("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("certificate and key", &files.cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
