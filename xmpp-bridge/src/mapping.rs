//! Standard XMPP message stanzas ⇄ the contents of Tern's encrypted
//! envelope.
//!
//! A standard client's `<message/>` carries a body and the extensions of
//! receipts (XEP-0184), chat markers (XEP-0333), corrections (XEP-0308),
//! replies (XEP-0461), reactions (XEP-0444) and retractions (XEP-0424);
//! each becomes one [`Content`] of the envelope, and back. Message ids
//! differ on the two sides (the client picks its own, the envelope has
//! another): the caller translates them with an [`Ids`] table.

use std::collections::HashMap;

use jid::BareJid;
use minidom::Element;
use tern_e2ee::envelope::{Content, Envelope};

/// The client namespace.
pub const NS_CLIENT: &str = "jabber:client";
const NS_RECEIPTS: &str = "urn:xmpp:receipts";
const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
const NS_CORRECTION: &str = "urn:xmpp:message-correct:0";
const NS_REPLY: &str = "urn:xmpp:reply:0";
const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
const NS_CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
const NS_STANZA_ID: &str = "urn:xmpp:sid:0";

/// The XEPs the mapping covers, for service discovery.
pub const FEATURES: [&str; 6] = [
    NS_RECEIPTS,
    NS_MARKERS,
    NS_CORRECTION,
    NS_REPLY,
    NS_REACTIONS,
    NS_RETRACT,
];

/// The ids of the client's own messages and of their envelopes, both ways.
#[derive(Debug, Default)]
pub struct Ids {
    envelope_of: HashMap<String, String>,
    client_of: HashMap<String, String>,
}

impl Ids {
    /// Remembers that the client's message `client` went out as envelope
    /// `envelope`.
    pub fn record(&mut self, client: &str, envelope: &str) {
        self.envelope_of
            .insert(client.to_owned(), envelope.to_owned());
        self.client_of
            .insert(envelope.to_owned(), client.to_owned());
    }

    /// The envelope id a client's reference means (ids of messages the
    /// client received are envelope ids already).
    pub fn to_envelope(&self, id: &str) -> String {
        self.envelope_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// The id the client knows an envelope by.
    pub fn to_client(&self, id: &str) -> String {
        self.client_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }
}

/// What to do with a message from the client.
#[derive(Debug, PartialEq)]
pub enum Outgoing {
    /// Send these contents, encrypted.
    Send(Vec<Content>),
    /// Nothing to send (chat states: typing notifications stay local).
    Ignore,
    /// The message holds nothing the bridge can carry.
    Unsupported,
}

/// The envelope contents of a client's `<message/>`.
pub fn contents_of(message: &Element, ids: &Ids) -> Outgoing {
    let mut contents = Vec::new();
    let mut only_chat_states = true;
    for child in message.children() {
        let id = || child.attr("id").map(|id| ids.to_envelope(id));
        let content = match (child.ns().as_str(), child.name()) {
            (NS_CLIENT, "body") => Some(Content::Body(child.text())),
            (NS_RECEIPTS, "request") => Some(Content::ReceiptRequest),
            (NS_RECEIPTS, "received") => id().map(|id| Content::Receipt { id }),
            (NS_MARKERS, "displayed") => id().map(|id| Content::Displayed { id }),
            (NS_CORRECTION, "replace") => id().map(|id| Content::Correction { id }),
            (NS_REPLY, "reply") => id().map(|id| Content::Reply {
                to: child.attr("to").and_then(|to| to.parse::<BareJid>().ok()),
                id,
            }),
            (NS_REACTIONS, "reactions") => id().map(|id| Content::Reactions {
                id,
                emojis: child
                    .children()
                    .filter(|r| r.is("reaction", NS_REACTIONS))
                    .map(Element::text)
                    .collect(),
            }),
            (NS_RETRACT, "retract") => id().map(|id| Content::Retraction { id }),
            (NS_CHAT_STATES, _) => continue,
            // Carried by the envelope itself, or meaningless inside it.
            (NS_MARKERS, "markable") | (NS_HINTS, _) | (NS_FALLBACK, _) | (NS_STANZA_ID, _) => None,
            _ => None,
        };
        only_chat_states = false;
        contents.extend(content);
    }
    // A retraction's body is the fallback text for old clients.
    if contents
        .iter()
        .any(|c| matches!(c, Content::Retraction { .. }))
    {
        contents.retain(|c| !matches!(c, Content::Body(_)));
    }
    if !contents.is_empty() {
        Outgoing::Send(contents)
    } else if only_chat_states {
        Outgoing::Ignore
    } else {
        Outgoing::Unsupported
    }
}

/// The `<message/>` a client gets for an envelope from `from`.
pub fn message_of(envelope: &Envelope, from: &str, to: &str, kind: &str, ids: &Ids) -> Element {
    let mut message = Element::builder("message", NS_CLIENT)
        .attr(attr("from"), from)
        .attr(attr("to"), to)
        .attr(attr("type"), kind)
        .attr(attr("id"), ids.to_client(&envelope.id))
        .build();
    let with_id = |name: &str, ns: &str, id: &str| {
        Element::builder(name, ns)
            .attr(attr("id"), ids.to_client(id))
            .build()
    };
    for content in &envelope.contents {
        let child = match content {
            Content::Body(text) => Element::builder("body", NS_CLIENT)
                .append(text.as_str())
                .build(),
            Content::ReceiptRequest => Element::bare("request", NS_RECEIPTS),
            Content::Receipt { id } => with_id("received", NS_RECEIPTS, id),
            Content::Displayed { id } => with_id("displayed", NS_MARKERS, id),
            Content::Correction { id } => with_id("replace", NS_CORRECTION, id),
            Content::Retraction { id } => with_id("retract", NS_RETRACT, id),
            Content::Reply { to, id } => {
                let mut reply = with_id("reply", NS_REPLY, id);
                if let Some(to) = to {
                    tern_server::stanza::set_attr(&mut reply, "to", to.as_str());
                }
                reply
            }
            Content::Reactions { id, emojis } => {
                let mut reactions = with_id("reactions", NS_REACTIONS, id);
                for emoji in emojis {
                    reactions.append_child(
                        Element::builder("reaction", NS_REACTIONS)
                            .append(emoji.as_str())
                            .build(),
                    );
                }
                reactions
            }
            Content::File(file) => Element::builder("body", NS_CLIENT)
                .append(format!(
                    "[encrypted file {} ({} bytes, {}): fetch it with `tern file get {}`]",
                    file.name, file.size, file.media_type, envelope.id
                ))
                .build(),
            Content::Location(location) => Element::builder("body", NS_CLIENT)
                .append(format!("geo:{},{}", location.lat, location.lon))
                .build(),
        };
        message.append_child(child);
    }
    message
}

/// An attribute name.
pub fn attr(name: &'static str) -> minidom::rxml::NcName {
    tern_server::stanza::attr_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("test XML")
    }

    #[test]
    fn a_client_message_becomes_envelope_contents() {
        let mut ids = Ids::default();
        ids.record("client-1", "env-1");
        let message = parse(
            "<message xmlns='jabber:client' to='bob@b.test' type='chat' id='client-2'>\
             <body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='client-1'/>\
             <request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/>\
             </message>",
        );
        assert_eq!(
            contents_of(&message, &ids),
            Outgoing::Send(vec![
                Content::Body("fixed".into()),
                Content::Correction { id: "env-1".into() },
                Content::ReceiptRequest,
            ])
        );
        let typing = parse(
            "<message xmlns='jabber:client' to='bob@b.test'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(contents_of(&typing, &ids), Outgoing::Ignore);
        let omemo = parse(
            "<message xmlns='jabber:client' to='bob@b.test'>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
        );
        assert_eq!(contents_of(&omemo, &ids), Outgoing::Unsupported);
    }

    #[test]
    fn reactions_and_retractions_keep_their_targets() {
        let ids = Ids::default();
        let reactions = parse(
            "<message xmlns='jabber:client' to='bob@b.test'>\
             <reactions xmlns='urn:xmpp:reactions:0' id='env-9'><reaction>👍</reaction>\
             <reaction>🎉</reaction></reactions></message>",
        );
        assert_eq!(
            contents_of(&reactions, &ids),
            Outgoing::Send(vec![Content::Reactions {
                id: "env-9".into(),
                emojis: vec!["👍".into(), "🎉".into()]
            }])
        );
        let retraction = parse(
            "<message xmlns='jabber:client' to='bob@b.test'><body>retracted</body>\
             <retract xmlns='urn:xmpp:message-retract:1' id='env-9'/></message>",
        );
        assert_eq!(
            contents_of(&retraction, &ids),
            Outgoing::Send(vec![Content::Retraction { id: "env-9".into() }])
        );
    }

    #[test]
    fn envelopes_come_back_with_the_clients_ids() {
        let mut ids = Ids::default();
        ids.record("client-1", "env-1");
        let mut envelope = Envelope::new(
            "bob@b.test".parse().expect("jid"),
            vec![
                Content::Body("yes".into()),
                Content::Receipt { id: "env-1".into() },
            ],
        );
        envelope.id = "env-2".into();
        let message = message_of(&envelope, "bob@b.test", "alice@a.test/phone", "chat", &ids);
        assert_eq!(message.attr("id"), Some("env-2"));
        let received = message.get_child("received", NS_RECEIPTS).expect("receipt");
        assert_eq!(received.attr("id"), Some("client-1"));
        assert_eq!(
            message.get_child("body", NS_CLIENT).map(Element::text),
            Some("yes".into())
        );
    }
}
