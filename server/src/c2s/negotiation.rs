//! c2s stream negotiation (RFC 6120 §4–§7), written once for every
//! program that accepts standard XMPP clients (`tern-server`, and the
//! `tern-bridge` gateway later).
//!
//! The steps, each consuming the stream of the one before:
//! 1. TLS: direct TLS (XEP-0368) right after TCP accept, or STARTTLS after
//!    the first stream header (required before anything else).
//! 2. SASL: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, against the
//!    [`AccountBackend`]'s stored secrets; in-band registration (XEP-0077)
//!    is answered here too when the backend allows it.
//! 3. Stream restart, then resource binding through
//!    [`AccountBackend::bind`].
//!
//! [`negotiate`] returns a [`C2sStream`] ready for stanzas. Every read has a
//! deadline (the unauthenticated timeout); every refusal sends the stream
//! error RFC 6120 names and closes the stream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, DomainPart, FullJid, NodePart};
use minidom::Element;
use rand::Rng;
use tokio::time::Instant;
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::sasl::{self, Auth, Challenge, Failure, Mechanism, Success};
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::io::{BoxedTransport, StanzaBudget};
use super::limits::AuthLimiter;
use super::stanza_stream::{HeaderError, Input, StanzaStream};
use super::stream_management::{self as sm, ResumeRequest};
use crate::modules::register;
use crate::sasl::{
    ClientFirst, PlainCredentials, SaslError, ScramHash, ScramServer, StoredCredentials,
};
use crate::stanza::{self, NS_CLIENT};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// SASL attempts allowed on one stream before it is closed.
const MAX_AUTH_ATTEMPTS: u32 = 5;

/// Errors of the backend behind negotiation (storage, session registry).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// What negotiation needs from the program that accepts clients.
pub trait AccountBackend: Send + Sync {
    /// What a successful bind hands back (for the server: the session's
    /// registration in its router).
    type Binding: Send;

    /// The stored SCRAM secret of `username`, `None` if no such account.
    fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> impl Future<Output = Result<Option<StoredCredentials>, BackendError>> + Send;

    /// Whether clients may create accounts with XEP-0077.
    fn registration_open(&self) -> bool;

    /// Creates an account; `Ok(false)` if the name is taken.
    fn register(
        &self,
        username: &str,
        password: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Binds `jid` as a new session, replacing any session with the same
    /// full JID.
    fn bind(
        &self,
        jid: &FullJid,
    ) -> impl Future<Output = Result<Self::Binding, BackendError>> + Send;

    /// Stream features offered with resource binding besides the usual
    /// ones (e.g. `<sm/>` for Stream Management, `<csi/>`). Default none.
    fn session_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// Hands a resuming connection's stream (XEP-0198 `<resume/>`) to its
    /// session. When there is no such session the request comes back and
    /// the client is told. Default: no session is resumable.
    fn resume(
        &self,
        request: ResumeRequest,
    ) -> impl Future<Output = Result<(), ResumeRequest>> + Send {
        std::future::ready(Err(request))
    }
}

/// How negotiation ended.
pub enum Negotiated<B> {
    /// A new session is bound.
    Bound(Box<C2sStream<B>>),
    /// The connection resumed an earlier session (XEP-0198), which took
    /// its stream over.
    Resumed,
}

/// How the client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP, upgraded with STARTTLS before authentication.
    StartTls,
    /// TLS from the first byte (XEP-0368).
    Direct,
    /// A transport that is encrypted already (XMPP over WebSocket on
    /// HTTPS): no TLS step.
    Secured,
}

/// Settings of c2s negotiation.
#[derive(Debug, Clone)]
pub struct C2sSettings {
    /// The domain served; streams to another domain get `host-unknown`.
    pub domain: String,
    /// The TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// Time allowed from TCP accept to a bound resource.
    pub negotiation_timeout: Duration,
    /// Read timeouts of the XML stream once established.
    pub timeouts: Timeouts,
    /// Failed-authentication limiter shared by all connections.
    pub auth_limiter: Arc<AuthLimiter>,
    /// The secret decoy SCRAM salts of unknown users are derived from
    /// ([`crate::sasl::decoy_key`]).
    pub decoy_key: Vec<u8>,
}

/// A negotiated, authenticated, bound client stream.
pub struct C2sStream<B> {
    /// The XML stream, ready for stanzas.
    pub stream: StanzaStream,
    /// Per-stanza size budget: reset after every stanza read.
    pub budget: StanzaBudget,
    /// The bound full JID.
    pub jid: FullJid,
    /// What [`AccountBackend::bind`] returned.
    pub binding: B,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Why negotiation ended without a bound stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The client closed the stream or the connection.
    #[error("client closed the connection")]
    Closed,
    /// The server refused the stream and sent this stream error.
    #[error("stream refused: {condition}: {text}")]
    Refused {
        /// The stream error condition sent.
        condition: StreamCondition,
        /// The text sent with it.
        text: &'static str,
    },
    /// The backend failed.
    #[error("backend error: {0}")]
    Backend(#[from] BackendError),
}

/// Negotiates a client stream from a freshly accepted connection.
pub async fn negotiate<B: AccountBackend>(
    transport: BoxedTransport,
    peer: SocketAddr,
    mode: TlsMode,
    settings: &C2sSettings,
    backend: &B,
) -> Result<Negotiated<B::Binding>, NegotiationError> {
    let deadline = Instant::now() + settings.negotiation_timeout;
    let negotiation = Negotiation {
        peer,
        settings,
        backend,
        deadline,
    };
    match tokio::time::timeout_at(deadline, negotiation.run(transport, mode)).await {
        Ok(result) => result,
        // The deadline hit inside TLS or header parsing: nothing to say it on.
        Err(_) => Err(NegotiationError::Refused {
            condition: StreamCondition::ConnectionTimeout,
            text: "negotiation took too long",
        }),
    }
}

struct Negotiation<'a, B> {
    peer: SocketAddr,
    settings: &'a C2sSettings,
    backend: &'a B,
    deadline: Instant,
}

/// The end of one SASL exchange: the user name and the data to send with
/// `<success/>`, or why it failed (the client is told; the stream goes on).
type SaslOutcome = Result<(String, Vec<u8>), SaslError>;

/// What the pre-authentication stage ended with.
enum Authenticated {
    User { username: String, success: Success },
}

impl<B: AccountBackend> Negotiation<'_, B> {
    async fn run(
        &self,
        transport: BoxedTransport,
        mode: TlsMode,
    ) -> Result<Negotiated<B::Binding>, NegotiationError> {
        let transport = match mode {
            TlsMode::Secured => transport,
            TlsMode::Direct => self.tls_handshake(transport).await?,
            TlsMode::StartTls => {
                let (stream, _) = self.open_stream(transport, Stage::StartTls).await?;
                self.starttls(stream).await?
            }
        };
        let (mut stream, budget) = self.open_stream(transport, Stage::Sasl).await?;
        let Authenticated::User { username, success } = self.authenticate(&mut stream).await?;
        stream.send(&to_element(&success)?).await?;
        stream.restart();
        self.answer_header(&mut stream, Stage::Bind).await?;
        self.bind(stream, budget, username).await
    }

    async fn tls_handshake(
        &self,
        transport: BoxedTransport,
    ) -> Result<BoxedTransport, NegotiationError> {
        let tls = super::tls_stream::TlsStream::accept(transport, self.settings.tls.clone())
            .await
            .map_err(NegotiationError::Tls)?;
        Ok(Box::new(tls))
    }

    /// Reads the client's stream header and answers it with ours and the
    /// features of `stage`.
    async fn open_stream(
        &self,
        transport: BoxedTransport,
        stage: Stage,
    ) -> Result<(StanzaStream, StanzaBudget), NegotiationError> {
        let (mut stream, budget) = StanzaStream::open(
            transport,
            self.settings.max_stanza_bytes,
            self.settings.timeouts,
        );
        self.answer_header(&mut stream, stage).await?;
        Ok((stream, budget))
    }

    /// Reads a stream header; answers with ours and the features of
    /// `stage`, or with the stream error the header deserves (sent in a
    /// stream of our own, as RFC 6120 §4.9.1.2 requires).
    async fn answer_header(
        &self,
        stream: &mut StanzaStream,
        stage: Stage,
    ) -> Result<(), NegotiationError> {
        let domain = self.settings.domain.as_str();
        let header = stream.read_header().await;
        stream.write_header(domain, &random_id());
        let header = match header {
            Ok(header) => header,
            Err(HeaderError::Closed) => return Err(NegotiationError::Closed),
            Err(HeaderError::Failed(e)) => return Err(stream.read_failure(e).await),
        };
        if !header.is_stream() || header.default_namespace() != Some(NS_CLIENT) {
            let text = "this is a client stream (jabber:client)";
            return Err(stream.refuse(StreamCondition::InvalidNamespace, text).await);
        }
        if header.attr("to") != Some(domain) {
            let text = "this server does not serve that domain";
            return Err(stream.refuse(StreamCondition::HostUnknown, text).await);
        }
        stream.write_features(&self.features(stage));
        Ok(stream.flush().await?)
    }

    /// The stream features of `stage`, in the order offered.
    fn features(&self, stage: Stage) -> Vec<Element> {
        match stage {
            Stage::StartTls => vec![Element::builder("starttls", NS_TLS)
                .append(Element::bare("required", NS_TLS))
                .build()],
            Stage::Sasl => {
                let mechanisms = crate::sasl::MECHANISMS
                    .iter()
                    .map(|m| Element::builder("mechanism", NS_SASL).append(*m).build());
                let mut features = vec![Element::builder("mechanisms", NS_SASL)
                    .append_all(mechanisms)
                    .build()];
                if self.backend.registration_open() {
                    features.push(Element::bare("register", NS_REGISTER_FEATURE));
                }
                features
            }
            Stage::Bind => {
                let mut features = vec![
                    Element::builder("bind", NS_BIND)
                        .append(Element::bare("required", NS_BIND))
                        .build(),
                    Element::builder("session", NS_SESSION)
                        .append(Element::bare("optional", NS_SESSION))
                        .build(),
                    Element::bare("ver", NS_ROSTERVER),
                ];
                features.extend(self.backend.session_features());
                features
            }
        }
    }

    async fn starttls(&self, mut stream: StanzaStream) -> Result<BoxedTransport, NegotiationError> {
        let element = self.recv(&mut stream).await?;
        if !element.is("starttls", NS_TLS) {
            return Err(stream
                .refuse(StreamCondition::PolicyViolation, "STARTTLS is required")
                .await);
        }
        stream.send(&Element::bare("proceed", NS_TLS)).await?;
        self.tls_handshake(stream.into_transport()).await
    }

    async fn authenticate(
        &self,
        stream: &mut StanzaStream,
    ) -> Result<Authenticated, NegotiationError> {
        let mut attempts = 0;
        loop {
            let element = self.recv(stream).await?;
            if element.is("auth", NS_SASL) {
                attempts += 1;
                if let Some(done) = self.sasl_exchange(stream, element).await? {
                    return Ok(done);
                }
                if attempts >= MAX_AUTH_ATTEMPTS {
                    return Err(stream
                        .refuse(
                            StreamCondition::PolicyViolation,
                            "too many failed authentication attempts",
                        )
                        .await);
                }
            } else if element.is("iq", NS_CLIENT) && register::is_register_iq(&element) {
                let reply = self.pre_auth_registration(&element).await?;
                stream.send(&reply).await?;
            } else {
                return Err(stream
                    .refuse(StreamCondition::NotAuthorized, "authenticate first")
                    .await);
            }
        }
    }

    /// Runs one SASL exchange. `Ok(None)`: it failed and the client was told.
    async fn sasl_exchange(
        &self,
        stream: &mut StanzaStream,
        element: Element,
    ) -> Result<Option<Authenticated>, NegotiationError> {
        let limiter = &self.settings.auth_limiter;
        if !limiter.allowed(self.peer.ip()) {
            tokio::time::sleep(AuthLimiter::PENALTY).await;
            send_failure(
                stream,
                sasl::DefinedCondition::TemporaryAuthFailure,
                "too many failed attempts; try again later",
            )
            .await?;
            return Ok(None);
        }
        let outcome = match Auth::try_from(element) {
            Err(_) => Err(SaslError::Malformed("unknown mechanism or bad <auth/>")),
            Ok(auth) => match auth.mechanism {
                Mechanism::Plain => self.plain(&auth.data).await?,
                Mechanism::ScramSha256 => self.scram(stream, ScramHash::Sha256, &auth.data).await?,
                Mechanism::ScramSha1 => self.scram(stream, ScramHash::Sha1, &auth.data).await?,
                _ => Err(SaslError::Malformed("mechanism not offered")),
            },
        };
        match outcome {
            Ok((username, data)) => Ok(Some(Authenticated::User {
                username,
                success: Success { data },
            })),
            Err(error) => {
                tracing::info!(peer = %self.peer, %error, "authentication failed");
                let condition = match error {
                    SaslError::NotAuthorized => {
                        limiter.record_failure(self.peer.ip());
                        sasl::DefinedCondition::NotAuthorized
                    }
                    SaslError::Aborted => {
                        limiter.record_failure(self.peer.ip());
                        sasl::DefinedCondition::Aborted
                    }
                    SaslError::InvalidAuthzid => sasl::DefinedCondition::InvalidAuthzid,
                    SaslError::ChannelBindingUnsupported => {
                        sasl::DefinedCondition::EncryptionRequired
                    }
                    SaslError::Malformed(_) => sasl::DefinedCondition::MalformedRequest,
                };
                send_failure(stream, condition, "").await?;
                Ok(None)
            }
        }
    }

    async fn plain(&self, data: &[u8]) -> Result<SaslOutcome, NegotiationError> {
        let creds = match PlainCredentials::parse(data) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let Some(username) = normalize_username(&creds.username) else {
            return Ok(Err(SaslError::NotAuthorized));
        };
        if !self.authzid_ok(creds.authzid.as_deref(), &username) {
            return Ok(Err(SaslError::InvalidAuthzid));
        }
        let stored = self
            .backend
            .credentials(&username, ScramHash::Sha256)
            .await?;
        let password = creds.password;
        let valid = tokio::task::spawn_blocking(move || {
            // PLAIN shows no salt: any decoy does.
            let stored =
                stored.unwrap_or_else(|| StoredCredentials::decoy(ScramHash::Sha256, "", &[]));
            stored.verify_password(ScramHash::Sha256, &password)
        })
        .await
        .unwrap_or(false);
        Ok(if valid {
            Ok((username, Vec::new()))
        } else {
            Err(SaslError::NotAuthorized)
        })
    }

    async fn scram(
        &self,
        stream: &mut StanzaStream,
        hash: ScramHash,
        data: &[u8],
    ) -> Result<SaslOutcome, NegotiationError> {
        let first = match ClientFirst::parse(data) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let username = normalize_username(&first.username);
        if let Some(name) = &username {
            if !self.authzid_ok(first.authzid.as_deref(), name) {
                return Ok(Err(SaslError::InvalidAuthzid));
            }
        }
        let stored = match &username {
            Some(name) => self.backend.credentials(name, hash).await?,
            None => None,
        };
        let decoy = || {
            let name = username.as_deref().unwrap_or(&first.username);
            StoredCredentials::decoy(hash, name, &self.settings.decoy_key)
        };
        let stored = stored.unwrap_or_else(decoy);
        let (server, challenge) = ScramServer::start(hash, first, stored);
        stream
            .send(&to_element(&Challenge { data: challenge })?)
            .await?;
        // From here on, an exchange that does not succeed counts as a
        // failed attempt, however it ends: a client must not get salts to
        // work on for free.
        let limiter = &self.settings.auth_limiter;
        let response = match self.recv(stream).await {
            Ok(response) => response,
            Err(e) => {
                limiter.record_failure(self.peer.ip());
                return Err(e);
            }
        };
        if response.is("abort", NS_SASL) {
            return Ok(Err(SaslError::Aborted));
        }
        let Ok(response) = sasl::Response::try_from(response) else {
            limiter.record_failure(self.peer.ip());
            return Ok(Err(SaslError::Malformed("expected <response/>")));
        };
        Ok(match (server.finish(&response.data), username) {
            (Ok(server_final), Some(name)) => Ok((name, server_final)),
            (Ok(_), None) | (Err(SaslError::NotAuthorized), _) => Err(SaslError::NotAuthorized),
            (Err(e), _) => Err(e),
        })
    }

    fn authzid_ok(&self, authzid: Option<&str>, username: &str) -> bool {
        match authzid {
            None => true,
            Some(a) => BareJid::new(a).is_ok_and(|j| {
                j.node().map(|n| n.as_str()) == Some(username)
                    && j.domain().as_str() == self.settings.domain
            }),
        }
    }

    async fn pre_auth_registration(&self, iq: &Element) -> Result<Element, NegotiationError> {
        if !self.backend.registration_open() {
            return Ok(
                stanza::errors::service_unavailable(iq, "in-band registration is closed")
                    .unwrap_or_else(|| stanza::iq_result(iq, None)),
            );
        }
        match iq.attr("type") {
            Some("get") => Ok(stanza::iq_result(iq, Some(register::form()))),
            Some("set") => {
                let reply = match register::parse_submission(iq) {
                    Err(text) => stanza::errors::bad_request(iq, text),
                    Ok(sub) if sub.remove => {
                        stanza::errors::not_allowed(iq, "log in to cancel a registration")
                    }
                    Ok(sub) => match normalize_username(&sub.username) {
                        None => stanza::errors::bad_request(iq, "that user name is not allowed"),
                        Some(name) => {
                            if self.backend.register(&name, &sub.password).await? {
                                tracing::info!(peer = %self.peer, user = %name, "account registered in-band");
                                Some(stanza::iq_result(iq, None))
                            } else {
                                stanza::error_reply(
                                    iq,
                                    xmpp_parsers::stanza_error::ErrorType::Cancel,
                                    xmpp_parsers::stanza_error::DefinedCondition::Conflict,
                                    "that user name is taken",
                                )
                            }
                        }
                    },
                };
                Ok(reply.unwrap_or_else(|| stanza::iq_result(iq, None)))
            }
            _ => {
                Ok(stanza::errors::bad_request(iq, "")
                    .unwrap_or_else(|| stanza::iq_result(iq, None)))
            }
        }
    }

    /// Binds a resource, or resumes an earlier session when the client
    /// asks to (XEP-0198) and the backend has it.
    async fn bind(
        &self,
        mut stream: StanzaStream,
        budget: StanzaBudget,
        username: String,
    ) -> Result<Negotiated<B::Binding>, NegotiationError> {
        let bare = account_jid(&username, &self.settings.domain).ok_or(NegotiationError::Closed)?;
        loop {
            let iq = self.recv(&mut stream).await?;
            if iq.is("resume", sm::NS) {
                let request = ResumeRequest {
                    username: username.clone(),
                    previd: iq.attr("previd").unwrap_or_default().to_owned(),
                    h: sm::h_of(&iq).unwrap_or_default(),
                    stream,
                    budget: budget.clone(),
                    peer: self.peer,
                };
                match self.backend.resume(request).await {
                    Ok(()) => return Ok(Negotiated::Resumed),
                    Err(request) => {
                        stream = request.stream;
                        stream.send(&sm::failed("item-not-found", None)).await?;
                        continue;
                    }
                }
            }
            let bind_query = (iq.is("iq", NS_CLIENT) && iq.attr("type") == Some("set"))
                .then(|| {
                    stanza::iq_payload(&iq)
                        .filter(|p| p.is("bind", NS_BIND))
                        .cloned()
                })
                .flatten();
            let Some(query) = bind_query else {
                if iq.is("iq", NS_CLIENT)
                    && stanza::iq_payload(&iq).is_some_and(|p| p.is("session", NS_SESSION))
                {
                    stream.send(&stanza::iq_result(&iq, None)).await?;
                    continue;
                }
                return Err(stream
                    .refuse(StreamCondition::NotAuthorized, "bind a resource first")
                    .await);
            };
            let requested = BindQuery::try_from(query).ok().and_then(|q| q.resource);
            let resource = requested
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(generated_resource);
            let Ok(jid) = bare.with_resource_str(&resource) else {
                if let Some(err) = stanza::errors::bad_request(&iq, "invalid resource") {
                    stream.send(&err).await?;
                }
                continue;
            };
            let binding = self.backend.bind(&jid).await?;
            let response: Element = BindResponse { jid: jid.clone() }.into();
            stream.send(&stanza::iq_result(&iq, Some(response))).await?;
            return Ok(Negotiated::Bound(Box::new(C2sStream {
                stream,
                budget,
                jid,
                binding,
                peer: self.peer,
            })));
        }
    }

    /// The next element, or a stream error once the deadline has passed or
    /// the input is bad.
    async fn recv(&self, stream: &mut StanzaStream) -> Result<Element, NegotiationError> {
        loop {
            let Ok(next) = tokio::time::timeout_at(self.deadline, stream.next()).await else {
                return Err(stream
                    .refuse(StreamCondition::ConnectionTimeout, "authenticate sooner")
                    .await);
            };
            return match next {
                Input::Element(element) => Ok(element),
                Input::Silent => continue,
                Input::Failed(e) => Err(stream.read_failure(e).await),
                Input::Ended => {
                    let _ = stream.close().await;
                    Err(NegotiationError::Closed)
                }
            };
        }
    }
}

#[derive(Clone, Copy)]
enum Stage {
    StartTls,
    Sasl,
    Bind,
}

/// An element of xmpp-parsers' types, as minidom.
fn to_element<T: xso::AsXml>(value: &T) -> Result<Element, NegotiationError> {
    xso::transform(value).map_err(|e| NegotiationError::Io(std::io::Error::other(e.to_string())))
}

async fn send_failure(
    stream: &mut StanzaStream,
    condition: sasl::DefinedCondition,
    text: &str,
) -> Result<(), NegotiationError> {
    let mut failure = Failure {
        defined_condition: condition,
        texts: Default::default(),
    };
    if !text.is_empty() {
        failure.texts.insert("en".into(), text.to_owned());
    }
    stream.send(&to_element(&failure)?).await?;
    Ok(())
}

/// The normalised (nodeprep) form of a user name, or `None` if it cannot
/// be the localpart of a JID.
pub fn normalize_username(name: &str) -> Option<String> {
    // The jid crate's normalisation is not idempotent for some
    // compatibility characters ("℻" becomes "FAX", which becomes "fax";
    // found by the jid fuzz target): normalise until nothing changes, so
    // that a stored name is the one its own JID parses to.
    let mut current = NodePart::new(name).ok()?.as_str().to_owned();
    for _ in 0..4 {
        let next = NodePart::new(&current).ok()?.as_str().to_owned();
        if next == current {
            return Some(current);
        }
        current = next;
    }
    None
}

/// The bare JID of a local account.
pub fn account_jid(username: &str, domain: &str) -> Option<BareJid> {
    let node = NodePart::new(username).ok()?;
    let domain = DomainPart::new(domain).ok()?;
    Some(BareJid::from_parts(Some(&node), &domain))
}

fn random_id() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

fn generated_resource() -> String {
    format!("tern-{:08x}", rand::thread_rng().gen::<u32>())
}

#[cfg(test)]
mod tests {
    use super::normalize_username;

    #[test]
    fn a_normalised_name_normalises_to_itself() {
        for name in [
            "alice",
            "Alice",
            "\u{213b}",
            "\u{2173}0ceellaibix\u{213b}",
            "stra\u{df}e",
        ] {
            if let Some(once) = normalize_username(name) {
                assert_eq!(
                    normalize_username(&once).as_deref(),
                    Some(once.as_str()),
                    "{name:?}"
                );
            }
        }
    }
}
