//! The stanza router: validates a client's stanza, stamps its `from` with
//! the session's full JID, classifies its destination, and hands it to the
//! module that serves it. Unhandled IQs get `service-unavailable`.

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use crate::hub;
use crate::modules::{self, message, presence};
use crate::muc;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::{self, errors, NS_CLIENT};
use crate::upload;

/// The state of one client session that stanza handling reads and updates.
#[derive(Debug)]
pub struct SessionCtx {
    /// The bound full JID.
    pub jid: FullJid,
    /// The account's user name.
    pub username: String,
    /// The channel to this session's own client.
    pub handle: SessionHandle,
    /// Whether the client has sent its initial presence.
    pub available: bool,
    /// JIDs this session sent directed presence to while available, to
    /// send them `unavailable` when it goes away.
    pub directed_presence: Vec<Jid>,
    /// Set when the client became available with a non-negative priority:
    /// the session loop then writes out the user's offline messages.
    pub deliver_offline: bool,
    /// Set by a handler that ends the session once its reply is written.
    pub close_after: Option<(StreamCondition, &'static str)>,
}

impl SessionCtx {
    /// The bare JID of the session's account.
    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// Whether a request is addressed to the session's own account: its
    /// bare JID, or no `to` at all.
    pub fn addresses_own_account(&self, iq: &Element, destination: &Destination) -> bool {
        match destination {
            Destination::Server => iq.attr("to").is_none(),
            Destination::Account(user) => *user == self.username,
            _ => false,
        }
    }

    /// Sends a stanza to this session's own client.
    pub fn reply(&self, stanza: Option<Element>) {
        if let Some(s) = stanza {
            self.handle.reply(s);
        }
    }
}

/// Where a stanza is going, from the server's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The server itself (no `to`, or the bare domain).
    Server,
    /// A local account's bare JID.
    Account(String),
    /// A local account's full JID.
    Resource(String, String),
    /// The group hub: its domain (`None`) or a group's address (the
    /// group's node).
    Hub(Option<String>),
    /// The file upload service.
    Upload,
    /// The MUC service (`None`), a room, or an occupant (room node,
    /// nickname).
    Muc(Option<String>, Option<String>),
    /// Another domain (federation).
    Remote(String),
}

impl Destination {
    /// Classifies a `to` address for this server's domain and its groups,
    /// upload and MUC services.
    pub fn of(to: Option<&Jid>, domains: &Domains<'_>) -> Self {
        let Some(to) = to else { return Self::Server };
        let (domain, groups_domain, upload_domain) =
            (domains.domain, domains.groups, domains.upload);
        if to.domain().as_str() == groups_domain {
            return Self::Hub(to.node().map(|node| node.as_str().to_owned()));
        }
        if Some(to.domain().as_str()) == domains.muc {
            return Self::Muc(
                to.node().map(|n| n.as_str().to_owned()),
                to.resource().map(|r| r.as_str().to_owned()),
            );
        }
        if to.domain().as_str() == upload_domain && to.node().is_none() {
            return Self::Upload;
        }
        if to.domain().as_str() != domain {
            return Self::Remote(to.domain().as_str().to_owned());
        }
        match (to.node(), to.resource()) {
            (None, _) => Self::Server,
            (Some(node), None) => Self::Account(node.as_str().to_owned()),
            (Some(node), Some(res)) => {
                Self::Resource(node.as_str().to_owned(), res.as_str().to_owned())
            }
        }
    }
}

/// The domains a server answers for.
#[derive(Debug, Clone, Copy)]
pub struct Domains<'a> {
    /// The users' domain.
    pub domain: &'a str,
    /// The group hub's.
    pub groups: &'a str,
    /// The upload service's.
    pub upload: &'a str,
    /// The MUC service's, when enabled.
    pub muc: Option<&'a str>,
}

/// Handles one stanza from a client session.
pub async fn route_from_client(server: &Server, session: &mut SessionCtx, mut stanza: Element) {
    tracing::trace!(name = stanza.name(), id = ?stanza.attr("id"), "stanza from client");
    if stanza.ns() != NS_CLIENT {
        // Nonzas after negotiation (e.g. XEP-0198 requests we do not offer).
        tracing::debug!(
            name = stanza.name(),
            "ignoring unsupported top-level element"
        );
        return;
    }
    stanza::set_attr(&mut stanza, "from", session.jid.to_string());
    let to = match stanza.attr("to").map(Jid::new).transpose() {
        Ok(to) => to,
        Err(_) => {
            stanza::remove_attr(&mut stanza, "to");
            session.reply(stanza::error_reply(
                &stanza,
                ErrorType::Modify,
                DefinedCondition::JidMalformed,
                "the 'to' address is not a valid JID",
            ));
            return;
        }
    };
    if let Some(to) = &to {
        // Normalised form, so that routing compares like with like.
        stanza::set_attr(&mut stanza, "to", to.to_string());
    }
    if let Some(to) = &to {
        if modules::blocking::blocks(server, &session.username, to).await {
            // Presence and answers just stop; the rest is refused.
            let refusal = match (stanza.name(), stanza.attr("type")) {
                ("presence", _) | ("message", Some("error")) | ("iq", Some("result" | "error")) => {
                    None
                }
                _ => modules::blocking::refusal(&stanza),
            };
            session.reply(refusal);
            return;
        }
    }
    let destination = server.destination(to.as_ref());
    match stanza.name() {
        "message" => message::from_client(server, session, stanza, destination).await,
        "presence" => presence::from_client(server, session, stanza, destination).await,
        "iq" => iq_from_client(server, session, stanza, destination).await,
        other => tracing::debug!(name = other, "ignoring unknown stanza kind"),
    }
}

async fn iq_from_client(
    server: &Server,
    session: &mut SessionCtx,
    iq: Element,
    destination: Destination,
) {
    let kind = iq.attr("type").unwrap_or("");
    let is_request = matches!(kind, "get" | "set");
    if !is_request && !matches!(kind, "result" | "error") {
        session.reply(errors::bad_request(
            &iq,
            "IQ type must be get, set, result or error",
        ));
        return;
    }
    if is_request && (iq.attr("id").is_none() || iq.children().count() != 1) {
        session.reply(errors::bad_request(
            &iq,
            "IQ requests need an id and exactly one payload",
        ));
        return;
    }
    match destination {
        Destination::Resource(user, resource) => {
            deliver_to_resource(server, session, iq, &user, &resource, is_request).await
        }
        Destination::Hub(group) => {
            if is_request {
                let reply = hub::iq(server, &session.bare(), &iq, group.as_deref())
                    .await
                    .or_else(|| errors::service_unavailable(&iq, ""));
                session.reply(reply);
            }
        }
        Destination::Upload => {
            if is_request {
                let reply = upload::iq_from_client(server, session, &iq)
                    .await
                    .or_else(|| errors::service_unavailable(&iq, ""));
                session.reply(reply);
            }
        }
        Destination::Muc(room, nick) => {
            if is_request {
                let reply = muc::iq(server, Some(session), &iq, room.as_deref(), nick.as_deref())
                    .await
                    .or_else(|| errors::service_unavailable(&iq, ""));
                session.reply(reply);
            }
        }
        Destination::Remote(_) => server.send_remote(iq).await,
        destination => {
            if !is_request {
                // Results and errors for the server (e.g. our pings).
                return;
            }
            let reply = match modules::handle_iq(server, session, &iq, &destination).await {
                Some(reply) => Some(reply),
                None => errors::service_unavailable(&iq, ""),
            };
            session.reply(reply);
        }
    }
}

/// Handles a stanza that did not come from a local session: from another
/// server's user (through federation, `from` already checked against the
/// authenticated domain), or a bounce of one of ours. Replies and errors
/// go back through federation.
pub async fn route_inbound(server: &Server, stanza: Element) {
    let Some(from) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let to = stanza.attr("to").and_then(|t| Jid::new(t).ok());
    tracing::trace!(name = stanza.name(), %from, "stanza from another server");
    let destination = server.destination(to.as_ref());
    let sender = from.to_bare();
    match stanza.name() {
        "message" => message::from_remote(server, stanza, &sender, destination).await,
        "presence" => presence::from_remote(server, stanza, &sender, destination).await,
        "iq" => iq_from_remote(server, stanza, &sender, destination).await,
        other => tracing::debug!(name = other, "ignoring unknown stanza kind"),
    }
}

async fn iq_from_remote(server: &Server, iq: Element, sender: &BareJid, destination: Destination) {
    let is_request = matches!(iq.attr("type"), Some("get" | "set"));
    let malformed = is_request && (iq.attr("id").is_none() || iq.children().count() != 1);
    let reply = match destination {
        _ if malformed => {
            errors::bad_request(&iq, "IQ requests need an id and exactly one payload")
        }
        Destination::Resource(user, resource) => match server.sessions.resource(&user, &resource) {
            Some(target) => match target.handle.deliver(iq) {
                Ok(()) => None,
                Err(iq) if is_request => {
                    errors::service_unavailable(&iq, "the recipient is not reading")
                }
                Err(_) => None,
            },
            None if is_request => errors::service_unavailable(&iq, ""),
            None => None,
        },
        _ if !is_request => None,
        Destination::Hub(group) => hub::iq(server, sender, &iq, group.as_deref())
            .await
            .or_else(|| errors::service_unavailable(&iq, "")),
        Destination::Server | Destination::Account(_) => {
            modules::handle_open_iq(server, sender, &iq, &destination)
                .await
                .or_else(|| errors::service_unavailable(&iq, ""))
        }
        Destination::Upload => {
            errors::service_unavailable(&iq, "the upload service is for this server's users")
        }
        Destination::Muc(room, nick) => {
            muc::iq(server, None, &iq, room.as_deref(), nick.as_deref())
                .await
                .or_else(|| errors::service_unavailable(&iq, ""))
        }
        Destination::Remote(_) => None,
    };
    server.send_remote_reply(reply).await;
}

async fn deliver_to_resource(
    server: &Server,
    session: &SessionCtx,
    iq: Element,
    user: &str,
    resource: &str,
    is_request: bool,
) {
    match server.sessions.resource(user, resource) {
        Some(target) => match target.handle.deliver(iq) {
            Ok(()) => {}
            Err(iq) if is_request => session.reply(errors::service_unavailable(
                &iq,
                "the recipient is not reading",
            )),
            Err(_) => {}
        },
        None if is_request => session.reply(errors::service_unavailable(&iq, "")),
        None => {}
    }
}
