//! The server certificate: loaded from the configured PEM files, or
//! generated self-signed for the domain on first start and kept in
//! `<data_dir>/tls/`. Builds the rustls configuration (ring provider)
//! shared by STARTTLS and direct TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Errors while loading or creating the certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: &'static str,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// The operator's files.
    Configured(PathBuf),
    /// Generated self-signed, stored at this path.
    SelfSigned(PathBuf),
}

/// The loaded certificate and the TLS configuration built from it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// rustls server configuration for c2s.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 fingerprint of the leaf certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub source: CertificateSource,
    /// The certificate chain, leaf first (federation presents it too).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl ServerTls {
    /// Loads the configured certificate, or creates/reuses a self-signed
    /// one for `domain` in `data_dir/tls/`.
    pub fn load_or_generate(
        cert: Option<&Path>,
        key: Option<&Path>,
        domain: &str,
        data_dir: &Path,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path, source) = match (cert, key) {
            (Some(c), Some(k)) => (
                c.to_owned(),
                k.to_owned(),
                CertificateSource::Configured(c.to_owned()),
            ),
            _ => {
                let dir = data_dir.join("tls");
                let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !c.exists() || !k.exists() {
                    generate_self_signed(domain, &c, &k)?;
                }
                (c.clone(), k, CertificateSource::SelfSigned(c))
            }
        };
        let chain = read_certificates(&cert_path)?;
        let key = read_private_key(&key_path)?;
        let fingerprint = fingerprint(&chain[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            tern_federation::tls::server_crypto_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())?;
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        config.ignore_client_order = true;
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
            source,
            chain,
            key: Arc::new(key),
        })
    }
}

/// The SHA-256 fingerprint of a DER certificate, colon-separated hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_self_signed(domain: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec![domain.to_owned(), format!("*.{domain}")];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    tern_xmpp::private::private_dir(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    write_private(key_path, certified.key_pair.serialize_pem().as_bytes())?;
    // Public, but kept like everything else in the data directory.
    write_private(cert_path, certified.cert.pem().as_bytes())
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no certificate found",
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            what: "no private key found",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerTls::load_or_generate(None, None, "example.test", dir.path()).unwrap();
        let second = ServerTls::load_or_generate(None, None, "example.test", dir.path()).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let mode = std::fs::metadata(dir.path().join("tls/key.pem")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn missing_files_are_named() {
        let err = ServerTls::load_or_generate(
            Some(Path::new("/nonexistent/c.pem")),
            Some(Path::new("/nonexistent/k.pem")),
            "x",
            Path::new("/tmp"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
