//! The outbound link of one (local, remote) pair: a task that drains the
//! pair's durable queue in order over one authenticated stream.
//!
//! - Stanzas leave the queue once the peer has them: acknowledged with
//!   XEP-0198 `<a h/>` when the peer enabled stream management, or once
//!   written otherwise. A stream that breaks leaves the unacknowledged
//!   ones queued; the next stream sends them again, in order.
//! - Failed attempts are retried with exponential backoff (one second,
//!   doubling, up to `retry_max`); stanzas older than `bounce_after` are
//!   bounced with `remote-server-timeout`; a domain without any address
//!   bounces at once with `remote-server-not-found`.
//! - A stream with nothing to send or to wait for closes after
//!   `idle_after`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_xmpp::xmlstream::ReadError;
use xmpp_parsers::stanza_error::DefinedCondition;

use crate::federation::Context;
use crate::host::Pair;
use crate::outbound::{stream_error_text, Outbound};
use crate::status::{LinkState, LinkStatus};
use crate::xml::{self, NS_SM};

/// Stanzas read from the queue at a time.
const BATCH: u32 = 256;

/// The first retry delay.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// A link's shared half: woken when stanzas are queued, read for status.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) notify: Notify,
    pub(crate) status: std::sync::Mutex<LinkStatus>,
}

impl Link {
    pub(crate) fn new(pair: Pair) -> Self {
        Self {
            notify: Notify::new(),
            status: std::sync::Mutex::new(LinkStatus {
                pair,
                state: LinkState::Idle,
                auth: None,
                endpoint: None,
                acknowledged: false,
                queued: 0,
                delivered: 0,
                bounced: 0,
                last_error: None,
            }),
        }
    }

    fn update(&self, change: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }
}

/// Runs the link of `pair` until the server shuts down.
pub(crate) async fn run(ctx: Arc<Context>, link: Arc<Link>, pair: Pair) {
    let mut backoff = INITIAL_BACKOFF;
    while !ctx.shutdown.is_cancelled() {
        match ctx.queue.pending(pair.clone(), 0, 1).await {
            Ok(first) if first.is_empty() => {
                link.update(|s| s.state = LinkState::Idle);
                tokio::select! {
                    _ = link.notify.notified() => continue,
                    _ = ctx.shutdown.cancelled() => return,
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(%pair, "{e}");
                if pause(&ctx, INITIAL_BACKOFF).await.is_err() {
                    return;
                }
                continue;
            }
        }
        bounce_expired(&ctx, &link, &pair).await;
        link.update(|s| s.state = LinkState::Connecting);
        match ctx.dialer.connect(&pair).await {
            Ok(outbound) => {
                backoff = INITIAL_BACKOFF;
                tracing::info!(%pair, endpoint = %outbound.endpoint, auth = %outbound.auth, "s2s stream up");
                link.update(|s| {
                    s.state = LinkState::Connected;
                    s.auth = Some(outbound.auth);
                    s.endpoint = Some(outbound.endpoint.to_string());
                    s.acknowledged = outbound.acknowledged;
                    s.last_error = None;
                });
                if let Err(e) = send_loop(&ctx, &link, &pair, outbound).await {
                    tracing::info!(%pair, "s2s stream ended: {e}");
                    link.update(|s| s.last_error = Some(e));
                }
            }
            Err(e) if e.is_permanent() => {
                tracing::info!(%pair, "{e}");
                let text = e.to_string();
                link.update(|s| s.last_error = Some(text.clone()));
                bounce_all(
                    &ctx,
                    &link,
                    &pair,
                    DefinedCondition::RemoteServerNotFound,
                    &text,
                )
                .await;
            }
            Err(e) => {
                tracing::info!(%pair, retry_in = ?backoff, "s2s connection failed: {e}");
                link.update(|s| {
                    s.last_error = Some(e.to_string());
                    s.state = LinkState::Retrying {
                        in_secs: backoff.as_secs(),
                    };
                });
                if pause(&ctx, backoff).await.is_err() {
                    return;
                }
                backoff = (backoff * 2).min(ctx.settings.retry_max.max(INITIAL_BACKOFF));
            }
        }
    }
}

/// Sleeps, or `Err` when the server shuts down meanwhile.
async fn pause(ctx: &Context, duration: Duration) -> Result<(), ()> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.shutdown.cancelled() => Err(()),
    }
}

/// Sends queued stanzas as they come until the stream breaks (`Err`),
/// goes idle or the server shuts down (`Ok`).
async fn send_loop(
    ctx: &Context,
    link: &Link,
    pair: &Pair,
    mut out: Outbound,
) -> Result<(), String> {
    let mut sent_up_to = 0i64;
    let mut in_flight: VecDeque<i64> = VecDeque::new();
    let mut acked: u32 = 0;
    let mut last_activity = Instant::now();
    loop {
        let batch = ctx
            .queue
            .pending(pair.clone(), sent_up_to, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if !batch.is_empty() {
            let mut written = Vec::with_capacity(batch.len());
            for queued in batch {
                sent_up_to = queued.id;
                // Written as queued, around the stream's encoder (nothing
                // else is written between two flushes but `<r/>` after).
                let io = out.stream.get_stream();
                if in_server_namespace(&queued.stanza) {
                    io.write_text(&queued.stanza);
                    written.push(queued.id);
                    continue;
                }
                match queued.stanza.parse::<Element>() {
                    Ok(stanza) => {
                        io.write_element(&xml::to_server(stanza));
                        written.push(queued.id);
                    }
                    Err(e) => {
                        tracing::error!(%pair, id = queued.id, "dropping an unreadable queued stanza: {e}");
                        let _ = ctx.queue.remove(vec![queued.id]).await;
                    }
                }
            }
            if out.acknowledged {
                out.stream
                    .feed(&Element::bare("r", NS_SM))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            SinkExt::<&Element>::flush(&mut out.stream)
                .await
                .map_err(|e| e.to_string())?;
            if out.acknowledged {
                in_flight.extend(written);
            } else {
                delivered(ctx, link, written).await?;
            }
            last_activity = Instant::now();
            continue;
        }
        let idle_at = last_activity + ctx.settings.idle_after;
        tokio::select! {
            _ = link.notify.notified() => {}
            read = out.stream.next() => match read {
                Some(Ok(element)) => {
                    out.budget.reset();
                    if element.is("a", NS_SM) {
                        let h: u32 = element.attr("h").and_then(|h| h.parse().ok()).unwrap_or(acked);
                        let count = (h.wrapping_sub(acked) as usize).min(in_flight.len());
                        acked = h;
                        let ids: Vec<i64> = in_flight.drain(..count).collect();
                        delivered(ctx, link, ids).await?;
                    } else if element.is("error", "http://etherx.jabber.org/streams") {
                        return Err(format!("the peer sent a stream error: {}", stream_error_text(&element)));
                    } else {
                        tracing::debug!(%pair, name = element.name(), "ignoring an element on an outbound stream");
                    }
                }
                Some(Err(ReadError::SoftTimeout | ReadError::ParseError(_))) => {}
                Some(Err(ReadError::HardError(e))) => return Err(e.to_string()),
                Some(Err(ReadError::StreamFooterReceived)) | None => {
                    xml::close(&mut out.stream).await;
                    return Err("the peer closed the stream".to_owned());
                }
            },
            _ = tokio::time::sleep_until(idle_at), if in_flight.is_empty() => {
                tracing::debug!(%pair, "closing an idle s2s stream");
                xml::close(&mut out.stream).await;
                return Ok(());
            }
            _ = ctx.shutdown.cancelled() => {
                xml::close(&mut out.stream).await;
                return Ok(());
            }
        }
    }
}

/// The peer has these stanzas: off the queue.
async fn delivered(ctx: &Context, link: &Link, ids: Vec<i64>) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let count = ids.len() as u64;
    ctx.queue.remove(ids).await.map_err(|e| e.to_string())?;
    link.update(|s| s.delivered += count);
    Ok(())
}

/// Bounces the stanzas queued longer ago than `bounce_after`.
async fn bounce_expired(ctx: &Context, link: &Link, pair: &Pair) {
    let cutoff = unix_now() - ctx.settings.bounce_after.as_secs() as i64;
    let text = format!(
        "{} could not be reached for {} s",
        pair.remote,
        ctx.settings.bounce_after.as_secs()
    );
    bounce_while(
        ctx,
        link,
        pair,
        DefinedCondition::RemoteServerTimeout,
        &text,
        |q| q.queued_at <= cutoff,
    )
    .await;
}

/// Bounces everything queued for `pair`.
async fn bounce_all(
    ctx: &Context,
    link: &Link,
    pair: &Pair,
    condition: DefinedCondition,
    text: &str,
) {
    bounce_while(ctx, link, pair, condition, text, |_| true).await;
}

/// Bounces queued stanzas, oldest first, while `expired` holds.
async fn bounce_while(
    ctx: &Context,
    link: &Link,
    pair: &Pair,
    condition: DefinedCondition,
    text: &str,
    expired: impl Fn(&crate::host::Queued) -> bool,
) {
    loop {
        let batch = match ctx.queue.pending(pair.clone(), 0, BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(%pair, "{e}");
                return;
            }
        };
        let expired: Vec<_> = batch.into_iter().take_while(|q| expired(q)).collect();
        if expired.is_empty() {
            return;
        }
        // Only a whole batch of expired stanzas may have more behind it.
        let more = expired.len() == BATCH as usize;
        let ids: Vec<i64> = expired.iter().map(|q| q.id).collect();
        if let Err(e) = ctx.queue.remove(ids).await {
            tracing::error!(%pair, "{e}");
            return;
        }
        link.update(|s| s.bounced += expired.len() as u64);
        for queued in expired {
            if let Ok(stanza) = queued.stanza.parse::<Element>() {
                ctx.host
                    .bounce(xml::to_client(stanza), condition.clone(), text.to_owned())
                    .await;
            }
        }
        if !more {
            return;
        }
    }
}

/// Whether a queued stanza is serialised in `jabber:server`, ready to be
/// written as it is (`xml_text` declares the namespace first).
fn in_server_namespace(stanza: &str) -> bool {
    stanza
        .split_once(' ')
        .and_then(|(_, rest)| rest.strip_prefix("xmlns='"))
        .and_then(|rest| rest.strip_prefix(xml::NS_SERVER))
        .is_some_and(|rest| rest.starts_with('\''))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_queued_in_jabber_server_are_written_as_they_are() {
        let queued = crate::xml_text::to_text_renamed(
            &"<message xmlns='jabber:client' to='a@b'/>"
                .parse::<Element>()
                .expect("test XML"),
            xml::NS_CLIENT,
            xml::NS_SERVER,
        );
        assert!(in_server_namespace(&queued));
        // Rows queued by earlier versions are parsed and renamed.
        assert!(!in_server_namespace(
            "<message xmlns=\"jabber:client\" to=\"a@b\"/>"
        ));
        assert!(!in_server_namespace("<message/>"));
    }
}
