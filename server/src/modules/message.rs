//! Message routing (RFC 6121 §8.5): to a full JID, to a bare JID by
//! priority, to offline storage, or back to the sender as an error.

use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use super::carbons::{self, Direction};
use super::{ciphertext, mam, offline};
use crate::c2s::negotiation::account_jid;
use crate::config::PlaintextPolicy;
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::sessions::Resource;
use crate::stanza::{self, errors};
use crate::storage::{ArchiveEntry, ArchiveKind, StoredMessage};

/// The `type` of a message, RFC 6121 §5.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// One-to-one chat.
    Chat,
    /// Multi-user chat (not served by this server's c2s routing).
    Groupchat,
    /// Alerts and notifications; never stored.
    Headline,
    /// Standalone message (the default).
    Normal,
    /// An error about an earlier message; never answered with an error.
    Error,
}

impl MessageKind {
    /// Reads the `type` attribute (unknown values count as `normal`, as
    /// RFC 6121 §5.2.2 asks).
    pub fn of(message: &Element) -> Self {
        match message.attr("type") {
            Some("chat") => Self::Chat,
            Some("groupchat") => Self::Groupchat,
            Some("headline") => Self::Headline,
            Some("error") => Self::Error,
            _ => Self::Normal,
        }
    }
}

/// Handles a message from a client session.
pub async fn from_client(
    server: &Server,
    session: &mut SessionCtx,
    message: Element,
    destination: Destination,
) {
    // RFC 6121 §8.1.1: a message without 'to' is for the sender's own bare JID.
    let destination = match destination {
        Destination::Server if message.attr("to").is_none() => {
            Destination::Account(session.username.clone())
        }
        other => other,
    };
    let one_to_one = matches!(
        destination,
        Destination::Account(_) | Destination::Resource(..) | Destination::Remote(_)
    );
    let (archived, carbon) = if one_to_one && !ciphertext::is_plaintext(&message) {
        (
            mam::outgoing(server, &message),
            carbons::wanted(server, &session.username, &message).then(|| message.clone()),
        )
    } else {
        (None, None)
    };
    let shared = archived.as_ref().map(|outgoing| &outgoing.message);
    let bounce = route(server, message, &session.bare(), destination, shared).await;
    if bounce.is_none() {
        if let Some(sent) = carbon {
            carbons::copy(
                server,
                &session.username,
                Direction::Sent,
                &sent,
                &[session.handle.id],
            );
        }
        if let Some(outgoing) = archived {
            let entry = ArchiveEntry {
                kind: ArchiveKind::User,
                owner: &session.username,
                with: &outgoing.with,
                message: &outgoing.message,
            };
            server.archive.append(entry).await;
        }
    }
    session.reply(bounce);
}

/// Handles a message from another server's user (or a bounce of ours).
/// Errors go back through federation.
pub async fn from_remote(
    server: &Server,
    message: Element,
    from: &BareJid,
    destination: Destination,
) {
    let bounce = route(server, message, from, destination, None).await;
    server.send_remote_reply(bounce).await;
}

/// Applies the ciphertext rule, then routes the message to a local user,
/// a group or another server. `archived`: the message as its local sender's
/// archive stored it, for a local recipient's archive to list too. Returns
/// the error for its sender, if any.
async fn route(
    server: &Server,
    message: Element,
    sender: &BareJid,
    destination: Destination,
    archived: Option<&Arc<StoredMessage>>,
) -> Option<Element> {
    let verdict = match &destination {
        // A room keeps its subject in memory only, and forwards an
        // invitation under the rule.
        Destination::Muc(..) if crate::muc::is_room_protocol(&message) => Ok(()),
        _ => ciphertext::check(&message),
    };
    let plaintext = verdict.is_err();
    if let (Err(reason), PlaintextPolicy::Refuse) = (verdict, server.config.plaintext) {
        tracing::debug!(%sender, reason, "refused a plaintext message");
        return stanza::error_reply(
            &message,
            ErrorType::Modify,
            DefinedCondition::PolicyViolation,
            &ciphertext::refusal_text(reason),
        );
    }
    let resource = match &destination {
        Destination::Resource(_, resource) => Some(resource.as_str()),
        _ => None,
    };
    match &destination {
        Destination::Server => None,
        Destination::Hub(Some(group)) => crate::hub::message(server, sender, message, group).await,
        Destination::Hub(None) => {
            errors::service_unavailable(&message, "send to a group's address")
        }
        Destination::Upload => {
            errors::service_unavailable(&message, "the upload service takes IQs")
        }
        Destination::Muc(room, nick) => {
            crate::muc::message(server, message, room.as_deref(), nick.as_deref()).await
        }
        Destination::Remote(_) => {
            server.send_remote(message).await;
            None
        }
        Destination::Account(user) | Destination::Resource(user, _) => {
            let storable = !plaintext;
            to_local_user(
                server,
                message,
                sender,
                (user, resource),
                storable,
                archived,
            )
            .await
        }
    }
}

/// Delivers a message to a local user (and resource, if given), archives
/// it in their archive (listing `archived` if the sender's archive stored
/// it already) and copies it to their carbons-enabled clients. Returns the
/// error for its sender, if any.
async fn to_local_user(
    server: &Server,
    mut message: Element,
    sender: &BareJid,
    (user, resource): (&str, Option<&str>),
    storable: bool,
    archived: Option<&Arc<StoredMessage>>,
) -> Option<Element> {
    if super::blocking::blocks(server, user, &Jid::from(sender.clone())).await {
        return errors::service_unavailable(&message, "");
    }
    let archived = match account_jid(user, &server.config.domain) {
        Some(owner) if storable => mam::stamp_incoming(server, &owner, &mut message, archived),
        _ => None,
    };
    let carbon = (storable && carbons::wanted(server, user, &message)).then(|| message.clone());
    let delivered = match deliver(server, message, user, resource, storable).await {
        Ok(delivered) => delivered,
        Err(bounce) => return bounce,
    };
    if let Some(copy) = carbon {
        carbons::copy(server, user, Direction::Received, &copy, &delivered);
    }
    if let Some(stored) = archived {
        let entry = ArchiveEntry {
            kind: ArchiveKind::User,
            owner: user,
            with: sender.as_str(),
            message: &stored,
        };
        server.archive.append(entry).await;
    }
    None
}

/// Delivers a message to a local user, by RFC 6121 rules. `storable`: may
/// go to offline storage. On failure returns the error to send back to the
/// sender (`None` when the message is to be dropped silently). On success,
/// the sessions that got it live (none when it was stored offline).
pub async fn deliver(
    server: &Server,
    mut message: Element,
    user: &str,
    resource: Option<&str>,
    storable: bool,
) -> Result<Vec<u64>, Option<Element>> {
    let kind = MessageKind::of(&message);
    if let Some(resource) = resource {
        if let Some(target) = server.sessions.resource(user, resource) {
            // A session whose client stopped reading gives the message
            // back: it goes on as if the resource were gone.
            match target.handle.deliver(message) {
                Ok(()) => return Ok(vec![target.handle.id]),
                Err(back) => message = back,
            }
        }
        // RFC 6121 §8.5.3.2.1: no such resource.
        match kind {
            MessageKind::Chat | MessageKind::Normal => {}
            MessageKind::Groupchat => return Err(errors::service_unavailable(&message, "")),
            MessageKind::Headline | MessageKind::Error => return Err(None),
        }
    }
    let resources = server.sessions.resources(user);
    let targets = select_resources(&resources, kind);
    if let Some((last, others)) = targets.split_last() {
        let mut delivered = Vec::with_capacity(targets.len());
        for target in others {
            if target.handle.deliver(message.clone()).is_ok() {
                delivered.push(target.handle.id);
            }
        }
        message = match last.handle.deliver(message) {
            Ok(()) => {
                delivered.push(last.handle.id);
                return Ok(delivered);
            }
            Err(back) => back,
        };
        if !delivered.is_empty() {
            return Ok(delivered);
        }
        // Every session it was for is stuck: kept as for an offline user.
    }
    if matches!(kind, MessageKind::Error) {
        return Err(None);
    }
    if resources.is_empty() && !account_exists(server, user).await {
        return Err(errors::service_unavailable(&message, "no such user"));
    }
    match kind {
        MessageKind::Chat | MessageKind::Normal if storable => {
            let notify = super::push::worth_notifying(&message);
            store_offline(server, user, message).await?;
            if notify {
                super::push::notify(server, user).await;
            }
            Ok(Vec::new())
        }
        MessageKind::Chat | MessageKind::Normal => Err(errors::service_unavailable(
            &message,
            "the recipient is offline, and unencrypted messages are never stored",
        )),
        MessageKind::Groupchat => Err(errors::service_unavailable(&message, "")),
        MessageKind::Headline | MessageKind::Error => Err(None),
    }
}

/// RFC 6121 §8.5.2.1.1: which available resources get a message sent to
/// the bare JID. Resources with a negative priority never do; `chat` and
/// `headline` go to every other one, `normal` to those of highest priority.
fn select_resources(resources: &[Resource], kind: MessageKind) -> Vec<&Resource> {
    let eligible: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.available() && r.priority >= 0)
        .collect();
    match kind {
        MessageKind::Chat | MessageKind::Headline => eligible,
        MessageKind::Normal => {
            let top = eligible.iter().map(|r| r.priority).max();
            eligible
                .into_iter()
                .filter(|r| Some(r.priority) == top)
                .collect()
        }
        MessageKind::Groupchat | MessageKind::Error => Vec::new(),
    }
}

async fn store_offline(
    server: &Server,
    user: &str,
    message: Element,
) -> Result<(), Option<Element>> {
    let bounce_source = message.clone();
    match offline::store(server, user, message).await {
        Ok(()) => Ok(()),
        Err(offline::OfflineError::QueueFull) => Err(stanza::error_reply(
            &bounce_source,
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
            "the recipient's offline storage is full",
        )),
        Err(e) => {
            tracing::error!("storing an offline message failed: {e}");
            Err(errors::internal(&bounce_source))
        }
    }
}

async fn account_exists(server: &Server, user: &str) -> bool {
    match server.storage.account_exists(user).await {
        Ok(exists) => exists,
        Err(e) => {
            tracing::error!("account lookup failed: {e}");
            false
        }
    }
}
