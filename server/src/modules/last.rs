//! Last Activity (XEP-0012): the server's uptime, and how long ago a
//! user was last online, to the user and to contacts subscribed to
//! their presence.

use std::time::Instant;

use jid::BareJid;
use minidom::Element;

use crate::server::Server;
use crate::stanza::{self, errors, set_attr};

/// The last activity namespace.
pub const NS: &str = "jabber:iq:last";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// The answer to a query to the server: seconds since it started.
pub fn uptime(started: Instant, iq: &Element) -> Option<Element> {
    Some(stanza::iq_result(
        iq,
        Some(query(started.elapsed().as_secs(), "")),
    ))
}

/// The answer to a query to `owner`'s bare JID by `requester`: 0 while
/// the user is online, else seconds since the last session ended.
/// Refused unless the requester is the owner or subscribed.
pub async fn of_user(
    server: &Server,
    requester: &BareJid,
    owner: &str,
    iq: &Element,
) -> Option<Element> {
    if server.local_user(requester) != Some(owner) && !subscribed(server, owner, requester).await {
        return errors::forbidden(iq, "only contacts subscribed to this user's presence");
    }
    if server
        .sessions
        .resources(owner)
        .iter()
        .any(|r| r.available())
    {
        return Some(stanza::iq_result(iq, Some(query(0, ""))));
    }
    if let Err(e) = server.logouts.flushed().await {
        tracing::error!("the last activity writer failed: {e}");
    }
    match server.storage.last_activity(owner).await {
        Ok(Some((at, status))) => {
            let seconds = (chrono::Utc::now().timestamp() - at).max(0) as u64;
            Some(stanza::iq_result(iq, Some(query(seconds, &status))))
        }
        Ok(None) => errors::service_unavailable(iq, "no activity recorded"),
        Err(e) => {
            tracing::error!("reading last activity failed: {e}");
            errors::internal(iq)
        }
    }
}

/// Records that `username`'s last session ended, with its last status.
pub async fn record_logout(server: &Server, username: &str, status: &str) {
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = server.logouts.record(username, now, status).await {
        tracing::error!("recording last activity failed: {e}");
    }
}

async fn subscribed(server: &Server, owner: &str, requester: &BareJid) -> bool {
    match server
        .storage
        .roster_item(owner, &requester.to_string())
        .await
    {
        Ok(item) => item.is_some_and(|i| i.subscription.has_from()),
        Err(e) => {
            tracing::error!("reading a roster failed: {e}");
            false
        }
    }
}

fn query(seconds: u64, status: &str) -> Element {
    let mut query = Element::bare("query", NS);
    set_attr(&mut query, "seconds", seconds.to_string());
    if !status.is_empty() {
        query.append_text(status);
    }
    query
}
