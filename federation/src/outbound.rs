//! Opening streams to peers: DNS, TCP, STARTTLS or direct TLS with the
//! peer's certificate verified for its domain, then authentication by
//! SASL EXTERNAL (XEP-0178) when offered and enabled, otherwise dialback
//! (XEP-0220); stream management (XEP-0198) enabled when offered. The
//! [`Dialer`] also runs dialback verifications for inbound streams.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use minidom::Element;
use tern_e2ee::discovery::{Endpoint, Resolver, Service, TlsMode};
use tokio::net::TcpStream;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, RecvFeaturesError, StreamHeader};
use xmpp_parsers::stream_features::StreamFeatures;

use crate::dialback::{self, Secret};
use crate::host::Pair;
use crate::io::{BoxedTransport, StanzaBudget};
use crate::s2s_io::{into_transport, s2s_io};
use crate::settings::Settings;
use crate::status::AuthMethod;
use crate::tls::TlsConfigs;
use crate::xml::{self, S2sStream, NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SM, NS_TLS};

/// Why a stream to a peer could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// DNS knows no address for the domain.
    #[error("{0} has no address in DNS")]
    NotFound(String),
    /// TCP failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// Where.
        endpoint: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The TLS handshake failed (often: the certificate is not valid for
    /// the domain).
    #[error("TLS with {endpoint} failed: {source}")]
    Tls {
        /// Where.
        endpoint: String,
        /// The error.
        source: io::Error,
    },
    /// The peer does not offer STARTTLS, and we require TLS.
    #[error("{0} does not offer TLS")]
    NoTls(String),
    /// The peer closed the stream with an error.
    #[error("the peer sent a stream error: {0}")]
    StreamError(String),
    /// The peer refused to authenticate us.
    #[error("authentication refused: {0}")]
    Refused(String),
    /// The stream broke.
    #[error("stream failed: {0}")]
    Io(#[from] io::Error),
    /// Everything took longer than the connect timeout.
    #[error("timed out")]
    Timeout,
}

impl OutboundError {
    /// Whether retrying cannot help (the domain does not exist).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

/// An authenticated outbound stream, ready for stanzas.
pub struct Outbound {
    /// The stream.
    pub stream: S2sStream,
    /// Resets the stanza size budget after each element read.
    pub budget: StanzaBudget,
    /// How the peer accepted us.
    pub auth: AuthMethod,
    /// Whether the peer acknowledges stanzas (XEP-0198 enabled).
    pub acknowledged: bool,
    /// Where the stream goes.
    pub endpoint: Endpoint,
}

/// A stream after TLS, before authentication.
struct Opened {
    stream: S2sStream,
    budget: StanzaBudget,
    features: StreamFeatures,
    stream_id: String,
    endpoint: Endpoint,
}

/// Opens streams to peers.
#[derive(Debug, Clone)]
pub struct Dialer {
    tls: TlsConfigs,
    resolver: Resolver,
    secret: Secret,
    certificate_auth: bool,
    connect_timeout: Duration,
    idle_after: Duration,
    max_stanza_bytes: usize,
}

impl Dialer {
    /// A dialer with `settings`, TLS configurations and our dialback
    /// secret.
    pub fn new(settings: &Settings, tls: TlsConfigs, secret: Secret) -> Result<Self, String> {
        Ok(Self {
            tls,
            resolver: Resolver::new(settings.nameserver)?,
            secret,
            certificate_auth: settings.certificate_auth,
            connect_timeout: settings.connect_timeout,
            idle_after: settings.idle_after,
            max_stanza_bytes: settings.max_stanza_bytes,
        })
    }

    /// Opens and authenticates a stream for `pair`, trying the peer's
    /// endpoints in DNS order.
    pub async fn connect(&self, pair: &Pair) -> Result<Outbound, OutboundError> {
        tokio::time::timeout(self.connect_timeout, async {
            let opened = self.open(pair).await?;
            self.authenticate(opened, pair).await
        })
        .await
        .map_err(|_| OutboundError::Timeout)?
    }

    /// Asks the authoritative server of `pair.remote` whether `key` is the
    /// one it sent on our inbound stream `stream_id` (we are
    /// `pair.local`, the receiving server).
    pub async fn verify_dialback(
        &self,
        pair: &Pair,
        stream_id: &str,
        key: &str,
    ) -> Result<bool, OutboundError> {
        tokio::time::timeout(self.connect_timeout, async {
            let mut opened = self.open(pair).await?;
            let request = dialback::verify_request(&pair.local, &pair.remote, stream_id, key);
            opened.stream.send(&request).await?;
            let verdict = loop {
                let element = next_element(&mut opened.stream, &opened.budget).await?;
                if element.is("verify", NS_DIALBACK) && element.attr("id") == Some(stream_id) {
                    break element.attr("type") == Some("valid");
                }
            };
            xml::close(&mut opened.stream).await;
            Ok(verdict)
        })
        .await
        .map_err(|_| OutboundError::Timeout)?
    }

    /// The first endpoint of `pair.remote` that opens a TLS stream.
    async fn open(&self, pair: &Pair) -> Result<Opened, OutboundError> {
        let endpoints = self.resolver.endpoints(&pair.remote, Service::Server).await;
        let mut last = OutboundError::NotFound(pair.remote.clone());
        for endpoint in endpoints {
            match self.open_endpoint(pair, &endpoint).await {
                Ok(opened) => return Ok(opened),
                Err(e) => {
                    tracing::debug!(%pair, %endpoint, "endpoint failed: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn open_endpoint(
        &self,
        pair: &Pair,
        endpoint: &Endpoint,
    ) -> Result<Opened, OutboundError> {
        let ip: IpAddr = endpoint.host.parse().map_err(|_| {
            OutboundError::NotFound(format!("{} (bad address {})", pair.remote, endpoint.host))
        })?;
        let tcp = TcpStream::connect((ip, endpoint.port))
            .await
            .map_err(|source| OutboundError::Connect {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut transport: BoxedTransport = Box::new(tcp);
        if endpoint.tls == TlsMode::Direct {
            transport = self.tls_connect(transport, pair, endpoint).await?;
        }
        let mut opened = self.start_stream(transport, pair, endpoint).await?;
        if endpoint.tls == TlsMode::StartTls {
            if opened.features.starttls.is_none() {
                xml::close(&mut opened.stream).await;
                return Err(OutboundError::NoTls(pair.remote.clone()));
            }
            opened
                .stream
                .send(&Element::bare("starttls", NS_TLS))
                .await?;
            let answer = next_element(&mut opened.stream, &opened.budget).await?;
            if !answer.is("proceed", NS_TLS) {
                return Err(OutboundError::NoTls(pair.remote.clone()));
            }
            let transport = into_transport(opened.stream.into_inner());
            let transport = self.tls_connect(transport, pair, endpoint).await?;
            opened = self.start_stream(transport, pair, endpoint).await?;
        }
        Ok(opened)
    }

    async fn tls_connect(
        &self,
        transport: BoxedTransport,
        pair: &Pair,
        endpoint: &Endpoint,
    ) -> Result<BoxedTransport, OutboundError> {
        let config = match endpoint.tls {
            TlsMode::Direct => self.tls.client_direct.clone(),
            TlsMode::StartTls => self.tls.client.clone(),
        };
        let name = rustls::pki_types::ServerName::try_from(pair.remote.clone()).map_err(|e| {
            OutboundError::Tls {
                endpoint: endpoint.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, transport)
            .await
            .map_err(|source| OutboundError::Tls {
                endpoint: endpoint.to_string(),
                source,
            })?;
        Ok(Box::new(tls))
    }

    /// Sends our stream header and reads the peer's header and features.
    async fn start_stream(
        &self,
        transport: BoxedTransport,
        pair: &Pair,
        endpoint: &Endpoint,
    ) -> Result<Opened, OutboundError> {
        let (io, budget) = s2s_io(transport, self.max_stanza_bytes);
        let header = StreamHeader {
            from: Some(pair.local.as_str().into()),
            to: Some(pair.remote.as_str().into()),
            id: None,
        };
        let mut pending =
            initiate_stream(io, xml::NS_SERVER, header, xml::timeouts(self.idle_after)).await?;
        let stream_id = pending.take_header().id.unwrap_or_default().into_owned();
        let (features, stream) = pending
            .recv_features::<Element>()
            .await
            .map_err(features_error)?;
        Ok(Opened {
            stream,
            budget,
            features,
            stream_id,
            endpoint: endpoint.clone(),
        })
    }

    async fn authenticate(&self, opened: Opened, pair: &Pair) -> Result<Outbound, OutboundError> {
        let offers_external = opened.features.sasl_mechanisms.contains("EXTERNAL");
        let (mut opened, auth) = if self.certificate_auth && offers_external {
            match self.sasl_external(opened, pair).await? {
                Ok(restarted) => (restarted, AuthMethod::Certificate),
                Err(unrestarted) => (unrestarted, AuthMethod::Dialback),
            }
        } else {
            (opened, AuthMethod::Dialback)
        };
        if auth == AuthMethod::Dialback {
            self.dialback(&mut opened, pair).await?;
        }
        let acknowledged = opened.features.stream_management.is_some()
            && enable_acknowledgements(&mut opened).await?;
        Ok(Outbound {
            stream: opened.stream,
            budget: opened.budget,
            auth,
            acknowledged,
            endpoint: opened.endpoint,
        })
    }

    /// SASL EXTERNAL: `Ok(restarted stream)` on success, `Err(the same
    /// stream)` when the peer refused (dialback may still work).
    async fn sasl_external(
        &self,
        mut opened: Opened,
        pair: &Pair,
    ) -> Result<Result<Opened, Opened>, OutboundError> {
        let authzid = base64::engine::general_purpose::STANDARD.encode(&pair.local);
        let request = Element::builder("auth", NS_SASL)
            .attr(xml::attr_name("mechanism"), "EXTERNAL")
            .append(authzid)
            .build();
        opened.stream.send(&request).await?;
        let answer = next_element(&mut opened.stream, &opened.budget).await?;
        if !answer.is("success", NS_SASL) {
            tracing::info!(%pair, "the peer refused SASL EXTERNAL; trying dialback");
            return Ok(Err(opened));
        }
        let header = StreamHeader {
            from: Some(pair.local.as_str().into()),
            to: Some(pair.remote.as_str().into()),
            id: None,
        };
        let mut pending = opened.stream.initiate_reset().send_header(header).await?;
        let stream_id = pending.take_header().id.unwrap_or_default().into_owned();
        let (features, stream) = pending
            .recv_features::<Element>()
            .await
            .map_err(features_error)?;
        Ok(Ok(Opened {
            stream,
            features,
            stream_id,
            budget: opened.budget,
            endpoint: opened.endpoint,
        }))
    }

    async fn dialback(&self, opened: &mut Opened, pair: &Pair) -> Result<(), OutboundError> {
        let key = self
            .secret
            .key(&pair.remote, &pair.local, &opened.stream_id);
        let offered = opened
            .features
            .others
            .iter()
            .any(|f| f.is("dialback", NS_DIALBACK_FEATURE));
        if !offered {
            tracing::debug!(%pair, "the peer does not announce dialback; trying it anyway");
        }
        opened
            .stream
            .send(&dialback::result_request(&pair.local, &pair.remote, &key))
            .await?;
        loop {
            let element = next_element(&mut opened.stream, &opened.budget).await?;
            if element.is("result", NS_DIALBACK) {
                return match element.attr("type") {
                    Some("valid") => Ok(()),
                    other => Err(OutboundError::Refused(format!(
                        "dialback answered {}",
                        other.unwrap_or("nothing")
                    ))),
                };
            }
        }
    }
}

/// Enables XEP-0198 acknowledgements; whether the peer agreed.
async fn enable_acknowledgements(opened: &mut Opened) -> Result<bool, OutboundError> {
    opened.stream.send(&Element::bare("enable", NS_SM)).await?;
    loop {
        let element = next_element(&mut opened.stream, &opened.budget).await?;
        if element.is("enabled", NS_SM) {
            return Ok(true);
        }
        if element.is("failed", NS_SM) {
            return Ok(false);
        }
    }
}

/// The next element from the peer; stream errors and closes are errors.
pub(crate) async fn next_element(
    stream: &mut S2sStream,
    budget: &StanzaBudget,
) -> Result<Element, OutboundError> {
    loop {
        match stream.next().await {
            Some(Ok(element)) => {
                budget.reset();
                if element.is("error", "http://etherx.jabber.org/streams") {
                    return Err(OutboundError::StreamError(stream_error_text(&element)));
                }
                return Ok(element);
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(e))) => {
                tracing::debug!("unparsable element from a peer: {e}");
            }
            Some(Err(ReadError::HardError(e))) => return Err(OutboundError::Io(e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(OutboundError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the stream",
                )))
            }
        }
    }
}

/// `condition (text)` of a `<stream:error/>`.
pub(crate) fn stream_error_text(error: &Element) -> String {
    let condition = error
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".to_owned());
    match error.children().find(|c| c.name() == "text") {
        Some(text) => format!("{condition} ({})", text.text()),
        None => condition,
    }
}

fn features_error(e: RecvFeaturesError) -> OutboundError {
    match e {
        RecvFeaturesError::Io(e) => OutboundError::Io(e),
        RecvFeaturesError::StreamError(e) => OutboundError::StreamError(e.to_string()),
    }
}
