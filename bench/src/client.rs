//! A lean XMPP c2s client for load: STARTTLS, SASL (SCRAM-SHA-256,
//! SCRAM-SHA-1 or PLAIN, [`crate::scram`]), in-band registration, resource binding, and a
//! raw stream to send prepared stanzas on and scan received ones, without
//! building an XML tree per stanza (the generator must not be the
//! bottleneck).
//!
//! It reads only what it needs from the server's XML with plain text
//! search; servers differ in quoting and prefixes, so searches look for
//! element names, never for attribute syntax.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::scram::{Hash, ScramClient, ServerFirst};

/// Time allowed for each step of a login.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The server under load.
#[derive(Clone)]
pub struct Target {
    /// Its c2s (STARTTLS) address.
    pub addr: SocketAddr,
    /// The XMPP domain.
    pub domain: String,
    /// TLS settings (the test CA, or no verification).
    pub tls: Arc<rustls::ClientConfig>,
    /// SASL mechanisms to use, in order of preference.
    pub mechanisms: Vec<String>,
    /// Salted passwords computed so far, by `hash:user`, with their salt
    /// and iteration count (a real client caches them too).
    pub salted: Arc<Mutex<HashMap<String, Salted>>>,
}

impl Target {
    /// The salted password of `user` for this exchange, from the cache
    /// when the salt and iteration count are the same.
    fn salted_password(
        &self,
        hash: Hash,
        user: &str,
        password: &str,
        first: &ServerFirst,
    ) -> Vec<u8> {
        let key = format!("{hash:?}:{user}");
        let mut cache = self.salted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((salt, iterations, data)) = cache.get(&key) {
            if *salt == first.salt && *iterations == first.iterations {
                return data.clone();
            }
        }
        let data = hash.salted_password(password, &first.salt, first.iterations);
        cache.insert(key, (first.salt.clone(), first.iterations, data.clone()));
        data
    }
}

/// A salted password: salt, iterations, the derived key.
pub type Salted = (Vec<u8>, u32, Vec<u8>);

/// A logged-in session split into its two directions.
pub struct Session {
    /// The bound full JID.
    pub jid: String,
    /// Reads the server's stream.
    pub reader: StreamReader,
    /// Writes to it.
    pub writer: WriteHalf<TlsStream<TcpStream>>,
}

/// The read side, with what was read but not yet consumed.
pub struct StreamReader {
    inner: ReadHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl StreamReader {
    /// Reads more bytes; false at the end of the stream.
    pub async fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.inner.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The unconsumed bytes.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }
}

/// Builds the TLS client settings: trust `ca_file`, or (for loopback
/// benchmarks of servers with self-signed certificates) nothing at all.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate (`--insecure`, loopback benchmarks only).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection during negotiation.
struct Negotiation {
    reader: StreamReader,
    writer: WriteHalf<TlsStream<TcpStream>>,
}

impl Negotiation {
    /// TCP, the first stream and STARTTLS; the features after TLS.
    async fn start(target: &Target) -> Result<(Self, String)> {
        let mut tcp = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        tcp.write_all(header(&target.domain).as_bytes()).await?;
        let features = read_plain_until(&mut tcp, &["</stream:features>", "</features>"]).await?;
        if !features.contains("starttls") {
            bail!("the server offers no STARTTLS");
        }
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let answer = read_plain_until(&mut tcp, &["proceed", "failure"]).await?;
        if !answer.contains("proceed") {
            bail!("STARTTLS refused: {answer}");
        }
        let name = ServerName::try_from(target.domain.clone())?;
        let tls = tokio_rustls::TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (inner, writer) = tokio::io::split(tls);
        let mut negotiation = Self {
            reader: StreamReader {
                inner,
                buf: Vec::with_capacity(4096),
            },
            writer,
        };
        let features = negotiation.open(&target.domain).await?;
        Ok((negotiation, features))
    }

    /// Sends a stream header and returns the features that answer it.
    async fn open(&mut self, domain: &str) -> Result<String> {
        self.send(&header(domain)).await?;
        self.read_until(&["</stream:features>", "</features>"])
            .await
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Reads until one of `needles`; returns the text up to and including
    /// it and keeps the rest.
    async fn read_until(&mut self, needles: &[&str]) -> Result<String> {
        tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                if let Some(end) = find_any(self.reader.buffer(), needles) {
                    let text = String::from_utf8_lossy(&self.reader.buffer()[..end]).into_owned();
                    self.reader.consume(end);
                    return Ok(text);
                }
                if !self.reader.fill().await? {
                    bail!("the server closed the stream");
                }
            }
        })
        .await
        .map_err(|_| anyhow!("timed out waiting for {needles:?}"))?
    }

    /// Authenticates as `user` (the stream is then restarted).
    async fn authenticate(
        &mut self,
        target: &Target,
        features: &str,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let offered = |m: &str| features.contains(&format!(">{m}<"));
        let mechanism = target
            .mechanisms
            .iter()
            .find(|m| offered(m))
            .ok_or_else(|| anyhow!("none of {:?} offered: {features}", target.mechanisms))?;
        let Some(hash) = Hash::of_mechanism(mechanism) else {
            let plain = BASE64.encode(format!("\0{user}\0{password}"));
            self.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{plain}</auth>"
            ))
            .await?;
            let answer = self.read_until(&["</success>", "</failure>", "/>"]).await?;
            if !answer.contains("<success") {
                bail!("authentication failed for {user}: {answer}");
            }
            return Ok(());
        };
        let (mut scram, first) = ScramClient::start(hash, user);
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            BASE64.encode(first)
        ))
        .await?;
        let answer = self
            .read_until(&["</challenge>", "</failure>", "/>"])
            .await?;
        if !answer.contains("<challenge") {
            bail!("authentication failed for {user}: {answer}");
        }
        let server_first =
            scram.server_first(&BASE64.decode(element_text(&answer, "challenge"))?)?;
        let salted = target.salted_password(hash, user, password, &server_first);
        let last = scram.client_final(&server_first, &salted);
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            BASE64.encode(last)
        ))
        .await?;
        let answer = self
            .read_until(&["</success>", "</failure>", "</challenge>", "/>"])
            .await?;
        if answer.contains("<success") || answer.contains("<challenge") {
            let name = if answer.contains("<success") {
                "success"
            } else {
                "challenge"
            };
            scram.verify(&BASE64.decode(element_text(&answer, name))?)?;
            if name == "challenge" {
                // RFC 6120 §6.4.6: the final data came as a challenge.
                self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                    .await?;
                self.read_until(&["</success>", "/>"]).await?;
            }
            return Ok(());
        }
        bail!("authentication failed for {user}: {answer}")
    }

    /// Binds a resource; the full JID.
    async fn bind(&mut self, features: &str, resource: &str) -> Result<String> {
        self.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        let answer = self.read_until(&["</iq>"]).await?;
        let jid = element_text(&answer, "jid");
        if jid.is_empty() {
            bail!("bind failed: {answer}");
        }
        // RFC 3921 session establishment, where still required.
        if features.contains("xmpp-session") && !features.contains("optional") {
            self.send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
                .await?;
            self.read_until(&["</iq>", "/>"]).await?;
        }
        Ok(jid)
    }
}

/// Logs in as `user` and binds `resource`.
pub async fn login(target: &Target, user: &str, password: &str, resource: &str) -> Result<Session> {
    let (mut negotiation, features) = Negotiation::start(target).await?;
    negotiation
        .authenticate(target, &features, user, password)
        .await?;
    let features = negotiation.open(&target.domain).await?;
    let jid = negotiation.bind(&features, resource).await?;
    Ok(Session {
        jid,
        reader: negotiation.reader,
        writer: negotiation.writer,
    })
}

/// Creates an account in-band (XEP-0077); an existing one is fine.
pub async fn register(target: &Target, user: &str, password: &str) -> Result<()> {
    let (mut negotiation, _) = Negotiation::start(target).await?;
    negotiation
        .send(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
        ))
        .await?;
    // A result may be self-closing; an error's condition is too.
    let answer = negotiation.read_until(&["</iq>", "/>"]).await?;
    if answer.contains("type='result'")
        || answer.contains("type=\"result\"")
        || answer.contains("conflict")
    {
        Ok(())
    } else {
        bail!("registering {user} failed: {answer}")
    }
}

/// The stream header of a client.
fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// Reads from a plain TCP stream until one of `needles`.
async fn read_plain_until(tcp: &mut TcpStream, needles: &[&str]) -> Result<String> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_any(&buf, needles) {
                // Whatever follows belongs to TLS, which has not started.
                return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| anyhow!("timed out waiting for {needles:?}"))?
}

/// Where the first of `needles` ends in `haystack`.
fn find_any(haystack: &[u8], needles: &[&str]) -> Option<usize> {
    needles
        .iter()
        .filter_map(|n| find(haystack, n.as_bytes()).map(|at| at + n.len()))
        .min()
}

/// The index of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The text content of the first `<name …>…</name>` in `xml` (empty if
/// none or self-closing).
fn element_text(xml: &str, name: &str) -> String {
    let Some(start) = xml.find(&format!("<{name}")) else {
        return String::new();
    };
    let rest = &xml[start..];
    let Some(open_end) = rest.find('>') else {
        return String::new();
    };
    if rest[..open_end].ends_with('/') {
        return String::new();
    }
    let body = &rest[open_end + 1..];
    body.find(&format!("</{name}>"))
        .map(|end| body[..end].trim().to_owned())
        .unwrap_or_default()
}
