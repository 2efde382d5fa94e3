//! Rosters (RFC 6121 §2) with versioning (XEP-0237): get, set, remove,
//! and roster pushes to every interested resource of the user.

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::roster::{self, Ask, Group, Roster};

use super::presence::{self, SubscriptionKind};
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors};
use crate::storage::{RosterItem, Subscription};

/// The roster namespace.
pub const NS: &str = "jabber:iq:roster";

/// Disco features of this module (versioning is a stream feature).
pub const FEATURES: &[&str] = &[];

/// Serves roster gets and sets.
pub async fn handle_iq(
    server: &Server,
    session: &mut SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let own = matches!(destination, Destination::Server) && iq.attr("to").is_none()
        || *destination == Destination::Account(session.username.clone());
    if !own {
        return errors::forbidden(iq, "a roster can only be managed by its owner");
    }
    let Ok(query) = Roster::try_from(stanza::iq_payload(iq)?.clone()) else {
        return errors::bad_request(iq, "malformed roster query");
    };
    let result = match iq.attr("type") {
        Some("get") => get(server, session, iq, query).await,
        _ => set(server, session, iq, query).await,
    };
    Some(result.unwrap_or_else(|e| {
        tracing::error!("roster operation failed: {e}");
        errors::internal(iq).unwrap_or_else(|| stanza::iq_result(iq, None))
    }))
}

async fn get(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    query: Roster,
) -> Result<Element, crate::storage::StorageError> {
    server
        .sessions
        .set_roster_interested(&session.username, session.handle.id);
    let version = server
        .storage
        .roster_version(&session.username)
        .await?
        .to_string();
    if query.ver.as_deref() == Some(version.as_str()) {
        // XEP-0237: the client's copy is current.
        return Ok(stanza::iq_result(iq, None));
    }
    let items = server.storage.roster_items(&session.username).await?;
    let roster = Roster {
        ver: Some(version),
        items: items
            .iter()
            .filter(|i| is_visible(i))
            .filter_map(wire_item)
            .collect(),
    };
    Ok(stanza::iq_result(iq, Some(roster.into())))
}

async fn set(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    query: Roster,
) -> Result<Element, crate::storage::StorageError> {
    let [item] = query.items.as_slice() else {
        return Ok(
            errors::bad_request(iq, "a roster set carries exactly one item")
                .unwrap_or_else(|| stanza::iq_result(iq, None)),
        );
    };
    let contact = item.jid.to_string();
    if item.jid == session.bare() {
        return Ok(errors::not_allowed(iq, "you cannot add yourself")
            .unwrap_or_else(|| stanza::iq_result(iq, None)));
    }
    if item.subscription == roster::Subscription::Remove {
        remove(server, &session.bare(), &session.username, &item.jid).await?;
        return Ok(stanza::iq_result(iq, None));
    }
    let existing = server
        .storage
        .roster_item(&session.username, &contact)
        .await?;
    if existing.is_none()
        && server.storage.roster_items(&session.username).await?.len()
            >= server.config.limits.max_roster_items
    {
        return Ok(
            errors::not_allowed(iq, "the roster is full: remove a contact first")
                .unwrap_or_else(|| stanza::iq_result(iq, None)),
        );
    }
    let mut stored = existing.unwrap_or_else(|| RosterItem {
        contact,
        ..Default::default()
    });
    stored.name = item.name.clone().filter(|n| !n.is_empty());
    stored.groups.clear();
    for group in item.groups.iter().map(|g| &g.0) {
        if !group.is_empty() && !stored.groups.contains(group) {
            stored.groups.push(group.clone());
        }
    }
    stored.listed = true;
    save_and_push(server, &session.username, &stored).await?;
    Ok(stanza::iq_result(iq, None))
}

/// Removes a contact: cancels subscriptions both ways (RFC 6121 §2.5.2),
/// deletes the item and pushes the removal.
async fn remove(
    server: &Server,
    user: &BareJid,
    username: &str,
    contact: &BareJid,
) -> Result<(), crate::storage::StorageError> {
    let Some(item) = server
        .storage
        .roster_item(username, contact.as_str())
        .await?
    else {
        return Ok(());
    };
    if item.subscription.has_to() || item.ask_out {
        presence::outbound_subscription(server, user, contact, SubscriptionKind::Unsubscribe)
            .await?;
    }
    if item.subscription.has_from() || item.pending_in {
        presence::outbound_subscription(server, user, contact, SubscriptionKind::Unsubscribed)
            .await?;
    }
    let version = server
        .storage
        .delete_roster_item(username, contact.as_str())
        .await?;
    let removed = roster::Item {
        jid: contact.clone(),
        name: None,
        subscription: roster::Subscription::Remove,
        ask: Ask::None,
        groups: Vec::new(),
        approved: None,
    };
    push(server, username, removed, version);
    Ok(())
}

/// Saves an item and pushes it (or its removal from view) to the user's
/// interested resources.
pub async fn save_and_push(
    server: &Server,
    username: &str,
    item: &RosterItem,
) -> Result<(), crate::storage::StorageError> {
    let version = server.storage.save_roster_item(username, item).await?;
    if is_visible(item) {
        if let Some(wire) = wire_item(item) {
            push(server, username, wire, version);
        }
    }
    Ok(())
}

/// Sends a roster push to every resource that asked for the roster.
fn push(server: &Server, username: &str, item: roster::Item, version: i64) {
    let roster = Roster {
        ver: Some(version.to_string()),
        items: vec![item],
    };
    let payload: Element = roster.into();
    for resource in server.sessions.resources(username) {
        if !resource.roster_interested {
            continue;
        }
        let mut iq = stanza::new_stanza("iq");
        stanza::set_attr(&mut iq, "type", "set");
        stanza::set_attr(&mut iq, "id", format!("push-{version}"));
        if let Some(jid) = crate::c2s::negotiation::account_jid(username, &server.config.domain) {
            if let Ok(full) = jid.with_resource_str(&resource.resource) {
                stanza::set_attr(&mut iq, "to", full.to_string());
            }
        }
        iq.append_child(payload.clone());
        resource.handle.send(iq);
    }
}

/// Whether an item shows in the roster: added by the user, or with a
/// subscription in some direction.
fn is_visible(item: &RosterItem) -> bool {
    item.listed || item.subscription != Subscription::None || item.ask_out
}

/// The RFC 6121 `<item/>` of a stored item.
fn wire_item(item: &RosterItem) -> Option<roster::Item> {
    Some(roster::Item {
        jid: BareJid::new(&item.contact).ok()?,
        name: item.name.clone(),
        subscription: match item.subscription {
            Subscription::None => roster::Subscription::None,
            Subscription::To => roster::Subscription::To,
            Subscription::From => roster::Subscription::From,
            Subscription::Both => roster::Subscription::Both,
        },
        ask: if item.ask_out {
            Ask::Subscribe
        } else {
            Ask::None
        },
        groups: item.groups.iter().cloned().map(Group).collect(),
        approved: item.approved.then_some(true),
    })
}
