//! TLS for s2s (rustls, ring): the server side asks peers for a
//! certificate without requiring one (a peer without a valid certificate
//! may still authenticate by dialback), the client side verifies the
//! peer's certificate for the domain it dialled and presents ours when
//! certificate authentication is on. Trust roots are the system's, or the
//! operator's CA file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// The ALPN protocol of direct-TLS s2s (XEP-0368).
pub const ALPN_SERVER: &[u8] = b"xmpp-server";

/// Errors while building the TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No trust roots at all.
    #[error("no trust roots: {0}")]
    NoRoots(String),
    /// rustls refused a certificate, key or root.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built.
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider of Tern's TLS servers (c2s and s2s): ring, with
/// TLS 1.3's AES-128-GCM/SHA-256 preferred over AES-256-GCM/SHA-384.
/// Both are secure (Mozilla's recommended server order puts AES-128
/// first); AES-128 encrypts faster and SHA-256 runs on the SHA
/// extensions most CPUs have, which the handshake's key schedule feels.
/// Servers using it set `ignore_client_order`, as clients list AES-256
/// first by default.
pub fn server_crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_preference(suite.suite()));
    provider
}

fn suite_preference(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    }
}

/// The rustls configurations of federation.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    /// Inbound streams (STARTTLS and direct TLS).
    pub server: Arc<rustls::ServerConfig>,
    /// Outbound STARTTLS.
    pub client: Arc<rustls::ClientConfig>,
    /// Outbound direct TLS (ALPN `xmpp-server`).
    pub client_direct: Arc<rustls::ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl TlsConfigs {
    /// Builds the configurations around our certificate `chain` and `key`.
    /// `ca_file` replaces the system's trust roots; `present_certificate`
    /// sends our certificate to peers we dial (for SASL EXTERNAL).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca_file: Option<&Path>,
        present_certificate: bool,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(server_crypto_provider());
        let roots = Arc::new(trust_roots(ca_file)?);
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(OptionalClientCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_SERVER.to_vec()];
        server.ignore_client_order = true;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let client = if present_certificate {
            builder.with_client_auth_cert(chain, key)?
        } else {
            builder.with_no_client_auth()
        };
        let mut client_direct = client.clone();
        client_direct.alpn_protocols = vec![ALPN_SERVER.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            client_direct: Arc::new(client_direct),
            verifier,
        })
    }

    /// Whether `certs` (a peer's chain, leaf first) is trusted and names
    /// `domain`; the reason when it is not.
    pub fn check_peer(
        &self,
        certs: &[CertificateDer<'static>],
        domain: &str,
    ) -> Result<(), String> {
        let (leaf, intermediates) = certs
            .split_first()
            .ok_or_else(|| "no certificate".to_owned())?;
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?;
        self.verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn trust_roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let io = |source| TlsError::Io {
                path: path.to_owned(),
                source,
            };
            let bytes = std::fs::read(path).map_err(io)?;
            for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
                roots.add(cert.map_err(io)?)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots(match ca_file {
            Some(path) => format!("{} holds no certificate", path.display()),
            None => "the system has no trusted CA certificates".to_owned(),
        }));
    }
    Ok(roots)
}

/// Asks the peer for its certificate and accepts any (or none) during the
/// handshake; the stream checks it afterwards with
/// [`TlsConfigs::check_peer`] for the domain the peer claims. The
/// handshake signature is still verified, so a presented certificate is
/// proven to be the peer's.
#[derive(Debug)]
struct OptionalClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
