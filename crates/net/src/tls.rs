//! TLS for relay hops (protocol.md §14.1, §15): TLS 1.3 only, ALPN `h2` only, rustls with the
//! ring provider passed explicitly (no process-wide default provider is installed or read).
//!
//! Relays present self-signed certificates, so the client does not check a chain. Instead it
//! can pin the relay's ed25519 key taken from the signed relay list: the leaf's
//! SubjectPublicKeyInfo must equal that key and the handshake signature must verify under it.
//! Without a pin any certificate is accepted, as the original client does.
//!
//! This module does not open TCP connections for servers, nor know about HTTP/2; see
//! [`crate::tunnel`].

use crate::cert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, ServerConfig};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;

/// The only application protocol offered and accepted.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration could not be built or a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// PEM text could not be decoded.
    #[error("invalid PEM in {what}: {source}")]
    Pem {
        /// Which input (file name or "certificate"/"key").
        what: String,
        /// The decoder's error.
        source: io::Error,
    },
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("no CERTIFICATE block in {0}")]
    NoCertificate(String),
    /// The key PEM holds no private key block.
    #[error("no private key block in {0}")]
    NoPrivateKey(String),
    /// rustls refused the configuration (e.g. the key does not match a supported algorithm).
    #[error("TLS configuration refused: {0}")]
    Config(#[source] rustls::Error),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Connecting or the handshake did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// "TCP connect" or "TLS handshake".
        what: &'static str,
        /// The limit that was hit.
        after: Duration,
    },
    /// The relay's certificate key is not the pinned key.
    #[error(transparent)]
    PinMismatch(#[from] PinMismatch),
    /// The handshake failed for another reason.
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
}

/// The relay presented a certificate whose ed25519 key is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay certificate key mismatch: expected {}, got {}", b64(&self.expected), self.got.as_ref().map_or_else(|| "a non-ed25519 or unparsable certificate".to_string(), b64))]
pub struct PinMismatch {
    /// The pinned key (from the relay list).
    pub expected: [u8; 32],
    /// The certificate's ed25519 key, if it has one.
    pub got: Option<[u8; 32]>,
}

fn b64(key: &[u8; 32]) -> String {
    wireleap_proto::b64::encode(key)
}

impl TlsError {
    /// Sorts an I/O error out of a handshake, surfacing a pin mismatch as its own variant.
    fn from_handshake(err: io::Error) -> Self {
        let pin = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|tls| match tls {
                rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                    other.0.downcast_ref::<PinMismatch>().cloned()
                }
                _ => None,
            });
        match pin {
            Some(pin) => TlsError::PinMismatch(pin),
            None => TlsError::Handshake(err),
        }
    }
}

/// The ring provider, always passed explicitly.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first: the same security margin for a tunnel and ~30 % less CPU than AES-256
    // per nested layer; clients and servers of ours both prefer it, peers may choose otherwise.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            _ => 2,
        });
    Arc::new(provider)
}

/// A server configuration from PEM text: TLS 1.3, ALPN `h2`, no client certificates.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_named(cert_pem, "certificate", key_pem, "key")
}

/// A server configuration from `relay-cert.pem` and `relay-key.pem`.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    server_config_named(
        &cert_pem,
        &cert.display().to_string(),
        &key_pem,
        &key.display().to_string(),
    )
}

fn server_config_named(
    cert_pem: &[u8],
    cert_what: &str,
    key_pem: &[u8],
    key_what: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut rd = cert_pem;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut rd)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            what: cert_what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_what.to_string()));
    }
    let mut rd = key_pem;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut rd)
        .map_err(|source| TlsError::Pem {
            what: key_what.to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoPrivateKey(key_what.to_string()))?;

    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // Our clients never resume (each hop is a fresh session), so tickets are wasted bytes.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration: TLS 1.3, ALPN `h2`, no resumption, no chain verification;
/// with `pin`, the relay certificate's ed25519 key must equal it. `send_sni` is false for
/// inner hops, whose TLS runs inside the previous hop's stream.
pub fn client_config(pin: Option<[u8; 32]>, send_sni: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RelayVerifier { pin, algorithms }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = send_sni;
    // Resumption would let relays link a client's circuits; the original never resumes either.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a TCP connection with a timeout and disables Nagle (the tunnel does its own batching).
pub async fn dial_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, TlsError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| TlsError::Timeout {
            what: "TCP connect",
            after: timeout,
        })?
        .map_err(|source| TlsError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    // Not fatal: only a latency optimisation.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Runs a client TLS handshake over any byte stream (TCP, or a tunnel stream for nested
/// hops). `server_name` is sent as SNI when given; `None` sends no SNI (inner hops).
pub async fn dial_tls<IO>(
    io: IO,
    server_name: Option<&str>,
    pin: Option<[u8; 32]>,
    timeout: Duration,
) -> Result<ClientTlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let config = client_config(pin, server_name.is_some())?;
    dial_tls_with(config, io, server_name, timeout).await
}

/// [`dial_tls`] with a prepared configuration (e.g. to reuse one per pinned relay).
pub async fn dial_tls_with<IO>(
    config: Arc<ClientConfig>,
    io: IO,
    server_name: Option<&str>,
    timeout: Duration,
) -> Result<ClientTlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = match server_name {
        Some(host) => ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.to_string()))?,
        // The verifier ignores the name, and rustls never sends SNI for an IP address; the
        // config's enable_sni = false covers the rest.
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| TlsError::Timeout {
            what: "TLS handshake",
            after: timeout,
        })?
        .map_err(TlsError::from_handshake)
}

/// Runs a server TLS handshake with a timeout.
pub async fn accept_tls<IO>(
    config: Arc<ServerConfig>,
    io: IO,
    timeout: Duration,
) -> Result<ServerTlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| TlsError::Timeout {
            what: "TLS handshake",
            after: timeout,
        })?
        .map_err(TlsError::from_handshake)
}

/// Accepts any relay certificate, or only one carrying the pinned ed25519 key; always checks
/// the TLS 1.3 handshake signature against the certificate's key.
#[derive(Debug)]
struct RelayVerifier {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RelayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = self.pin {
            let got = cert::spki_pubkey(end_entity.as_ref());
            if got != Some(expected) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { expected, got })),
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable in practice: only TLS 1.3 is offered.
        Err(rustls::Error::General(
            "TLS 1.2 signature offered to a TLS 1.3-only client".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
