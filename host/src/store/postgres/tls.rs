//! How this server reaches PostgreSQL: the driver's config and TLS, from
//! one `--database-url`.
//!
//! `sslmode` means what it means to libpq: `disable` never encrypts;
//! `prefer` (the default) encrypts when the server offers it and `require`
//! insists, both without checking who answers unless a root certificate is
//! given (`sslrootcert`, or libpq's `~/.postgresql/root.crt`), when they
//! check as `verify-ca` does; `verify-ca` checks the chain up to that root;
//! `verify-full` also that the certificate names the host connected to.
//! `sslcert`/`sslkey` show a client certificate. tokio-postgres parses only
//! the first three modes and no file options, so they are taken out of the
//! URL here and the driver is told to require TLS for the two others.

use super::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connection's driver half, to be polled (spawned) by its owner.
pub(super) type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Where the database is and how to talk to it.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, StoreError> {
        let (rest, options) = take_tls_options(url);
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::BadUrl(e.to_string()))?;
        let mode = match options.mode.as_deref() {
            None | Some("prefer") => Mode::Prefer,
            Some("disable") => Mode::Disable,
            // libpq's `allow` tries without TLS first; preferring it is
            // never weaker.
            Some("allow") => Mode::Prefer,
            Some("require") => Mode::Require,
            Some("verify-ca") => Mode::VerifyCa,
            Some("verify-full") => Mode::VerifyFull,
            Some(other) => {
                return Err(StoreError::BadUrl(format!(
                    "sslmode: {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        config.ssl_mode(match mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        let tls = client_config(mode, &options)?;
        Ok(Target {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    pub(super) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

#[derive(Default)]
struct TlsOptions {
    mode: Option<String>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// The URL without the TLS options, and those options.
fn take_tls_options(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let mut take = |key: &str, value: &str| -> bool {
        let slot = match key {
            "sslmode" => &mut options.mode,
            "sslrootcert" => &mut options.root_cert,
            "sslcert" => &mut options.cert,
            "sslkey" => &mut options.key,
            _ => return false,
        };
        *slot = Some(value.to_string());
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), options);
        };
        let kept: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .filter(|(key, value)| !take(key, value))
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        if kept.is_empty() {
            return (base.to_string(), options);
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish();
        return (format!("{base}?{query}"), options);
    }
    // `key=value key=value`; these options' values have no spaces.
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| {
            pair.split_once('=')
                .is_none_or(|(key, value)| !take(key, value))
        })
        .collect();
    (kept.join(" "), options)
}

fn client_config(mode: Mode, options: &TlsOptions) -> Result<rustls::ClientConfig, StoreError> {
    let provider = crate::tls::provider();
    let root_cert = options.root_cert.as_ref().map(PathBuf::from).or_else(|| {
        let default = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
        default.exists().then_some(default)
    });
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            return Err(StoreError::BadUrl(
                "sslrootcert: sslmode=verify-ca and verify-full need the CA certificate that signed the database's (sslrootcert=FILE)".into(),
            ));
        }
        (Mode::Disable | Mode::Prefer | Mode::Require, None) => Arc::new(Lenient {
            provider: provider.clone(),
            chain: None,
        }),
        (mode, Some(path)) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates =
                crate::tls::read_certificates(&path).map_err(bad_file("sslrootcert"))?;
            roots.add_parsable_certificates(certificates);
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        StoreError::BadUrl(format!("sslrootcert: {}: {e}", path.display()))
                    })?;
            if mode == Mode::VerifyFull {
                webpki as Arc<dyn ServerCertVerifier>
            } else {
                Arc::new(Lenient {
                    provider: provider.clone(),
                    chain: Some(webpki),
                })
            }
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::internal(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&options.cert, &options.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain =
                crate::tls::read_certificates(Path::new(cert)).map_err(bad_file("sslcert"))?;
            let key = crate::tls::read_private_key(Path::new(key)).map_err(bad_file("sslkey"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| StoreError::BadUrl(format!("sslcert/sslkey: {e}")))
        }
        _ => Err(StoreError::BadUrl(
            "sslcert/sslkey: a client certificate needs both".into(),
        )),
    }
}

fn bad_file(option: &'static str) -> impl Fn(crate::tls::TlsError) -> StoreError {
    move |e| StoreError::BadUrl(format!("{option}: {e}"))
}

/// The modes short of `verify-full` (libpq's meanings): `prefer` and
/// `require` without a root encrypt whoever answers (`chain` is `None`);
/// `verify-ca` needs the chain to end at the root, with any name. webpki
/// checks the chain before the name, so a name error means the chain held.
/// The handshake's signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_leave_the_url_and_the_rest_stays() {
        let (rest, o) = take_tls_options(
            "postgres://u:p@db:5432/host?sslmode=verify-full&application_name=a&sslrootcert=%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@db:5432/host?application_name=a");
        assert_eq!(o.mode.as_deref(), Some("verify-full"));
        assert_eq!(o.root_cert.as_deref(), Some("/ca.pem"));
        let (rest, o) = take_tls_options("host=db user=u sslmode=require dbname=host");
        assert_eq!(rest, "host=db user=u dbname=host");
        assert_eq!(o.mode.as_deref(), Some("require"));
        let (rest, _) = take_tls_options("postgres://db/host?sslmode=disable");
        assert_eq!(rest, "postgres://db/host");
    }

    #[test]
    fn an_unknown_mode_or_a_verify_mode_without_a_root_is_refused_by_name() {
        let Err(e) = Target::parse("postgres://db/host?sslmode=verify") else {
            panic!("accepted");
        };
        assert!(e.to_string().contains("sslmode"), "{e}");
        let Err(e) =
            Target::parse("postgres://db/host?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        else {
            panic!("accepted");
        };
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }
}
