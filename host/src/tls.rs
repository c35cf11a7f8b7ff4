//! TLS for the API server, its clients (CLI, worker, replicas forwarding
//! writes) and PostgreSQL: rustls with the ring provider, certificates and
//! keys read from PEM files.
//!
//! Invariants:
//! - A server certificate is replaced only by one that loaded whole (chain
//!   and matching key): a half-written or wrong file during a rotation
//!   keeps the old one serving and is logged, never a server without a
//!   certificate.
//! - A client verifies the server: system roots plus the operator's CA
//!   file; there is no switch that turns verification off for the API.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the server looks at its certificate files for a change (a
/// rotation by cert-manager or certbot replaces them without a signal).
const RELOAD_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// ring, not aws-lc-rs: aws-lc-rs needs cmake and minutes of C on every
/// cold build. rustls deprecates ring's provider for lacking post-quantum
/// key exchange; that is the price (docs/decisions).
#[allow(deprecated)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The process's rustls provider (ring). reqwest is built without one and
/// takes the process default, so every client needs this first; calling it
/// again does nothing.
pub fn install_default_provider() {
    // Err only when one is installed already, which is what we want.
    let _ = ring().install_default();
}

/// The process's provider, installed first if need be.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    install_default_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(ring()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate file: {}", pem_error(&e)),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// The first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a PEM private key: {}", pem_error(&other)),
        },
    })
}

/// pki-types shows a missing end line as bytes; say it as text.
fn pem_error(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section has no `-----END {}-----` line (a half-written file?)",
            String::from_utf8_lossy(end_marker)
        ),
        other => other.to_string(),
    }
}

/// The server's certificate and key, reloaded from their files on SIGHUP
/// or when the files change, so rotation needs no restart. Each handshake
/// takes the one current then.
#[derive(Debug)]
pub struct ServerCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and sizes when last loaded.
    loaded_from: Mutex<(FileStamp, FileStamp)>,
}

type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl ServerCertificate {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerCertificate>, TlsError> {
        let stamps = (stamp(cert_path), stamp(key_path));
        let key = certified_key(cert_path, key_path)?;
        Ok(Arc::new(ServerCertificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            loaded_from: Mutex::new(stamps),
        }))
    }

    /// Loads the files again; on an error the current certificate stays.
    /// The files' state is noted either way: a broken file is reported
    /// once, not at every look, and tried again when it changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Ok(mut loaded_from) = self.loaded_from.lock() {
            *loaded_from = (stamp(&self.cert_path), stamp(&self.key_path));
        }
        let key = certified_key(&self.cert_path, &self.key_path)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        Ok(())
    }

    fn files_changed(&self) -> bool {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        self.loaded_from.lock().is_ok_and(|seen| *seen != now)
    }

    /// A TLS acceptor offering HTTP/2 and HTTP/1.1 (ALPN).
    pub fn acceptor(self: &Arc<ServerCertificate>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                path: self.cert_path.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads on SIGHUP and whenever the files change, for the life of
    /// the process.
    pub fn spawn_reloader(self: &Arc<ServerCertificate>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut poll = tokio::time::interval(RELOAD_POLL);
            loop {
                let cause = tokio::select! {
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                    _ = poll.tick() => {
                        if !this.files_changed() {
                            continue;
                        }
                        "the files changed"
                    }
                };
                match this.reload() {
                    Ok(()) => tracing::info!(
                        cert = %this.cert_path.display(),
                        cause,
                        "TLS certificate reloaded"
                    ),
                    Err(error) => tracing::error!(
                        %error,
                        cause,
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        })
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

fn certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert_path)?;
    let key = read_private_key(key_path)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Invalid {
        path: key_path.to_path_buf(),
        message: format!(
            "does not go with the certificate in {}: {e}",
            cert_path.display()
        ),
    })
}

/// What an API client trusts and shows: extra roots (a private CA) on top
/// of the system's, and optionally its own certificate for proxies that
/// ask for one (mTLS).
#[derive(Clone, Default)]
pub struct ClientTls {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl ClientTls {
    pub fn load(
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<ClientTls, TlsError> {
        let mut tls = ClientTls::default();
        if let Some(path) = ca_file {
            tls.roots = read_certificates(path)?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        }
        match (client_cert, client_key) {
            (Some(cert), Some(key)) => {
                certified_key(cert, key)?;
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                tls.identity =
                    Some(
                        reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::Invalid {
                            path: cert.to_path_buf(),
                            message: e.to_string(),
                        })?,
                    );
            }
            (None, None) => {}
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsError::Invalid {
                    path: path.to_path_buf(),
                    message: "a client certificate needs both --client-cert and --client-key"
                        .into(),
                });
            }
        }
        Ok(tls)
    }

    /// A reqwest builder that speaks TLS as configured.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        install_default_provider();
        let mut builder = reqwest::Client::builder().tls_certs_merge(self.roots.iter().cloned());
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
    }
}
