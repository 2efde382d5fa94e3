//! One client XML stream, owned by one task: found through DNS SRV (or
//! given), direct TLS (XEP-0368) or STARTTLS, SCRAM-SHA-256, resource
//! binding; then stanzas in and out.
//!
//! Built on tokio-xmpp's `xmlstream` layer (the server uses it too)
//! rather than its `Client`: the `Client`'s receiver gives up its poll
//! without a wake-up when the stream's lock is busy with a send
//! (`StanzaReceiver::poll_next`'s `try_lock`), so an answer arriving
//! while the client sends could wait forever. Here reading and writing
//! happen in the caller's task, one after the other.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use jid::{BareJid, FullJid};
use minidom::Element;
use sasl::client::mechanisms::Scram;
use sasl::client::Mechanism;
use sasl::common::scram::Sha256;
use sasl::common::Credentials;
use tern_xmpp::DepthLimited;
use tokio::io::{AsyncBufRead, AsyncWrite, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

use crate::discovery::{self, Endpoint, TlsMode};
use crate::session::{stanza_error, SessionError};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_CLIENT: &str = "jabber:client";
const NS_REGISTER: &str = "jabber:iq:register";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// How long closing waits for the server's end of the stream.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The client's transport: reads pass a depth guard before tokio-xmpp's
/// recursive tree builder sees them (a server nesting elements thousands
/// deep would otherwise overflow the stack).
type Io = BufStream<DepthLimited<TlsStream<TcpStream>>>;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` of a direct-TLS port (`--server`).
    Address(String),
    /// The domain's SRV records (`_xmpps-client`, `_xmpp-client`), from
    /// this nameserver or the system's.
    Dns {
        /// Replaces the system's resolvers.
        nameserver: Option<std::net::SocketAddr>,
    },
}

/// A logged-in client stream.
pub struct Connection {
    stream: XmlStream<Io, Element>,
    jid: FullJid,
}

impl Connection {
    /// Connects to `target`, verifies the certificate for the JID's
    /// domain, authenticates and binds a resource.
    pub async fn open(
        jid: &BareJid,
        password: &str,
        target: &Target,
    ) -> Result<Self, SessionError> {
        let domain = jid.domain().as_str();
        let (features, stream) = establish(domain, target).await?;
        let stream = authenticate(features.sasl_mechanisms, stream, jid, password).await?;
        let mut stream = restart(stream, domain).await?;
        let jid = bind(&mut stream).await?;
        Ok(Self { stream, jid })
    }

    /// Creates the account `jid` with `password` by in-band registration
    /// (XEP-0077) on a fresh stream, before authentication; the stream is
    /// closed afterwards.
    pub async fn register(
        jid: &BareJid,
        password: &str,
        target: &Target,
    ) -> Result<(), SessionError> {
        let domain = jid.domain().as_str();
        let (features, mut stream) = establish(domain, target).await?;
        if !features.in_band_registration {
            return Err(SessionError::Refused {
                condition: "not-allowed".into(),
                text: Some(format!("{domain} does not allow registration")),
            });
        }
        let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
        let query = Element::builder("query", NS_REGISTER)
            .append(Element::builder("username", NS_REGISTER).append(username))
            .append(Element::builder("password", NS_REGISTER).append(password))
            .build();
        let request = Element::builder("iq", NS_CLIENT)
            .attr(attr("type"), "set")
            .attr(attr("id"), "register")
            .append(query)
            .build();
        stream.send(&request).await.map_err(connect_error)?;
        let answer = match stream.next().await {
            Some(Ok(element)) => element,
            _ => return Err(SessionError::Disconnected),
        };
        let _ = SinkExt::<&Element>::close(&mut stream).await;
        match answer.attr("type") {
            Some("result") => Ok(()),
            _ => Err(stanza_error(&answer)),
        }
    }

    /// The bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// Sends a stanza (written out at once).
    pub async fn send(&mut self, stanza: &Element) -> Result<(), SessionError> {
        tracing::trace!(name = stanza.name(), id = ?stanza.attr("id"), "stanza to server");
        self.stream
            .send(stanza)
            .await
            .map_err(|_| SessionError::Disconnected)
    }

    /// The next stanza; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Element> {
        loop {
            match self.stream.next().await? {
                Ok(stanza) => return Some(stanza),
                // Quiet for a while: keep waiting (the server pings us).
                Err(ReadError::SoftTimeout) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Ends the stream: sends the footer, then reads until the server
    /// ends its side too, which it does once it handled everything sent
    /// before (leaving at once could cut the last stanzas off).
    pub async fn close(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_) | Err(ReadError::SoftTimeout)) = self.stream.next().await {}
        })
        .await;
    }
}

/// TCP, TLS and the first stream header: the stream's features and the
/// stream, ready for SASL (or in-band registration). Every endpoint the
/// target names is tried in turn.
async fn establish(
    domain: &str,
    target: &Target,
) -> Result<(StreamFeatures, XmlStream<Io, Element>), SessionError> {
    let endpoints = match target {
        Target::Address(address) => vec![direct_endpoint(address)?],
        Target::Dns { nameserver } => discovery::client_endpoints(domain, *nameserver).await,
    };
    if endpoints.is_empty() {
        return Err(SessionError::Connect(format!(
            "no server for {domain} in DNS (no SRV records, no address); give one with --server HOST:PORT"
        )));
    }
    let mut failures = Vec::new();
    for endpoint in &endpoints {
        match establish_at(domain, endpoint).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(%endpoint, "cannot connect: {e}");
                failures.push(format!("{endpoint}: {e}"));
            }
        }
    }
    Err(SessionError::Connect(format!(
        "cannot reach {domain}: {}",
        failures.join("; ")
    )))
}

/// `host:port` given by the user: direct TLS there.
fn direct_endpoint(address: &str) -> Result<Endpoint, SessionError> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        .ok_or_else(|| SessionError::Connect(format!("{address:?} is not HOST:PORT")))?;
    Ok(Endpoint {
        host: host.trim_matches(['[', ']']).to_owned(),
        port,
        tls: TlsMode::Direct,
    })
}

async fn establish_at(
    domain: &str,
    endpoint: &Endpoint,
) -> Result<(StreamFeatures, XmlStream<Io, Element>), String> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let tls = match endpoint.tls {
        TlsMode::Direct => tls_client(tcp, domain, b"xmpp-client").await?,
        TlsMode::StartTls => starttls(tcp, domain).await?,
    };
    open_stream(guarded(tls), domain).await
}

/// `transport`, buffered, behind a depth guard for a new stream.
fn guarded<T>(transport: T) -> BufStream<DepthLimited<T>>
where
    T: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    BufStream::new(DepthLimited::new(
        transport,
        tern_xmpp::depth::stream_limit(),
    ))
}

/// Sends the stream header on `io` and reads the server's features.
async fn open_stream<S: AsyncBufRead + AsyncWrite + Unpin>(
    io: S,
    domain: &str,
) -> Result<(StreamFeatures, XmlStream<S, Element>), String> {
    let pending = initiate_stream(io, NS_CLIENT, header(domain), Timeouts::default())
        .await
        .map_err(|e| e.to_string())?;
    pending
        .recv_features::<Element>()
        .await
        .map_err(|e| e.to_string())
}

/// A plain stream upgraded with `<starttls/>` (RFC 6120 §5).
async fn starttls(tcp: TcpStream, domain: &str) -> Result<TlsStream<TcpStream>, String> {
    let (features, mut stream) = open_stream(guarded(tcp), domain).await?;
    if !features.can_starttls() {
        return Err("the server does not offer STARTTLS".into());
    }
    stream
        .send(&Element::bare("starttls", NS_TLS))
        .await
        .map_err(|e| e.to_string())?;
    match stream.next().await {
        Some(Ok(answer)) if answer.is("proceed", NS_TLS) => {}
        _ => return Err("the server refused STARTTLS".into()),
    }
    let tcp = stream.into_inner().into_inner().into_inner();
    tls_client(tcp, domain, b"xmpp-client").await
}

/// TLS to `host` (a DNS name or an IP address) over `tcp`, with the
/// system's trusted roots (or those of `SSL_CERT_FILE`, `--ca-file`) and
/// the ALPN protocol `alpn`; errors are explanations.
pub(crate) async fn tls_client(
    tcp: TcpStream,
    host: &str,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

async fn restart(
    stream: XmlStream<Io, Element>,
    domain: &str,
) -> Result<XmlStream<Io, Element>, SessionError> {
    let pending = stream
        .initiate_reset()
        .send_header(header(domain))
        .await
        .map_err(connect_error)?;
    let (_, stream) = pending
        .recv_features::<Element>()
        .await
        .map_err(connect_error)?;
    Ok(stream)
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        from: None,
        to: Some(Cow::Borrowed(domain)),
        id: None,
    }
}

async fn authenticate(
    mechanisms: std::collections::BTreeSet<String>,
    mut stream: XmlStream<Io, Element>,
    jid: &BareJid,
    password: &str,
) -> Result<XmlStream<Io, Element>, SessionError> {
    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
        return Err(SessionError::Connect(
            "the server does not offer SCRAM-SHA-256".into(),
        ));
    }
    let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
    let credentials = Credentials::default()
        .with_username(username)
        .with_password(password);
    let mut scram = Scram::<Sha256>::from_credentials(credentials)
        .map_err(|e| SessionError::Connect(format!("SASL: {e:?}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth = Element::builder("auth", NS_SASL)
        .attr(attr("mechanism"), "SCRAM-SHA-256")
        .append(b64.encode(scram.initial()))
        .build();
    stream.send(&auth).await.map_err(connect_error)?;
    loop {
        let reply = match stream.next().await {
            Some(Ok(element)) => element,
            _ => return Err(SessionError::Disconnected),
        };
        let data = b64
            .decode(reply.text().trim())
            .map_err(|_| SessionError::Connect("malformed SASL data".into()))?;
        match reply.name() {
            "challenge" => {
                let response = scram
                    .response(&data)
                    .map_err(|e| SessionError::Connect(format!("SASL: {e}")))?;
                let response = Element::builder("response", NS_SASL)
                    .append(b64.encode(response))
                    .build();
                stream.send(&response).await.map_err(connect_error)?;
            }
            "success" => {
                scram
                    .success(&data)
                    .map_err(|e| SessionError::Connect(format!("the server's proof: {e}")))?;
                return Ok(stream);
            }
            _ => {
                return Err(SessionError::Connect(format!(
                    "{jid}: wrong password or no such account"
                )))
            }
        }
    }
}

async fn bind(stream: &mut XmlStream<Io, Element>) -> Result<FullJid, SessionError> {
    let request = Element::builder("iq", NS_CLIENT)
        .attr(attr("type"), "set")
        .attr(attr("id"), "bind")
        .append(Element::bare("bind", NS_BIND))
        .build();
    stream.send(&request).await.map_err(connect_error)?;
    let answer = match stream.next().await {
        Some(Ok(element)) => element,
        _ => return Err(SessionError::Disconnected),
    };
    answer
        .get_child("bind", NS_BIND)
        .and_then(|bind| bind.get_child("jid", NS_BIND))
        .and_then(|jid| FullJid::new(&jid.text()).ok())
        .ok_or_else(|| SessionError::Connect("the server did not bind a resource".into()))
}

fn connect_error(e: impl std::fmt::Display) -> SessionError {
    SessionError::Connect(e.to_string())
}

/// A static attribute name.
pub(crate) fn attr(name: &'static str) -> xso::exports::rxml::NcName {
    xso::exports::rxml::NcName::try_from(name).expect("static attribute names are valid")
}
