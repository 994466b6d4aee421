//! TLS to an external PostgreSQL: the connector that encrypts its connections and checks its
//! certificate as `sslmode` and `sslrootcert` ask, with libpq's meanings:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` | when the server offers it | only with `sslrootcert`: signed by one of its roots |
//! | `require` | always | only with `sslrootcert`: signed by one of its roots |
//! | `verify-ca` | always | signed by a root in `sslrootcert` |
//! | `verify-full` | always | signed by a root in `sslrootcert`, and names the host connected to |
//!
//! A handshake that fails says why in words an operator can act on (the certificate does not
//! match the host, is not signed by the given roots, ...); see [`HandshakeError`]. The private
//! cluster is reached over its Unix socket, where PostgreSQL has no TLS: it never comes here.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    server::ParsedCertificate,
};
use tokio_postgres::{
    Socket,
    tls::{MakeTlsConnect, TlsConnect},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connection_string::{SslMode, TlsSettings};

/// How connections to the database are made: in the clear, or over TLS as configured.
#[derive(Clone)]
pub enum DatabaseTls {
    /// No TLS: `sslmode=disable`, or the private cluster's Unix socket.
    Off,
    /// TLS with rustls, the certificate checked as `sslmode` says.
    Rustls(RustlsConnector),
}

/// Why the TLS settings cannot be used: found at start-up, before any connection is tried.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(
        "sslmode={0} checks the database's certificate, so it needs sslrootcert: the file (PEM) \
         of the root certificates that must have signed it"
    )]
    NoRootCert(SslMode),
    #[error("the sslrootcert file {path} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the sslrootcert file {path} is not a PEM file of certificates: {detail}")]
    NotPem { path: PathBuf, detail: String },
    #[error("the sslrootcert file {0} holds no certificate")]
    Empty(PathBuf),
    #[error("the sslrootcert file {path} holds a certificate that cannot be a root: {detail}")]
    BadRoot { path: PathBuf, detail: String },
    #[error("rustls refused the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

impl DatabaseTls {
    /// The connector for `settings`, with the roots in `sslrootcert` read now, so a missing
    /// or broken file stops start-up instead of every connection.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsSetupError> {
        if settings.mode == SslMode::Disable {
            return Ok(Self::Off);
        }
        let roots = match &settings.root_cert {
            Some(path) => Some(Arc::new(read_roots(path)?)),
            None if matches!(settings.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(TlsSetupError::NoRootCert(settings.mode));
            }
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Verifier {
            roots,
            check_host: settings.mode == SslMode::VerifyFull,
            provider: Arc::clone(&provider),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self::Rustls(RustlsConnector {
            inner: MakeRustlsConnect::new(config),
            root_cert: settings.root_cert.clone().map(Arc::new),
        }))
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let unreadable = |source| TlsSetupError::Unreadable {
        path: path.to_owned(),
        source,
    };
    // Read here rather than by the PEM reader, so an unreadable file says why in io's words.
    let pem = std::fs::read(path).map_err(unreadable)?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|error| TlsSetupError::NotPem {
            path: path.to_owned(),
            detail: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsSetupError::Empty(path.to_owned()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| TlsSetupError::BadRoot {
                path: path.to_owned(),
                detail: error.to_string(),
            })?;
    }
    Ok(roots)
}

/// Checks the server's certificate as far as `sslmode` asks. Without roots (`prefer` or
/// `require` with no `sslrootcert`) any certificate is taken, as libpq does: the connection
/// is encrypted, but whoever answers is not authenticated.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_host: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
            if self.check_host {
                rustls::client::verify_server_name(&certificate, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's own signatures are checked in every mode: they cost nothing and prove
    // the server holds the key of the certificate it sent.
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

/// `tokio-postgres-rustls`'s connector (which also gives SCRAM its channel binding), with
/// handshake failures said in the terms of the settings that caused them.
#[derive(Clone)]
pub struct RustlsConnector {
    inner: MakeRustlsConnect,
    root_cert: Option<Arc<PathBuf>>,
}

type InnerConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type InnerStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl MakeTlsConnect<Socket> for RustlsConnector {
    type Stream = InnerStream;
    type TlsConnect = Connect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, host)?,
            host: host.to_owned(),
            root_cert: self.root_cert.clone(),
        })
    }
}

/// One connection's handshake.
pub struct Connect {
    inner: InnerConnect,
    host: String,
    root_cert: Option<Arc<PathBuf>>,
}

impl TlsConnect<Socket> for Connect {
    type Stream = InnerStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<InnerStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let Self {
            inner,
            host,
            root_cert,
        } = self;
        Box::pin(async move {
            inner
                .connect(stream)
                .await
                .map_err(|error| HandshakeError::new(&error, &host, root_cert.as_deref()))
        })
    }
}

/// A TLS handshake with the database that failed, said in words an operator can act on.
/// Connections that fail so are reported as the database being unavailable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandshakeError(String);

impl HandshakeError {
    fn new(error: &io::Error, host: &str, root_cert: Option<&PathBuf>) -> Self {
        let roots = || match root_cert {
            Some(path) => format!("a root in sslrootcert ({})", path.display()),
            None => "a known root".to_owned(),
        };
        let cause = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        Self(match cause {
            Some(rustls::Error::InvalidCertificate(problem)) => match problem {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    format!(
                        "the database's certificate does not match host {host} \
                         (sslmode=verify-full checks the name): {problem}"
                    )
                }
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    format!("the database's certificate is not signed by {}", roots())
                }
                other => format!("the database's certificate is refused: {other}"),
            },
            Some(other) => format!("the TLS handshake with the database failed: {other}"),
            None => format!("the TLS handshake with the database failed: {error}"),
        })
    }
}
