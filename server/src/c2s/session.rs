//! The loop of one authenticated client session: reads stanzas and hands
//! them to the router, writes what other sessions queue for it, keeps the
//! connection alive, answers Stream Management (XEP-0198), waits for a
//! resumption when a resumable connection drops, and cleans up
//! (unavailable presence, unbinding, re-routing what the client never
//! got) when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::io::StanzaBudget;
use super::negotiation::{negotiate, C2sStream, Negotiated, TlsMode};
use super::stanza_stream::{Input, StanzaStream};
use super::stream_management::{self as sm, Acks, ResumeRequest};
use crate::modules::{blocking, ciphertext, csi, last, mam, message, offline, presence, push};
use crate::router::{self, SessionCtx};
use crate::server::Server;
use crate::session_queue::{CloseSignal, QueueReceiver};
use crate::sessions::{Outbound, SessionHandle, SESSION_QUEUE};
use crate::stanza::{self, errors};
use tern_xmpp::sm::PendingAcks;

/// How a session ends after a failed write: a write past its deadline
/// means a client that does not read.
fn write_failure(e: &std::io::Error) -> Ended {
    if e.kind() == std::io::ErrorKind::TimedOut {
        Ended::Error(StreamCondition::PolicyViolation, "not reading fast enough")
    } else {
        Ended::Broken { write_failed: true }
    }
}

/// Returns once the acknowledgement waiting in `pending` may be sent;
/// never when none waits. (Boxed: an idle session's task stays small.)
async fn ack_when_durable(server: &Server, pending: Option<(u32, u64)>) {
    match pending {
        Some((_, mark)) => Box::pin(server.archive.durable(mark)).await,
        None => std::future::pending().await,
    }
}

/// Runs a client connection from accept to close.
pub async fn run(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, mode: TlsMode) {
    serve_connection(server, Box::new(tcp), peer, mode).await;
}

/// Negotiates a connection over any transport (TCP, or a WebSocket) and
/// runs its session.
pub async fn serve_connection(
    server: Arc<Server>,
    transport: super::io::BoxedTransport,
    peer: SocketAddr,
    mode: TlsMode,
) {
    // Boxed: its state is large and only needed until the session is
    // bound, while the task lives as long as the connection.
    let negotiation = Box::pin(negotiate(transport, peer, mode, &server.c2s, &*server));
    let negotiated = tokio::select! {
        result = negotiation => result,
        _ = server.shutdown.cancelled() => return,
    };
    let bound = match negotiated {
        Ok(Negotiated::Bound(bound)) => bound,
        Ok(Negotiated::Resumed) => {
            tracing::debug!(%peer, "connection resumed an earlier session");
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, "negotiation ended: {e}");
            return;
        }
    };
    let (session, stream, budget) = Session::start(server, bound);
    // Boxed: an async fn keeps its arguments twice in its state (as
    // received and as moved into its body); boxes make both copies small.
    Box::new(session).run(Box::new(stream), budget).await;
}

/// How one connection of a session ended.
enum Ended {
    /// Close the stream with this error; the session ends.
    Error(StreamCondition, &'static str),
    /// The client closed the stream; the session ends.
    ClientClosed,
    /// The connection broke; a resumable session waits for its client.
    Broken {
        /// Whether writing failed (the client's last input is still read).
        write_failed: bool,
    },
    /// A new connection resumed the session.
    TakenOver(Box<ResumeRequest>),
}

/// What follows the end of a connection.
enum Next {
    /// The session goes on over the connection that resumed it.
    Resumed(Box<StanzaStream>, StanzaBudget),
    /// The session ends.
    End,
}

/// A bound session and what it keeps across connections.
struct Session {
    server: Arc<Server>,
    ctx: SessionCtx,
    rx: QueueReceiver<Outbound>,
    /// Raised when the session is asked to close: a write to a client
    /// that stopped reading gives up at once.
    stuck: CloseSignal<Outbound>,
    /// Stream Management state, once the client enabled it.
    acks: Option<Acks>,
    /// Acknowledgements (`h`) that wait until the archive entries of the
    /// stanzas they count are on disk (the writer's durable mark), oldest
    /// first: the first `<r/>` waiting, and the latest one behind it.
    pending_acks: PendingAcks,
    /// Takeover requests, while the session is resumable.
    takeovers: Option<mpsc::Receiver<ResumeRequest>>,
    /// Stanzas that arrived while no connection was there.
    held: Vec<Element>,
    /// Client State Indication: what waits while the client is inactive.
    csi: csi::State,
}

impl Session {
    /// A session for a newly bound stream, and the stream it is served
    /// on. (Not inline in the connection's task: the negotiated stream
    /// is large, and a local of the task would keep its size for the
    /// life of the connection.)
    fn start(
        server: Arc<Server>,
        bound: Box<C2sStream<(SessionHandle, QueueReceiver<Outbound>)>>,
    ) -> (Session, StanzaStream, StanzaBudget) {
        let C2sStream {
            stream,
            budget,
            jid,
            binding: (handle, rx),
            peer,
        } = *bound;
        tracing::info!(%jid, %peer, "session started");
        let ctx = SessionCtx {
            username: jid
                .node()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            jid,
            handle,
            available: false,
            directed_presence: Vec::new(),
            deliver_offline: false,
            close_after: None,
        };
        let session = Session {
            server,
            ctx,
            stuck: rx.close_signal(),
            rx,
            acks: None,
            pending_acks: PendingAcks::default(),
            takeovers: None,
            held: Vec::new(),
            csi: csi::State::default(),
        };
        (session, stream, budget)
    }

    async fn run(mut self: Box<Self>, mut stream: Box<StanzaStream>, mut budget: StanzaBudget) {
        loop {
            let ended = self.serve(&mut stream, &budget).await;
            // Boxed: a task is as large as its largest state, and an idle
            // connection would carry the states of every way it can end.
            match Box::pin(self.after(ended, stream)).await {
                Next::Resumed(resumed, resumed_budget) => {
                    stream = resumed;
                    budget = resumed_budget;
                }
                Next::End => return Box::pin(self.end()).await,
            }
        }
    }

    /// What follows the end of a connection: the connection of the client
    /// that resumed the session, or the end of the session.
    async fn after(&mut self, ended: Ended, mut stream: Box<StanzaStream>) -> Next {
        match ended {
            Ended::Error(condition, text) => {
                self.unbind();
                stream.refuse(condition, text).await;
                Next::End
            }
            Ended::ClientClosed => {
                self.unbind();
                // The client chose to close: what it did not acknowledge
                // is re-routed, except what its archive holds (it catches
                // up there, without duplicates).
                if let Some(acks) = &mut self.acks {
                    let own = self.ctx.bare().to_string();
                    let unacked = acks.take_unacked();
                    self.held
                        .extend(unacked.into_iter().filter(|s| !mam::archived_by(s, &own)));
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
                Next::End
            }
            Ended::TakenOver(request) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
                drop(stream);
                let (stream, budget) = self.resume(*request).await;
                Next::Resumed(Box::new(stream), budget)
            }
            Ended::Broken { write_failed } => {
                if write_failed {
                    self.drain_input(&mut stream).await;
                }
                drop(stream);
                match self.wait_for_resumption().await {
                    Some(request) => {
                        let (stream, budget) = self.resume(request).await;
                        Next::Resumed(Box::new(stream), budget)
                    }
                    None => Next::End,
                }
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, stream: &mut StanzaStream, budget: &StanzaBudget) -> Ended {
        // Boxed, here and for an inbound stanza and a failure: this future
        // is as large as its largest state, and an idle session waits in
        // the smallest (in the select below).
        if let Err(ended) = Box::pin(self.write_held(stream)).await {
            return ended;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.server.shutdown.cancelled() => {
                    return Ended::Error(StreamCondition::SystemShutdown, "the server is shutting down");
                }
                Some(request) = next_takeover(&mut self.takeovers) => return Ended::TakenOver(request),
                _ = ack_when_durable(&self.server, self.pending_acks.first()) => {
                    if let Some(h) = self.pending_acks.pop() {
                        // Not through `write`: an `<a/>` is no stanza to
                        // keep until acknowledged.
                        let written = async {
                            stream.write_element(&sm::ack(h)).await?;
                            stream.flush().await
                        };
                        if written.await.is_err() {
                            return Ended::Broken { write_failed: true };
                        }
                    }
                }
                outbound = self.rx.recv() => {
                    let stanza = match outbound {
                        Some(Outbound::Stanza(stanza)) => {
                            let blocked = match blocking::blocks_sender_cached(&self.server, &self.ctx.username, &stanza) {
                                Some(blocked) => blocked,
                                None => Box::pin(blocking::blocks_sender(&self.server, &self.ctx.username, &stanza)).await,
                            };
                            if blocked {
                                Box::pin(refuse_blocked(&self.server, *stanza)).await;
                                continue;
                            }
                            *stanza
                        }
                        Some(Outbound::Reply(stanza)) => *stanza,
                        Some(Outbound::Close(close)) => return Ended::Error(close.0, close.1),
                        None => return Ended::Broken { write_failed: false },
                    };
                    for stanza in self.csi.process(stanza) {
                        if let Err(ended) = Box::pin(self.write_or_give_up(stream, stanza)).await {
                            return ended;
                        }
                    }
                    // What did not fit the queue waits in offline
                    // storage: it follows once the queue has drained.
                    if self.rx.is_empty() && self.rx.take_overflowed() && self.ctx.available {
                        if let Err(e) = Box::pin(self.deliver_offline(stream)).await {
                            tracing::info!(jid = %self.ctx.jid, "offline delivery interrupted: {e}");
                            return write_failure(&e);
                        }
                    }
                    if let Some(ended) = Box::pin(self.check_unacknowledged(stream)).await {
                        return ended;
                    }
                }
                inbound = stream.next() => match inbound {
                    Input::Element(element) => {
                        budget.reset();
                        if let Some(ended) = Box::pin(self.inbound(stream, element)).await {
                            return ended;
                        }
                    }
                    Input::Silent => {
                        let ping = keepalive_ping(&self.server, &self.ctx);
                        if self.write(stream, &ping).await.is_err() {
                            return Ended::Broken { write_failed: false };
                        }
                    }
                    Input::Failed(e) => {
                        let failure = Box::pin(stream.read_failure(e)).await;
                        tracing::info!(jid = %self.ctx.jid, "stream ended: {failure}");
                        return Ended::Broken { write_failed: false };
                    }
                    Input::Ended => {
                        tracing::debug!(jid = %self.ctx.jid, "the client closed the stream");
                        return Ended::ClientClosed;
                    }
                }
            }
        }
    }

    /// Handles one element from the client.
    async fn inbound(&mut self, stream: &mut StanzaStream, element: Element) -> Option<Ended> {
        if element.ns() == sm::NS {
            return self.stream_management(stream, &element).await;
        }
        if element.ns() == csi::NS {
            let flushed = self.csi.set_active(element.name() == "active");
            for stanza in flushed {
                if self.write(stream, &stanza).await.is_err() {
                    return Some(Ended::Broken { write_failed: true });
                }
            }
            return None;
        }
        if let (Some(acks), true) = (&mut self.acks, sm::is_stanza(&element)) {
            acks.received();
        }
        // Boxed, here and below: the router's state is large and short-lived,
        // while this task lives as long as the connection, at its largest
        // size (an idle connection would carry it).
        Box::pin(router::route_from_client(
            &self.server,
            &mut self.ctx,
            element,
        ))
        .await;
        if std::mem::take(&mut self.ctx.deliver_offline) {
            if let Err(e) = Box::pin(self.deliver_offline(stream)).await {
                tracing::warn!(jid = %self.ctx.jid, "offline delivery interrupted: {e}");
                return Some(write_failure(&e));
            }
        }
        if let Some((condition, text)) = self.ctx.close_after.take() {
            self.flush_queue(stream).await;
            return Some(Ended::Error(condition, text));
        }
        None
    }

    /// Answers `<enable/>`, `<r/>` and `<a/>`.
    async fn stream_management(
        &mut self,
        stream: &mut StanzaStream,
        element: &Element,
    ) -> Option<Ended> {
        let reply = match (element.name(), &mut self.acks) {
            ("enable", None) => Some(self.enable(element)),
            ("enable", Some(_)) => Some(sm::failed("unexpected-request", None)),
            ("r", Some(acks)) => {
                // Nothing is acknowledged before what it created is on
                // disk: the archive commits within its delay.
                let mark = self.server.archive.durable_mark();
                if self.pending_acks.is_empty() && self.server.archive.is_durable(mark) {
                    Some(sm::ack(acks.handled))
                } else {
                    // In order: after those still waiting.
                    self.pending_acks.push(acks.handled, mark);
                    None
                }
            }
            ("a", Some(acks)) => match sm::h_of(element).map(|h| acks.acknowledge(h)) {
                Some(Ok(())) => None,
                _ => {
                    return Some(Ended::Error(
                        StreamCondition::UndefinedCondition,
                        "that acknowledges stanzas never sent",
                    ))
                }
            },
            _ => Some(sm::failed("unexpected-request", None)),
        };
        let reply = reply?;
        let written = async {
            stream.write_element(&reply).await?;
            stream.flush().await
        };
        written
            .await
            .err()
            .map(|_| Ended::Broken { write_failed: true })
    }

    /// Enables Stream Management, resumable if asked and allowed.
    fn enable(&mut self, element: &Element) -> Element {
        let timeout = self.server.config.limits.resumption_timeout_secs;
        let wants_resume = matches!(element.attr("resume"), Some("true" | "1"));
        let resume_id = (wants_resume && timeout > 0).then(|| {
            let (id, takeovers) = self.server.resumptions.register(&self.ctx.username);
            self.takeovers = Some(takeovers);
            id
        });
        let enabled = sm::enabled(resume_id.as_deref().map(|id| (id, timeout)));
        tracing::debug!(jid = %self.ctx.jid, resumable = resume_id.is_some(), "stream management enabled");
        self.acks = Some(Acks::new(resume_id));
        enabled
    }

    /// Waits, while the session is resumable, for a connection to take
    /// it over; holds what arrives meanwhile.
    async fn wait_for_resumption(&mut self) -> Option<ResumeRequest> {
        self.takeovers.as_ref()?;
        let timeout = Duration::from_secs(self.server.config.limits.resumption_timeout_secs);
        tracing::info!(jid = %self.ctx.jid, "connection lost; the session waits to be resumed");
        let deadline = tokio::time::Instant::now() + timeout;
        let limit = self.server.config.limits.session_buffer_bytes;
        let mut held_bytes: usize = self.held.iter().map(crate::stanza::approx_len).sum();
        loop {
            tokio::select! {
                _ = self.server.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!(jid = %self.ctx.jid, "the session was not resumed in time");
                    return None;
                }
                Some(request) = next_takeover(&mut self.takeovers) => return Some(*request),
                outbound = self.rx.recv() => match outbound.and_then(Outbound::into_stanza) {
                    Some(stanza) if self.held.len() < SESSION_QUEUE && held_bytes <= limit => {
                        held_bytes += crate::stanza::approx_len(&stanza);
                        if stanza.name() == "message" && push::worth_notifying(&stanza) {
                            push::notify(&self.server, &self.ctx.username).await;
                        }
                        self.held.push(stanza);
                    }
                    Some(stanza) => {
                        self.held.push(stanza);
                        tracing::info!(jid = %self.ctx.jid, "too much waits for a lost connection; ending the session");
                        return None;
                    }
                    _ => return None,
                },
            }
        }
    }

    /// Continues on a resuming connection: `<resumed/>`, then every
    /// stanza the client did not acknowledge, then what was held.
    async fn resume(&mut self, request: ResumeRequest) -> (StanzaStream, StanzaBudget) {
        let ResumeRequest {
            mut stream,
            budget,
            h,
            previd,
            peer,
            ..
        } = request;
        tracing::info!(jid = %self.ctx.jid, %peer, "session resumed");
        let Some(acks) = &mut self.acks else {
            return (stream, budget);
        };
        if acks.acknowledge(h).is_err() {
            tracing::info!(jid = %self.ctx.jid, h, "the resuming client acknowledged more than was sent");
        }
        acks.reset_request();
        // `h` acknowledges what the client sent: only once it is on disk.
        self.pending_acks = PendingAcks::default();
        self.server
            .archive
            .durable(self.server.archive.durable_mark())
            .await;
        let resent: Vec<Element> = acks.take_unacked();
        let written = async {
            stream
                .write_element(&sm::resumed(&previd, acks.handled))
                .await?;
            stream.flush().await
        };
        if written.await.is_err() {
            self.held.splice(0..0, resent);
            return (stream, budget);
        }
        self.held.splice(0..0, resent);
        (stream, budget)
    }

    /// Writes the stanzas held while no connection was there.
    async fn write_held(&mut self, stream: &mut StanzaStream) -> Result<(), Ended> {
        let held = std::mem::take(&mut self.held);
        let mut pending = held.into_iter();
        for stanza in pending.by_ref() {
            if self.feed(stream, &stanza).await.is_err() {
                // Kept as unacknowledged: sent again on the next resumption.
                self.held.extend(pending);
                return Err(Ended::Broken { write_failed: true });
            }
        }
        self.flush(stream)
            .await
            .map_err(|_| Ended::Broken { write_failed: true })
    }

    /// After the connection broke for writing (the client went away
    /// without waiting for our answers): what the client sent before is
    /// still read and handled, for a short while, so that none of it is
    /// lost.
    async fn drain_input(&mut self, stream: &mut StanzaStream) {
        let server = self.server.clone();
        let ctx = &mut self.ctx;
        let acks = &mut self.acks;
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            while let Input::Element(element) = stream.next().await {
                if !sm::is_stanza(&element) {
                    continue;
                }
                if let Some(acks) = acks.as_mut() {
                    acks.received();
                }
                Box::pin(router::route_from_client(&server, ctx, element)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(jid = %self.ctx.jid, "stopped reading a broken connection");
        }
    }

    /// Bounds what was sent and not acknowledged: past the session's
    /// buffer (or 4,096 stanzas) the client is asked for an
    /// acknowledgement, and the session ends once such a request has gone
    /// unanswered for the write timeout, or at 16 times the buffer
    /// whatever happens. (A backlog delivered in one go is acknowledged
    /// after it, not during it.)
    async fn check_unacknowledged(&mut self, stream: &mut StanzaStream) -> Option<Ended> {
        let limits = &self.server.config.limits;
        let acks = self.acks.as_mut()?;
        let over =
            acks.pending() > SESSION_QUEUE || acks.pending_bytes() > limits.session_buffer_bytes;
        if !over {
            return None;
        }
        let timeout = Duration::from_secs(limits.write_timeout_secs);
        let ignored = acks.unanswered_for().is_some_and(|waited| waited > timeout);
        if ignored || acks.pending_bytes() > 16 * limits.session_buffer_bytes {
            return Some(Ended::Error(
                StreamCondition::PolicyViolation,
                "too many stanzas left unacknowledged",
            ));
        }
        if acks.should_request() {
            let asked = async {
                stream.write_element(&sm::request()).await?;
                stream.flush().await
            };
            if tokio::time::timeout(timeout, asked)
                .await
                .map_or(true, |r| r.is_err())
            {
                return Some(Ended::Broken { write_failed: true });
            }
        }
        None
    }

    /// Writes a stanza unless the client stopped reading: the write gives
    /// up after `limits.write_timeout_secs`, or at once when the session
    /// is asked to close. The session then ends as stuck, and
    /// the stanza (kept until acknowledged with Stream Management, held
    /// otherwise) goes with the rest of what it held to offline storage
    /// or back to its sender.
    async fn write_or_give_up(
        &mut self,
        stream: &mut StanzaStream,
        stanza: Element,
    ) -> Result<(), Ended> {
        let timeout = Duration::from_secs(self.server.config.limits.write_timeout_secs);
        let stuck = self.stuck.clone();
        let written = tokio::select! {
            written = self.write(stream, &stanza) => Ok(written),
            _ = stuck.requested() => Err(true),
            _ = tokio::time::sleep(timeout) => Err(false),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Broken { write_failed: true }),
            Err(asked) => Err(self.give_up(stanza, asked)),
        }
    }

    /// Ends a session whose write did not finish, keeping `stanza`:
    /// `asked` to close (the reason is queued), or its client does not
    /// read.
    fn give_up(&mut self, stanza: Element, asked: bool) -> Ended {
        if self.acks.is_none() {
            self.held.push(stanza);
        }
        if asked {
            // Up to the request, what is queued is kept with the rest.
            while let Some(outbound) = self.rx.try_recv() {
                match outbound {
                    Outbound::Close(close) => return Ended::Error(close.0, close.1),
                    other => self.held.extend(other.into_stanza()),
                }
            }
        }
        tracing::info!(jid = %self.ctx.jid, "the client does not read; closing its session");
        Ended::Error(StreamCondition::PolicyViolation, "not reading fast enough")
    }

    /// Writes a stanza, flushing only when nothing else is queued, so that
    /// bursts go out in few TLS records.
    async fn write(&mut self, stream: &mut StanzaStream, stanza: &Element) -> std::io::Result<()> {
        tracing::trace!(name = stanza.name(), id = ?stanza.attr("id"), "stanza to client");
        self.feed(stream, stanza).await?;
        if self.rx.is_empty() {
            self.flush(stream).await?;
        }
        Ok(())
    }

    /// Feeds a stanza to the stream, keeping it until acknowledged when
    /// Stream Management is on.
    async fn feed(&mut self, stream: &mut StanzaStream, stanza: &Element) -> std::io::Result<()> {
        if let Some(acks) = &mut self.acks {
            acks.sent(stanza);
        }
        stream.write_element(stanza).await
    }

    /// Flushes, asking for an acknowledgement of what was sent when
    /// Stream Management is on.
    async fn flush(&mut self, stream: &mut StanzaStream) -> std::io::Result<()> {
        if let Some(acks) = &mut self.acks {
            if acks.should_request() {
                stream.write_element(&sm::request()).await?;
            }
        }
        stream.flush().await
    }

    /// Writes out what is already queued (before a handler-requested close).
    async fn flush_queue(&mut self, stream: &mut StanzaStream) {
        while let Some(stanza) = self.rx.try_recv().and_then(Outbound::into_stanza) {
            if self.feed(stream, &stanza).await.is_err() {
                return;
            }
        }
        let _ = stream.flush().await;
    }

    /// Writes the user's offline messages to this session and deletes them
    /// once they are flushed to the connection (and, with Stream
    /// Management, kept until acknowledged).
    async fn deliver_offline(&mut self, stream: &mut StanzaStream) -> std::io::Result<()> {
        let server = self.server.clone();
        let stored = match server.storage.offline_messages(&self.ctx.username).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!("reading offline messages failed: {e}");
                return Ok(());
            }
        };
        let Some(last) = stored.last().map(|m| m.id) else {
            return Ok(());
        };
        // Each write within the deadline: a client that stops reading
        // keeps the messages in storage (they are deleted once written).
        let timeout = Duration::from_secs(self.server.config.limits.write_timeout_secs);
        let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        for mut message in offline::parse_stored(&stored) {
            stanza::set_attr(&mut message, "to", self.ctx.jid.to_string());
            tokio::time::timeout(timeout, self.feed(stream, &message))
                .await
                .map_err(|_| timed_out())??;
        }
        tokio::time::timeout(timeout, self.flush(stream))
            .await
            .map_err(|_| timed_out())??;
        if let Err(e) = server
            .storage
            .delete_offline(&self.ctx.username, last)
            .await
        {
            tracing::error!("deleting delivered offline messages failed: {e}");
        }
        tracing::debug!(jid = %self.ctx.jid, count = stored.len(), "delivered offline messages");
        Ok(())
    }

    /// Unbinds the session, broadcasts unavailable presence, and re-routes
    /// what the client never got (queued, held, or written but not
    /// acknowledged), so that none is lost: messages go to the user's
    /// other resources or to offline storage (or back to their sender when
    /// they may not be stored), IQ requests are answered with an error.
    async fn end(mut self) {
        let server = self.server.clone();
        self.unbind();
        if let Some(id) = self.acks.as_ref().and_then(|a| a.resume_id.as_deref()) {
            server.resumptions.remove(id);
        }
        // What the client never got goes first, to where it is kept:
        // everything after may take a while, and a crash meanwhile must
        // not lose it.
        self.rx.close();
        let mut undelivered = self
            .acks
            .as_mut()
            .map(Acks::take_unacked)
            .unwrap_or_default();
        undelivered.append(&mut self.held);
        undelivered.extend(self.csi.take_held());
        while let Some(outbound) = self.rx.try_recv() {
            undelivered.extend(outbound.into_stanza());
        }
        for stanza in undelivered {
            reroute(&server, &self.ctx, stanza).await;
        }
        let ctx = &mut self.ctx;
        if let Err(e) = presence::go_unavailable(&server, ctx, None).await {
            tracing::error!("broadcasting unavailable presence failed: {e}");
        }
        if server.sessions.resources(&ctx.username).is_empty() {
            last::record_logout(&server, &ctx.username, "").await;
        }
        tracing::info!(jid = %self.ctx.jid, "session ended");
    }

    /// Takes the session out of routing: from now on what arrives for
    /// this resource goes elsewhere (other resources, offline storage).
    /// Idempotent.
    fn unbind(&self) {
        let ctx = &self.ctx;
        self.server
            .sessions
            .unbind(&ctx.username, ctx.jid.resource().as_str(), ctx.handle.id);
    }
}

/// Gives a stanza the ended session never delivered to where it can go.
async fn reroute(server: &Server, ctx: &SessionCtx, stanza: Element) {
    let own = ctx.bare().to_string();
    let from = stanza.attr("from").unwrap_or_default();
    // Carbons, archive results and the like came from the user's own
    // account or the server: nothing to send back or keep.
    if from == own || from == server.config.domain || from.is_empty() {
        return;
    }
    match (stanza.name(), stanza.attr("type")) {
        ("message", None | Some("chat") | Some("normal")) => {
            let storable = !ciphertext::is_plaintext(&stanza);
            if let Err(Some(bounce)) =
                message::deliver(server, stanza, &ctx.username, None, storable).await
            {
                Box::pin(router::route_inbound(server, bounce)).await;
            }
        }
        ("iq", Some("get" | "set")) => {
            if let Some(error) = errors::service_unavailable(&stanza, "the recipient went away") {
                Box::pin(router::route_inbound(server, error)).await;
            }
        }
        _ => {}
    }
}

/// Answers a stanza from a JID the user blocks: messages and IQ
/// requests bounce with `service-unavailable`, the rest is dropped.
async fn refuse_blocked(server: &Server, stanza: Element) {
    let answer = match (stanza.name(), stanza.attr("type")) {
        ("message", Some("error" | "groupchat" | "headline")) => return,
        ("message", _) | ("iq", Some("get" | "set")) => errors::service_unavailable(&stanza, ""),
        _ => return,
    };
    if let Some(error) = answer {
        Box::pin(router::route_inbound(server, error)).await;
    }
}

/// The next takeover request, or never when the session is not
/// resumable.
async fn next_takeover(
    takeovers: &mut Option<mpsc::Receiver<ResumeRequest>>,
) -> Option<Box<ResumeRequest>> {
    match takeovers {
        // Boxed: the request holds a whole stream, and the session's
        // select would keep room for it while idle.
        Some(rx) => rx.recv().await.map(Box::new),
        None => std::future::pending().await,
    }
}

/// How long [`Session::drain_input`] reads.
const DRAIN_TIME: Duration = Duration::from_secs(5);

fn keepalive_ping(server: &Server, ctx: &SessionCtx) -> Element {
    let mut iq = stanza::new_stanza("iq");
    stanza::set_attr(&mut iq, "type", "get");
    stanza::set_attr(&mut iq, "id", "tern-keepalive");
    stanza::set_attr(&mut iq, "from", server.config.domain.clone());
    stanza::set_attr(&mut iq, "to", ctx.jid.to_string());
    iq.append_child(Element::bare("ping", crate::modules::ping::NS));
    iq
}
