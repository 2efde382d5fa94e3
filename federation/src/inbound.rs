//! Streams other servers open to us.
//!
//! TLS first (direct, or STARTTLS required before anything else); then the
//! peer authenticates each (its domain, our domain) pair, by SASL EXTERNAL
//! with a certificate valid for its domain, or by dialback: we ask its
//! authoritative server (found through DNS, over TLS) whether the key is
//! its own, or accept at once when its certificate is valid for the
//! domain (XEP-0344). Stanzas must come `from` an authenticated domain
//! `to` the domain it authenticated with (`<invalid-from/>` otherwise)
//! and reach the [`Host`](crate::Host) in `jabber:client`. Stream
//! management (XEP-0198) acknowledges what the host has handled. We also
//! answer `<db:verify/>` for keys we sent on our own outbound streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use minidom::Element;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::{accept_stream, AcceptedStream, ReadError, StreamHeader};
use xmpp_parsers::stream_error::DefinedCondition;
use xmpp_parsers::stream_features::StreamFeatures;

use crate::dialback;
use crate::federation::Context;
use crate::host::Pair;
use crate::io::{is_stanza_too_large, BoxedTransport, StanzaBudget};
use crate::s2s_io::{into_transport, s2s_io, S2sIo};
use crate::status::{AuthMethod, InboundStatus};
use crate::xml::{
    self, attr_name, S2sStream, NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SM, NS_TLS,
};
use crate::TlsMode;

/// Why an inbound stream ended early.
type Refusal = (DefinedCondition, &'static str);

/// One accepted stream's state.
struct Inbound {
    ctx: Arc<Context>,
    number: u64,
    /// The peer's certificate chain (empty without one).
    certificates: Vec<CertificateDer<'static>>,
    /// Our domain and the peer's claimed domain from the stream header.
    local: String,
    claimed: Option<String>,
    stream_id: String,
    authenticated: HashMap<Pair, AuthMethod>,
    /// Pairs whose dialback verification is under way.
    verifying: std::collections::HashSet<Pair>,
    acknowledging: bool,
    handled: u32,
    /// Acknowledgements (`h`) waiting until what they count is durable
    /// (the host's mark), in order.
    pending_acks: tern_xmpp::sm::PendingAcks,
}

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(ctx: Arc<Context>, tcp: TcpStream, peer: SocketAddr, mode: TlsMode) {
    let number = ctx.register_inbound(peer);
    let negotiated = tokio::time::timeout(
        ctx.settings.connect_timeout,
        negotiate(&ctx, number, tcp, mode),
    )
    .await;
    match negotiated {
        Ok(Ok((stream, budget, inbound))) => inbound.run(stream, budget).await,
        Ok(Err(e)) => tracing::debug!(%peer, "inbound s2s negotiation failed: {e}"),
        Err(_) => tracing::debug!(%peer, "inbound s2s negotiation timed out"),
    }
    ctx.unregister_inbound(number);
}

/// TLS, then the stream whose features offer authentication.
async fn negotiate(
    ctx: &Arc<Context>,
    number: u64,
    tcp: TcpStream,
    mode: TlsMode,
) -> Result<(S2sStream, StanzaBudget, Inbound), std::io::Error> {
    let _ = tcp.set_nodelay(true);
    let mut transport: BoxedTransport = Box::new(tcp);
    let mut certificates = None;
    if mode == TlsMode::Direct {
        let (tls, certs) = tls_accept(ctx, transport).await?;
        transport = tls;
        certificates = Some(certs);
    }
    loop {
        let (io, budget) = s2s_io(transport, ctx.settings.max_stanza_bytes);
        let mut accepted =
            accept_stream(io, xml::NS_SERVER, xml::timeouts(ctx.settings.idle_after)).await?;
        let header = accepted.take_header();
        let local = header.to.map(|t| t.into_owned()).unwrap_or_default();
        let claimed = header.from.map(|f| f.into_owned());
        let inbound = Inbound {
            ctx: ctx.clone(),
            number,
            certificates: certificates.clone().unwrap_or_default(),
            local,
            claimed,
            stream_id: new_stream_id(),
            authenticated: HashMap::new(),
            verifying: Default::default(),
            acknowledging: false,
            handled: 0,
            pending_acks: Default::default(),
        };
        if !ctx.settings.is_local(&inbound.local) {
            let pending = accepted.send_header(inbound.our_header()).await?;
            let error = xmpp_parsers::stream_error::StreamError::new(
                DefinedCondition::HostUnknown,
                "en",
                "this server does not serve that domain",
            );
            let _ = pending.send_error(&error).await;
            return Err(std::io::Error::other("stream to a domain not served here"));
        }
        if certificates.is_none() {
            let mut stream = inbound.send_features(accepted, starttls_features()).await?;
            let request = stream.next().await;
            if !matches!(&request, Some(Ok(e)) if e.is("starttls", NS_TLS)) {
                xml::close_with_error(
                    &mut stream,
                    DefinedCondition::PolicyViolation,
                    "TLS is required",
                )
                .await;
                return Err(std::io::Error::other("the peer did not start TLS"));
            }
            stream.send(&Element::bare("proceed", NS_TLS)).await?;
            let (tls, certs) = tls_accept(ctx, into_transport(stream.into_inner())).await?;
            transport = tls;
            certificates = Some(certs);
            continue;
        }
        let features = inbound.authentication_features();
        let stream = inbound.send_features(accepted, features).await?;
        return Ok((stream, budget, inbound));
    }
}

async fn tls_accept(
    ctx: &Context,
    transport: BoxedTransport,
) -> Result<(BoxedTransport, Vec<CertificateDer<'static>>), std::io::Error> {
    let tls = tokio_rustls::TlsAcceptor::from(ctx.tls.server.clone())
        .accept(transport)
        .await?;
    let certificates = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok((Box::new(tls), certificates))
}

/// `<a h/>` (XEP-0198).
fn ack(h: u32) -> Element {
    Element::builder("a", NS_SM)
        .attr(attr_name("h"), h.to_string())
        .build()
}

/// Returns once the acknowledgement in `pending` may be sent; never when
/// none waits.
async fn ack_when_durable(ctx: &Context, pending: Option<(u32, u64)>) {
    match pending {
        Some((_, mark)) => ctx.host.durable(mark).await,
        None => std::future::pending().await,
    }
}

fn new_stream_id() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn starttls_features() -> StreamFeatures {
    StreamFeatures {
        starttls: Some(xmpp_parsers::starttls::StartTls { required: true }),
        ..Default::default()
    }
}

/// What a verification task reports back to its stream.
struct Verdict {
    pair: Pair,
    valid: bool,
}

enum Flow {
    Continue,
    Close(Refusal),
    Restart,
}

impl Inbound {
    fn our_header(&self) -> StreamHeader<'static> {
        StreamHeader {
            from: Some(self.local.clone().into()),
            to: self.claimed.clone().map(Into::into),
            id: Some(self.stream_id.clone().into()),
        }
    }

    async fn send_features(
        &self,
        accepted: AcceptedStream<S2sIo>,
        features: StreamFeatures,
    ) -> Result<S2sStream, std::io::Error> {
        let pending = accepted.send_header(self.our_header()).await?;
        pending.send_features::<Element>(&features).await
    }

    /// After TLS: SASL EXTERNAL when the peer's certificate is good for
    /// the domain it claims, dialback always, and stream management.
    fn authentication_features(&self) -> StreamFeatures {
        let mut features = StreamFeatures::default();
        if self.authenticated.is_empty() {
            if self.external_domain(None).is_some() {
                features.sasl_mechanisms.insert("EXTERNAL".to_owned());
            }
            features.others.push(
                Element::builder("dialback", NS_DIALBACK_FEATURE)
                    .append(Element::bare("errors", NS_DIALBACK_FEATURE))
                    .build(),
            );
        }
        features.stream_management = Some(xmpp_parsers::sm::StreamManagement { optional: false });
        features
    }

    /// The domain SASL EXTERNAL would authenticate: the `authzid` (or the
    /// claimed domain), when certificate authentication is on, the policy
    /// allows it and the certificate is valid for it.
    fn external_domain(&self, authzid: Option<&str>) -> Option<String> {
        let ctx = &self.ctx;
        let domain = match authzid {
            Some(id) if !id.is_empty() && id != "=" => id.to_owned(),
            _ => self.claimed.clone()?,
        };
        let valid = ctx.settings.certificate_auth
            && ctx.settings.policy.allows(&domain)
            && ctx.tls.check_peer(&self.certificates, &domain).is_ok();
        valid.then_some(domain)
    }

    async fn run(mut self, mut stream: S2sStream, budget: StanzaBudget) {
        let (verdicts_tx, mut verdicts) = mpsc::channel::<Verdict>(8);
        loop {
            let flow = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => {
                    Flow::Close((DefinedCondition::SystemShutdown, "the server is shutting down"))
                }
                Some(verdict) = verdicts.recv() => self.verdict(&mut stream, verdict).await,
                _ = ack_when_durable(&self.ctx, self.pending_acks.first()) => match self.pending_acks.pop() {
                    Some(h) if stream.send(&ack(h)).await.is_err() => {
                        Flow::Close((DefinedCondition::UndefinedCondition, "write failed"))
                    }
                    _ => Flow::Continue,
                },
                read = stream.next() => match read {
                    Some(Ok(element)) => {
                        budget.reset();
                        self.element(&mut stream, element, &verdicts_tx).await
                    }
                    Some(Err(ReadError::ParseError(_))) => Flow::Continue,
                    Some(Err(ReadError::SoftTimeout)) => {
                        tracing::debug!(local = %self.local, "closing an idle inbound s2s stream");
                        xml::close(&mut stream).await;
                        return;
                    }
                    Some(Err(ReadError::HardError(e))) if is_stanza_too_large(&e) => {
                        Flow::Close((DefinedCondition::PolicyViolation, "stanza too large"))
                    }
                    Some(Err(ReadError::HardError(e))) if tern_xmpp::is_too_deep(&e) => {
                        Flow::Close((DefinedCondition::PolicyViolation, "elements nested too deeply"))
                    }
                    Some(Err(ReadError::HardError(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                        Flow::Close((DefinedCondition::NotWellFormed, "XML not well-formed"))
                    }
                    Some(Err(ReadError::HardError(e))) => {
                        tracing::debug!("inbound s2s stream failed: {e}");
                        return;
                    }
                    Some(Err(ReadError::StreamFooterReceived)) | None => {
                        xml::close(&mut stream).await;
                        return;
                    }
                },
            };
            match flow {
                Flow::Continue => {}
                Flow::Close((condition, text)) => {
                    tracing::info!(local = %self.local, claimed = ?self.claimed, %condition, text, "closing an inbound s2s stream");
                    xml::close_with_error(&mut stream, condition, text).await;
                    return;
                }
                Flow::Restart => {
                    let success = Element::bare("success", NS_SASL);
                    stream = match self.restart(stream, &success).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::debug!("restart after SASL failed: {e}");
                            return;
                        }
                    };
                }
            }
        }
    }

    async fn restart(
        &mut self,
        stream: S2sStream,
        success: &Element,
    ) -> std::io::Result<S2sStream> {
        let mut accepted = stream.accept_reset(success).await?;
        let header = accepted.take_header();
        if let Some(from) = header.from {
            self.claimed = Some(from.into_owned());
        }
        self.stream_id = new_stream_id();
        let features = self.authentication_features();
        self.send_features(accepted, features).await
    }

    async fn element(
        &mut self,
        stream: &mut S2sStream,
        element: Element,
        verdicts: &mpsc::Sender<Verdict>,
    ) -> Flow {
        if xml::is_stanza(&element) {
            return self.stanza(element).await;
        }
        let reply = match (element.ns().as_str(), element.name()) {
            (NS_SASL, "auth") => return self.sasl_external(stream, &element).await,
            (NS_DIALBACK, "result") if element.attr("type").is_none() => {
                match self.dialback_request(element, verdicts) {
                    Ok(reply) => reply,
                    Err(refusal) => return Flow::Close(refusal),
                }
            }
            (NS_DIALBACK, "verify") if element.attr("type").is_none() => {
                Some(self.dialback_verify(&element))
            }
            (NS_SM, "enable") if !self.authenticated.is_empty() => {
                self.acknowledging = true;
                Some(Element::bare("enabled", NS_SM))
            }
            (NS_SM, "r") if self.acknowledging => {
                // Only what is on disk is acknowledged.
                let mark = self.ctx.host.durable_mark();
                self.pending_acks.push(self.handled, mark);
                None
            }
            (ns, name) => {
                tracing::debug!(ns, name, "ignoring an element on an inbound s2s stream");
                None
            }
        };
        match reply {
            Some(reply) if stream.send(&reply).await.is_err() => {
                Flow::Close((DefinedCondition::UndefinedCondition, "write failed"))
            }
            _ => Flow::Continue,
        }
    }

    async fn stanza(&mut self, stanza: Element) -> Flow {
        if self.authenticated.is_empty() {
            return Flow::Close((DefinedCondition::NotAuthorized, "authenticate first"));
        }
        let (Some(from), Some(to)) = (
            xml::domain_of(stanza.attr("from")),
            xml::domain_of(stanza.attr("to")),
        ) else {
            return Flow::Close((
                DefinedCondition::ImproperAddressing,
                "stanzas between servers need valid 'from' and 'to'",
            ));
        };
        let pair = Pair {
            local: to,
            remote: from,
        };
        if !self.authenticated.contains_key(&pair) {
            if self.authenticated.keys().any(|p| p.remote == pair.remote) {
                return Flow::Close((
                    DefinedCondition::HostUnknown,
                    "this stream was not authenticated for that 'to' domain",
                ));
            }
            return Flow::Close((
                DefinedCondition::InvalidFrom,
                "the 'from' domain was not authenticated on this stream",
            ));
        }
        self.ctx.host.deliver(xml::to_client(stanza)).await;
        self.handled = self.handled.wrapping_add(1);
        self.ctx.inbound_received(self.number);
        Flow::Continue
    }

    async fn sasl_external(&mut self, stream: &mut S2sStream, auth: &Element) -> Flow {
        let authzid = base64::engine::general_purpose::STANDARD
            .decode(auth.text().trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let domain = (auth.attr("mechanism") == Some("EXTERNAL") && self.authenticated.is_empty())
            .then(|| self.external_domain(authzid.as_deref()))
            .flatten()
            .filter(|d| self.claimed.as_deref().is_none_or(|c| c == d));
        let Some(domain) = domain else {
            let failure = Element::builder("failure", NS_SASL)
                .append(Element::bare("not-authorized", NS_SASL))
                .build();
            return match stream.send(&failure).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Close((DefinedCondition::UndefinedCondition, "write failed")),
            };
        };
        self.claimed = Some(domain.clone());
        self.authenticate(
            Pair {
                local: self.local.clone(),
                remote: domain,
            },
            AuthMethod::Certificate,
        );
        Flow::Restart
    }

    /// `<db:result>` from an originating server: verify, in a task. A
    /// pair asked for again while under way or once authenticated is
    /// ignored; more pairs under way than `max_pending_dialbacks` end the
    /// stream, and more verifications than `max_dialback_verifications`
    /// on the whole server are answered with a `resource-constraint`
    /// error.
    fn dialback_request(
        &mut self,
        request: Element,
        verdicts: &mpsc::Sender<Verdict>,
    ) -> Result<Option<Element>, Refusal> {
        let (Some(remote), Some(local)) = (request.attr("from"), request.attr("to")) else {
            return Ok(None);
        };
        let pair = Pair {
            local: local.to_owned(),
            remote: remote.to_owned(),
        };
        let ctx = self.ctx.clone();
        if !ctx.settings.is_local(&pair.local) || !ctx.settings.policy.allows(&pair.remote) {
            return Ok(Some(dialback::result_answer(
                &pair.local,
                &pair.remote,
                false,
            )));
        }
        if self.verifying.contains(&pair) || self.authenticated.contains_key(&pair) {
            return Ok(None);
        }
        if self.verifying.len() >= ctx.settings.max_pending_dialbacks {
            return Err((
                DefinedCondition::PolicyViolation,
                "too many dialback requests under way",
            ));
        }
        if ctx.settings.certificate_auth
            && ctx.tls.check_peer(&self.certificates, &pair.remote).is_ok()
        {
            // XEP-0344: a certificate valid for the domain proves it
            // (unless certificates are not to be used at all).
            self.verifying.insert(pair.clone());
            let _ = verdicts.try_send(Verdict { pair, valid: true });
            return Ok(None);
        }
        let Ok(permit) = ctx.verifications.clone().try_acquire_owned() else {
            tracing::info!(%pair, "too many dialback verifications under way");
            return Ok(Some(dialback::result_busy(&pair.local, &pair.remote)));
        };
        self.verifying.insert(pair.clone());
        let key = request.text();
        let stream_id = self.stream_id.clone();
        let verdicts = verdicts.clone();
        ctx.tracker.clone().spawn(async move {
            let _permit = permit;
            let valid = match ctx.dialer.verify_dialback(&pair, &stream_id, &key).await {
                Ok(valid) => valid,
                Err(e) => {
                    tracing::info!(%pair, "dialback verification failed: {e}");
                    false
                }
            };
            let _ = verdicts.send(Verdict { pair, valid }).await;
        });
        Ok(None)
    }

    async fn verdict(&mut self, stream: &mut S2sStream, verdict: Verdict) -> Flow {
        let Verdict { pair, valid } = verdict;
        self.verifying.remove(&pair);
        let answer = dialback::result_answer(&pair.local, &pair.remote, valid);
        if stream.send(&answer).await.is_err() {
            return Flow::Close((DefinedCondition::UndefinedCondition, "write failed"));
        }
        if !valid {
            tracing::info!(%pair, "refused a peer that failed dialback");
            return Flow::Close((DefinedCondition::NotAuthorized, "dialback failed"));
        }
        self.authenticate(pair, AuthMethod::Dialback);
        Flow::Continue
    }

    /// `<db:verify>`: whether a key is one we sent.
    fn dialback_verify(&self, request: &Element) -> Element {
        let receiving = request.attr("from").unwrap_or_default();
        let originating = request.attr("to").unwrap_or_default();
        let id = request.attr("id").unwrap_or_default();
        let valid = self.ctx.settings.is_local(originating)
            && self
                .ctx
                .secret
                .verify(receiving, originating, id, &request.text());
        dialback::verify_answer(originating, receiving, id, valid)
    }

    fn authenticate(&mut self, pair: Pair, method: AuthMethod) {
        tracing::info!(%pair, %method, "inbound s2s stream authenticated");
        self.ctx
            .inbound_authenticated(self.number, pair.clone(), method);
        self.authenticated.insert(pair, method);
    }
}

/// The status of a new inbound stream.
pub(crate) fn new_status(peer: SocketAddr) -> InboundStatus {
    InboundStatus {
        peer: peer.to_string(),
        authenticated: Vec::new(),
        received: 0,
    }
}
