//! The loop of one authenticated client session: reads stanzas and hands
//! them to the router, writes what other sessions queue for it, keeps the
//! connection alive, and cleans up (unavailable presence, unbinding,
//! re-routing what was still queued) when it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_xmpp::xmlstream::ReadError;
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::negotiation::{
    close_stream, flush_stream, negotiate, read_failure, refuse_in_place, C2sStream, C2sXmlStream,
    TlsMode,
};
use crate::modules::{ciphertext, message, offline, presence};
use crate::router::{self, SessionCtx};
use crate::server::Server;
use crate::sessions::Outbound;
use crate::stanza;

/// Runs a client connection from accept to close.
pub async fn run(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, mode: TlsMode) {
    let negotiated = tokio::select! {
        result = negotiate(Box::new(tcp), peer, mode, &server.c2s, &*server) => result,
        _ = server.shutdown.cancelled() => return,
    };
    let C2sStream {
        mut stream,
        budget,
        jid,
        binding: (handle, mut rx),
        ..
    } = match negotiated {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, "negotiation ended: {e}");
            return;
        }
    };
    tracing::info!(%jid, %peer, "session started");
    let mut ctx = SessionCtx {
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
    let mut write_failed = false;
    let end = loop {
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => break Some((StreamCondition::SystemShutdown, "the server is shutting down")),
            outbound = rx.recv() => match outbound {
                Some(Outbound::Stanza(stanza)) => {
                    if write(&mut stream, &stanza, &rx).await.is_err() {
                        write_failed = true;
                        break None;
                    }
                }
                Some(Outbound::Close(condition, text)) => break Some((condition, text)),
                None => break None,
            },
            inbound = stream.next() => match inbound {
                Some(Ok(stanza)) => {
                    budget.reset();
                    router::route_from_client(&server, &mut ctx, stanza).await;
                    if std::mem::take(&mut ctx.deliver_offline) {
                        if let Err(e) = deliver_offline(&server, &ctx, &mut stream).await {
                            tracing::warn!(jid = %ctx.jid, "offline delivery interrupted: {e}");
                            break None;
                        }
                    }
                    if let Some(close) = ctx.close_after.take() {
                        flush_queue(&mut stream, &mut rx).await;
                        break Some(close);
                    }
                }
                Some(Err(ReadError::SoftTimeout)) => {
                    if write(&mut stream, &keepalive_ping(&server, &ctx), &rx).await.is_err() {
                        break None;
                    }
                }
                Some(Err(ReadError::HardError(e))) => {
                    tracing::info!(jid = %ctx.jid, "stream ended: {}", read_failure(&mut stream, e).await);
                    break None;
                }
                Some(Err(ReadError::ParseError(e))) => {
                    tracing::info!(jid = %ctx.jid, "unparsable element: {e}");
                    break Some((StreamCondition::BadFormat, "cannot parse that element"));
                }
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    tracing::debug!(jid = %ctx.jid, "the client closed the stream");
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), close_stream(&mut stream)).await;
                    break None;
                }
            }
        }
    };
    if let Some((condition, text)) = end {
        refuse_in_place(&mut stream, condition, text).await;
    }
    if write_failed {
        drain_input(&server, &mut ctx, &mut stream).await;
    }
    drop(stream);
    end_session(&server, &mut ctx, rx).await;
}

/// After the connection broke for writing (the client went away without
/// waiting for our answers): what the client sent before is still read
/// and handled, for a short while, so that none of it is lost.
async fn drain_input(server: &Server, ctx: &mut SessionCtx, stream: &mut C2sXmlStream) {
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(stanza)) = stream.next().await {
            router::route_from_client(server, ctx, stanza).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(jid = %ctx.jid, "stopped reading a broken connection");
    }
}

/// Writes a stanza, flushing only when nothing else is queued, so that
/// bursts go out in few TLS records.
async fn write(
    stream: &mut C2sXmlStream,
    stanza: &Element,
    rx: &mpsc::Receiver<Outbound>,
) -> std::io::Result<()> {
    tracing::trace!(name = stanza.name(), id = ?stanza.attr("id"), "stanza to client");
    stream.feed(stanza).await?;
    if rx.is_empty() {
        flush_stream(stream).await?;
    }
    Ok(())
}

/// Writes out what is already queued (before a handler-requested close).
async fn flush_queue(stream: &mut C2sXmlStream, rx: &mut mpsc::Receiver<Outbound>) {
    while let Ok(Outbound::Stanza(stanza)) = rx.try_recv() {
        if stream.feed(&stanza).await.is_err() {
            return;
        }
    }
    let _ = flush_stream(stream).await;
}

/// Writes the user's offline messages to this session and deletes them
/// once they are flushed to the connection.
async fn deliver_offline(
    server: &Server,
    ctx: &SessionCtx,
    stream: &mut C2sXmlStream,
) -> std::io::Result<()> {
    let stored = match server.storage.offline_messages(&ctx.username).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!("reading offline messages failed: {e}");
            return Ok(());
        }
    };
    let Some(last) = stored.last().map(|m| m.id) else {
        return Ok(());
    };
    for mut message in offline::parse_stored(&stored) {
        stanza::set_attr(&mut message, "to", ctx.jid.to_string());
        stream.feed(&message).await?;
    }
    flush_stream(stream).await?;
    if let Err(e) = server.storage.delete_offline(&ctx.username, last).await {
        tracing::error!("deleting delivered offline messages failed: {e}");
    }
    tracing::debug!(jid = %ctx.jid, count = stored.len(), "delivered offline messages");
    Ok(())
}

/// How long [`drain_input`] reads.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

fn keepalive_ping(server: &Server, ctx: &SessionCtx) -> Element {
    let mut iq = stanza::new_stanza("iq");
    stanza::set_attr(&mut iq, "type", "get");
    stanza::set_attr(&mut iq, "id", "tern-keepalive");
    stanza::set_attr(&mut iq, "from", server.config.domain.clone());
    stanza::set_attr(&mut iq, "to", ctx.jid.to_string());
    iq.append_child(Element::bare("ping", crate::modules::ping::NS));
    iq
}

/// Unbinds the session, broadcasts unavailable presence, and re-routes
/// messages that were queued for it but never written, so that none is
/// lost: they go to the user's other resources or to offline storage.
async fn end_session(server: &Server, ctx: &mut SessionCtx, mut rx: mpsc::Receiver<Outbound>) {
    server
        .sessions
        .unbind(&ctx.username, ctx.jid.resource().as_str(), ctx.handle.id);
    if let Err(e) = presence::go_unavailable(server, ctx, None).await {
        tracing::error!("broadcasting unavailable presence failed: {e}");
    }
    rx.close();
    while let Ok(outbound) = rx.try_recv() {
        let Outbound::Stanza(stanza) = outbound else {
            continue;
        };
        if stanza.name() == "message"
            && matches!(stanza.attr("type"), None | Some("chat") | Some("normal"))
        {
            let storable = !ciphertext::is_plaintext(&stanza);
            let _ = message::deliver(server, stanza, &ctx.username, None, storable).await;
        }
    }
    tracing::info!(jid = %ctx.jid, "session ended");
}
