//! Message Carbons (XEP-0280): a user's clients that enable carbons get a
//! copy of every one-to-one message the user's other clients send or
//! receive, so every device shows the whole conversation. Plain bodies
//! never get here (the ciphertext rule runs first).

use minidom::Element;

use super::message::MessageKind;
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, set_attr, NS_CLIENT};

/// The carbons namespace.
pub const NS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// Which way a copied message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Another client of the user sent it.
    Sent,
    /// Another client of the user received it.
    Received,
}

/// Enables or disables carbons for the session.
pub fn handle_iq(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if *destination != Destination::Server || iq.attr("type") != Some("set") {
        return errors::bad_request(iq, "enable or disable carbons with an IQ set to the server");
    }
    let enable = match stanza::iq_payload(iq)?.name() {
        "enable" => true,
        "disable" => false,
        _ => return errors::bad_request(iq, "expected <enable/> or <disable/>"),
    };
    server
        .sessions
        .set_carbons(&session.username, session.handle.id, enable);
    Some(stanza::iq_result(iq, None))
}

/// Whether a copy of `message` may go to one of `username`'s sessions:
/// some session enabled carbons and it is eligible (asked in that order:
/// the first is one lookup, the second a walk through the message).
pub fn wanted(server: &Server, username: &str, message: &Element) -> bool {
    server.sessions.any_carbons(username) && eligible(message)
}

/// Whether a message is copied (XEP-0280 §6): chat messages (and normal
/// ones with content), not marked private or no-copy, not carbons
/// themselves, not MUC private messages.
pub fn eligible(message: &Element) -> bool {
    let kind = MessageKind::of(message);
    let has_content =
        message.get_child("body", NS_CLIENT).is_some() || super::ciphertext::is_encrypted(message);
    (kind == MessageKind::Chat || (kind == MessageKind::Normal && has_content))
        && !message.has_child("private", NS)
        && !message.has_child("no-copy", NS_HINTS)
        && !message.has_child("sent", NS)
        && !message.has_child("received", NS)
        && !message.has_child("x", NS_MUC_USER)
}

/// Copies `message` to `username`'s carbons-enabled sessions other than
/// those in `except` (the sessions that have it already).
pub fn copy(
    server: &Server,
    username: &str,
    direction: Direction,
    message: &Element,
    except: &[u64],
) {
    if !eligible(message) {
        return;
    }
    let Some(account) = crate::c2s::negotiation::account_jid(username, &server.config.domain)
    else {
        return;
    };
    for resource in server.sessions.resources(username) {
        if !resource.carbons || except.contains(&resource.handle.id) {
            continue;
        }
        let name = match direction {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        let forwarded = Element::builder("forwarded", NS_FORWARD)
            .append(message.clone())
            .build();
        let wrapper = Element::builder(name, NS).append(forwarded).build();
        let mut carbon = Element::builder("message", NS_CLIENT)
            .append(wrapper)
            .build();
        set_attr(
            &mut carbon,
            "type",
            message.attr("type").unwrap_or("normal"),
        );
        set_attr(&mut carbon, "from", account.to_string());
        set_attr(
            &mut carbon,
            "to",
            format!("{account}/{}", resource.resource),
        );
        resource.handle.send(carbon);
    }
}
