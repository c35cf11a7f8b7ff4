//! The TLS trust of one granted endpoint: the system's roots, or only the
//! entry's own CA (a private endpoint's CA is known, and trusting every
//! public CA as well would only widen who can impersonate it), and a client
//! certificate when the entry gives one. rustls with ring: aws-lc-rs would
//! need cmake to build.

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The files one endpoint's TLS is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// The system's roots, read once: reading them costs milliseconds, and
/// every https entry without its own CA shares them.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot read a system CA certificate");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates for plugins' HTTP");
        roots
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

/// rustls deprecates ring's provider for lacking post-quantum key exchange;
/// that is the price of not needing cmake (aws-lc-rs).
#[allow(deprecated)]
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The client configuration of one https endpoint, or why it cannot be made.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let roots = match &files.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            roots
        }
        None => {
            let roots = system_roots().clone();
            if roots.is_empty() {
                return Err(
                    "no system CA certificates were found: give the endpoint's ca_file".into(),
                );
            }
            roots
        }
    };
    let provider = Arc::new(ring());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match (&files.client_cert_file, &files.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("client_cert_file and client_key_file go together".into()),
    };
    // The send path speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
