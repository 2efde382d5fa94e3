//! Presence (RFC 6121 §3–§4): the subscription state machine with pending
//! states and pre-approval, initial presence with probes, broadcast to
//! subscribers, directed presence, and `unavailable` on disconnect.

use jid::{BareJid, Jid};
use minidom::Element;

use super::blocking;
use super::roster::save_and_push;
use crate::c2s::negotiation::account_jid;
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, NS_CLIENT};
use crate::storage::{RosterItem, StorageError, Subscription};

/// The four subscription-related presence types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// Ask to receive the contact's presence.
    Subscribe,
    /// Allow the contact to receive one's presence.
    Subscribed,
    /// Stop receiving the contact's presence.
    Unsubscribe,
    /// Stop the contact from receiving one's presence.
    Unsubscribed,
}

impl SubscriptionKind {
    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "subscribe" => Self::Subscribe,
            "subscribed" => Self::Subscribed,
            "unsubscribe" => Self::Unsubscribe,
            "unsubscribed" => Self::Unsubscribed,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Subscribed => "subscribed",
            Self::Unsubscribe => "unsubscribe",
            Self::Unsubscribed => "unsubscribed",
        }
    }
}

/// Handles a presence stanza from a client session.
pub async fn from_client(
    server: &Server,
    session: &mut SessionCtx,
    presence: Element,
    destination: Destination,
) {
    let result = match presence.attr("type") {
        None | Some("unavailable") => match destination {
            Destination::Server if presence.attr("to").is_none() => {
                broadcast(server, session, presence).await
            }
            Destination::Server => Ok(()),
            destination => {
                directed(server, session, presence, destination).await;
                Ok(())
            }
        },
        Some(kind) => match SubscriptionKind::parse(kind) {
            Some(kind) => subscription_from_client(server, session, &presence, kind).await,
            // Probes come from servers, not clients.
            None if kind == "probe" => Ok(()),
            None if kind == "error" => {
                deliver_to(server, presence, &destination).await;
                Ok(())
            }
            None => {
                session.reply(errors::bad_request(&presence, "unknown presence type"));
                Ok(())
            }
        },
    };
    if let Err(e) = result {
        tracing::error!("presence handling failed: {e}");
    }
}

async fn subscription_from_client(
    server: &Server,
    session: &SessionCtx,
    presence: &Element,
    kind: SubscriptionKind,
) -> Result<(), StorageError> {
    let Some(contact) = presence
        .attr("to")
        .and_then(|to| Jid::new(to).ok())
        .map(Jid::into_bare)
    else {
        return Ok(());
    };
    if contact == session.bare() {
        return Ok(());
    }
    outbound_subscription(server, &session.bare(), &contact, kind).await
}

/// Applies a user's subscription request or answer to their own roster
/// (RFC 6121 §3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4) and routes it to the
/// contact.
pub async fn outbound_subscription(
    server: &Server,
    user: &BareJid,
    contact: &BareJid,
    kind: SubscriptionKind,
) -> Result<(), StorageError> {
    let Some(username) = user.node().map(|n| n.as_str().to_owned()) else {
        return Ok(());
    };
    let existing = server
        .storage
        .roster_item(&username, contact.as_str())
        .await?;
    let mut item = existing.clone().unwrap_or_else(|| RosterItem {
        contact: contact.to_string(),
        ..Default::default()
    });
    let sub = item.subscription;
    let mut route = true;
    match kind {
        SubscriptionKind::Subscribe => {
            if !sub.has_to() {
                item.ask_out = true;
            }
        }
        SubscriptionKind::Subscribed => {
            if item.pending_in {
                item.pending_in = false;
                item.subscription = Subscription::from_parts(sub.has_to(), true);
            } else if !sub.has_from() {
                // Pre-approval: remembered, not routed.
                item.approved = true;
                route = false;
            } else {
                route = false;
            }
        }
        SubscriptionKind::Unsubscribe => {
            item.subscription = Subscription::from_parts(false, sub.has_from());
            item.ask_out = false;
        }
        SubscriptionKind::Unsubscribed => {
            route = sub.has_from() || item.pending_in;
            item.subscription = Subscription::from_parts(sub.has_to(), false);
            item.pending_in = false;
            item.approved = false;
        }
    }
    if existing.as_ref() != Some(&item)
        && (existing.is_some() || kind != SubscriptionKind::Unsubscribe)
    {
        save_and_push(server, &username, &item).await?;
    }
    if route {
        route_subscription(server, user, contact, kind).await?;
        match kind {
            SubscriptionKind::Subscribed => {
                send_presence_of(server, &username, contact, false).await
            }
            SubscriptionKind::Unsubscribed => {
                send_presence_of(server, &username, contact, true).await
            }
            _ => {}
        }
    }
    Ok(())
}

/// Delivers a subscription stanza to the contact: on this server, with
/// the automatic answer (if the contact's server gives one) back to the
/// user; on another, through federation.
async fn route_subscription(
    server: &Server,
    from: &BareJid,
    to: &BareJid,
    kind: SubscriptionKind,
) -> Result<(), StorageError> {
    if to.domain().as_str() != server.config.domain {
        server
            .send_remote(subscription_between(from, Some(to), kind))
            .await;
        return Ok(());
    }
    let Some(to_user) = to.node().map(|n| n.as_str().to_owned()) else {
        return Ok(());
    };
    if let Some(answer) = inbound_subscription(server, from, &to_user, kind).await? {
        if let Some(from_user) = from.node() {
            inbound_subscription(server, to, from_user.as_str(), answer).await?;
        }
    }
    Ok(())
}

/// Applies a subscription stanza arriving for local user `username` from
/// `from` (RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3) and delivers it to the
/// user's available resources. Returns the answer the server gives on the
/// user's behalf, if any.
pub async fn inbound_subscription(
    server: &Server,
    from: &BareJid,
    username: &str,
    kind: SubscriptionKind,
) -> Result<Option<SubscriptionKind>, StorageError> {
    if !server.storage.account_exists(username).await? {
        return Ok((kind == SubscriptionKind::Subscribe).then_some(SubscriptionKind::Unsubscribed));
    }
    let existing = server.storage.roster_item(username, from.as_str()).await?;
    if existing.is_none() && kind == SubscriptionKind::Subscribe {
        // Requests from strangers wait in the roster, bounded.
        let waiting = server
            .storage
            .roster_items(username)
            .await?
            .iter()
            .filter(|i| i.pending_in && !i.listed)
            .count();
        if waiting >= server.config.limits.max_pending_subscriptions {
            tracing::debug!(%from, username, "subscription request dropped: too many waiting");
            return Ok(None);
        }
    }
    let mut item = existing.clone().unwrap_or_else(|| RosterItem {
        contact: from.to_string(),
        listed: false,
        ..Default::default()
    });
    let sub = item.subscription;
    let mut deliver = true;
    let mut answer = None;
    match kind {
        SubscriptionKind::Subscribe => {
            if sub.has_from() {
                answer = Some(SubscriptionKind::Subscribed);
                deliver = false;
            } else if item.approved {
                item.approved = false;
                item.subscription = Subscription::from_parts(sub.has_to(), true);
                answer = Some(SubscriptionKind::Subscribed);
                deliver = false;
            } else {
                item.pending_in = true;
            }
        }
        SubscriptionKind::Subscribed => {
            deliver = item.ask_out;
            if item.ask_out {
                item.ask_out = false;
                item.subscription = Subscription::from_parts(true, sub.has_from());
            }
        }
        SubscriptionKind::Unsubscribe => {
            deliver = sub.has_from() || item.pending_in;
            item.subscription = Subscription::from_parts(sub.has_to(), false);
            item.pending_in = false;
        }
        SubscriptionKind::Unsubscribed => {
            deliver = sub.has_to() || item.ask_out;
            item.subscription = Subscription::from_parts(false, sub.has_from());
            item.ask_out = false;
        }
    }
    if existing.as_ref() != Some(&item)
        && (existing.is_some() || kind == SubscriptionKind::Subscribe)
    {
        save_and_push(server, username, &item).await?;
    }
    if deliver {
        let presence = subscription_stanza(from, username, &server.config.domain, kind);
        for resource in server
            .sessions
            .resources(username)
            .into_iter()
            .filter(|r| r.available())
        {
            resource.handle.send(presence.clone());
        }
    }
    if answer == Some(SubscriptionKind::Subscribed) {
        send_presence_of(server, username, from, false).await;
    }
    if kind == SubscriptionKind::Unsubscribe && deliver {
        send_presence_of(server, username, from, true).await;
    }
    Ok(answer)
}

fn subscription_stanza(
    from: &BareJid,
    to_user: &str,
    domain: &str,
    kind: SubscriptionKind,
) -> Element {
    subscription_between(from, account_jid(to_user, domain).as_ref(), kind)
}

/// `<presence type='subscribe|…' from to/>`.
fn subscription_between(from: &BareJid, to: Option<&BareJid>, kind: SubscriptionKind) -> Element {
    let mut presence = stanza::new_stanza("presence");
    stanza::set_attr(&mut presence, "type", kind.as_str());
    stanza::set_attr(&mut presence, "from", from.to_string());
    if let Some(to) = to {
        stanza::set_attr(&mut presence, "to", to.to_string());
    }
    presence
}

/// Handles a presence stanza from another server's user: subscription
/// requests and answers, probes, and availability for local users.
pub async fn from_remote(
    server: &Server,
    presence: Element,
    from: &BareJid,
    destination: Destination,
) {
    let user = match &destination {
        Destination::Account(user) | Destination::Resource(user, _) => user.clone(),
        Destination::Muc(Some(room), nick) => {
            crate::muc::presence(server, presence, room, nick.as_deref()).await;
            return;
        }
        _ => return,
    };
    let result = match presence.attr("type") {
        None | Some("unavailable") | Some("error") => {
            deliver_to(server, presence, &destination).await;
            Ok(())
        }
        Some("probe") => answer_probe(server, &user, from).await,
        Some(kind) => match SubscriptionKind::parse(kind) {
            Some(kind) => remote_subscription(server, from, &user, kind).await,
            None => Ok(()),
        },
    };
    if let Err(e) = result {
        tracing::error!("presence from another server failed: {e}");
    }
}

/// A subscription stanza from another server's user; the answer the
/// server gives on the local user's behalf goes back.
async fn remote_subscription(
    server: &Server,
    from: &BareJid,
    user: &str,
    kind: SubscriptionKind,
) -> Result<(), StorageError> {
    if let Some(answer) = inbound_subscription(server, from, user, kind).await? {
        if let Some(local) = account_jid(user, &server.config.domain) {
            server
                .send_remote(subscription_between(&local, Some(from), answer))
                .await;
        }
    }
    Ok(())
}

/// A probe (RFC 6121 §4.3): a contact allowed to see `user`'s presence
/// gets the current presence of each available resource.
async fn answer_probe(server: &Server, user: &str, from: &BareJid) -> Result<(), StorageError> {
    let allowed = server
        .storage
        .roster_item(user, from.as_str())
        .await?
        .is_some_and(|item| item.subscription.has_from());
    if allowed {
        send_presence_of(server, user, from, false).await;
    }
    Ok(())
}

/// Sends the current presence of each available resource of `username`
/// (or `unavailable` from each) to `to`.
async fn send_presence_of(server: &Server, username: &str, to: &BareJid, unavailable: bool) {
    if blocking::blocks(server, username, &Jid::from(to.clone())).await {
        return;
    }
    for resource in server.sessions.resources(username) {
        let Some(mut presence) = resource.presence.as_deref().cloned() else {
            continue;
        };
        if unavailable {
            presence = unavailable_from(presence.attr("from").unwrap_or_default());
        }
        stanza::set_attr(&mut presence, "to", to.to_string());
        deliver_to(
            server,
            presence,
            &server.destination(Some(&Jid::from(to.clone()))),
        )
        .await;
    }
}

/// The local user a presence stanza is from, if any.
fn local_sender(server: &Server, presence: &Element) -> Option<String> {
    let from = Jid::new(presence.attr("from")?).ok()?;
    server.local_user(&from.to_bare()).map(str::to_owned)
}

/// Tells `to` that every available resource of `username` went away (it
/// was just blocked).
pub async fn send_unavailable_to(server: &Server, username: &str, to: &Jid) {
    let Some(account) = account_jid(username, &server.config.domain) else {
        return;
    };
    for resource in server.sessions.resources(username) {
        if !resource.available() {
            continue;
        }
        let mut presence = unavailable_from(&format!("{account}/{}", resource.resource));
        stanza::set_attr(&mut presence, "to", to.to_string());
        deliver_to(server, presence, &server.destination(Some(to))).await;
    }
}

fn unavailable_from(from: &str) -> Element {
    let mut presence = stanza::new_stanza("presence");
    stanza::set_attr(&mut presence, "type", "unavailable");
    stanza::set_attr(&mut presence, "from", from);
    presence
}

/// Broadcasts a session's available or unavailable presence (no `to`).
async fn broadcast(
    server: &Server,
    session: &mut SessionCtx,
    presence: Element,
) -> Result<(), StorageError> {
    if presence.attr("type") == Some("unavailable") {
        return go_unavailable(server, session, Some(presence)).await;
    }
    let priority = presence
        .get_child("priority", NS_CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    let initial = !session.available;
    session.available = true;
    server.sessions.set_presence(
        &session.username,
        session.handle.id,
        Some(presence.clone()),
        priority,
    );
    let items = server.storage.roster_items(&session.username).await?;
    for item in items.iter().filter(|i| i.subscription.has_from()) {
        send_to_contact(server, &presence, &item.contact).await;
    }
    send_to_own_resources(server, session, &presence);
    if initial {
        for item in items.iter().filter(|i| i.subscription.has_to()) {
            probe(server, session, &item.contact).await;
        }
        for item in items.iter().filter(|i| i.pending_in) {
            if let Ok(from) = BareJid::new(&item.contact) {
                session.reply(Some(subscription_stanza(
                    &from,
                    &session.username,
                    &server.config.domain,
                    SubscriptionKind::Subscribe,
                )));
            }
        }
        if priority >= 0 {
            session.deliver_offline = true;
        }
    }
    Ok(())
}

/// Makes a session unavailable: broadcasts `unavailable` (with the
/// client's own stanza if it sent one) to subscribers, the user's other
/// resources and everyone it sent directed presence to.
pub async fn go_unavailable(
    server: &Server,
    session: &mut SessionCtx,
    presence: Option<Element>,
) -> Result<(), StorageError> {
    let unavailable = presence.unwrap_or_else(|| unavailable_from(&session.jid.to_string()));
    for to in std::mem::take(&mut session.directed_presence) {
        let mut copy = unavailable.clone();
        stanza::set_attr(&mut copy, "to", to.to_string());
        deliver_to(server, copy, &server.destination(Some(&to))).await;
    }
    if !session.available {
        return Ok(());
    }
    session.available = false;
    server
        .sessions
        .set_presence(&session.username, session.handle.id, None, 0);
    for item in server.storage.roster_items(&session.username).await? {
        if item.subscription.has_from() {
            send_to_contact(server, &unavailable, &item.contact).await;
        }
    }
    send_to_own_resources(server, session, &unavailable);
    Ok(())
}

/// Probes a contact at initial presence: a local contact's available
/// resources answer at once; a remote contact's server gets a probe.
async fn probe(server: &Server, session: &SessionCtx, contact: &str) {
    let Ok(contact) = BareJid::new(contact) else {
        return;
    };
    if contact.domain().as_str() != server.config.domain {
        let mut probe = stanza::new_stanza("presence");
        stanza::set_attr(&mut probe, "type", "probe");
        stanza::set_attr(&mut probe, "from", session.bare().to_string());
        stanza::set_attr(&mut probe, "to", contact.to_string());
        server.send_remote(probe).await;
        return;
    }
    let Some(user) = contact.node() else { return };
    for resource in server.sessions.resources(user.as_str()) {
        if let Some(mut presence) = resource.presence.as_deref().cloned() {
            stanza::set_attr(&mut presence, "to", session.jid.to_string());
            session.reply(Some(presence));
        }
    }
}

async fn send_to_contact(server: &Server, presence: &Element, contact: &str) {
    let Ok(to) = Jid::new(contact) else { return };
    if let Some(user) = local_sender(server, presence) {
        if blocking::blocks(server, &user, &to).await {
            return;
        }
    }
    let mut copy = presence.clone();
    stanza::set_attr(&mut copy, "to", to.to_string());
    deliver_to(server, copy, &server.destination(Some(&to))).await;
}

fn send_to_own_resources(server: &Server, session: &SessionCtx, presence: &Element) {
    for resource in server.sessions.resources(&session.username) {
        if !resource.available() && resource.handle.id != session.handle.id {
            continue;
        }
        let mut copy = presence.clone();
        if let Ok(full) = session.bare().with_resource_str(&resource.resource) {
            stanza::set_attr(&mut copy, "to", full.to_string());
        }
        resource.handle.send(copy);
    }
}

/// Directed presence (RFC 6121 §4.6): delivered as addressed, and
/// remembered so that the recipient learns when the session goes away.
async fn directed(
    server: &Server,
    session: &mut SessionCtx,
    presence: Element,
    destination: Destination,
) {
    let Some(to) = presence.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    let available = presence.attr("type").is_none();
    let known = session.directed_presence.contains(&to);
    if available && !known && session.directed_presence.len() >= MAX_DIRECTED_PRESENCES {
        // Each one is remembered, and told when the session goes: bounded.
        session.reply(crate::stanza::error_reply(
            &presence,
            xmpp_parsers::stanza_error::ErrorType::Wait,
            xmpp_parsers::stanza_error::DefinedCondition::ResourceConstraint,
            "too many directed presences",
        ));
        return;
    }
    // A room joined before initial presence is remembered too, so that
    // the session leaves it when it ends (no ghost occupant).
    let remember = available && (session.available || matches!(destination, Destination::Muc(..)));
    deliver_to(server, presence, &destination).await;
    session.directed_presence.retain(|j| *j != to);
    if remember {
        session.directed_presence.push(to);
    }
}

/// Directed presences one session may have out at once (each is
/// remembered, and answered with unavailable presence at the end).
pub const MAX_DIRECTED_PRESENCES: usize = 1000;

/// Delivers a presence stanza: to a local bare JID, every available
/// resource; to a local full JID, that resource; to another server's
/// user, through federation.
async fn deliver_to(server: &Server, presence: Element, destination: &Destination) {
    match destination {
        Destination::Account(user) => {
            for resource in server
                .sessions
                .resources(user)
                .into_iter()
                .filter(|r| r.available())
            {
                resource.handle.send(presence.clone());
            }
        }
        Destination::Resource(user, resource) => {
            if let Some(target) = server.sessions.resource(user, resource) {
                target.handle.send(presence);
            }
        }
        Destination::Remote(_) => server.send_remote(presence).await,
        Destination::Muc(Some(room), nick) => {
            crate::muc::presence(server, presence.clone(), room, nick.as_deref()).await
        }
        Destination::Server | Destination::Hub(_) | Destination::Upload | Destination::Muc(..) => {}
    }
}
