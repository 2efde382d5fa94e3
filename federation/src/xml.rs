//! The s2s XML stream: namespaces, the stream type, the `jabber:server` ⇄
//! `jabber:client` rewrite, and closing with a stream error.

use std::time::Duration;

use futures::SinkExt;
use minidom::Element;
use tokio_xmpp::xmlstream::{Timeouts, XmlStream};
use xmpp_parsers::stream_error::{DefinedCondition, SentStreamError, StreamError};

use crate::s2s_io::S2sIo;

/// Stanzas between servers.
pub const NS_SERVER: &str = "jabber:server";
/// Stanzas as the server's router and modules handle them.
pub const NS_CLIENT: &str = "jabber:client";
/// Dialback elements (XEP-0220).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The dialback stream feature (XEP-0220 §2.4).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// STARTTLS.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Stream management (XEP-0198).
pub const NS_SM: &str = "urn:xmpp:sm:3";

/// An attribute name written in this crate (a static, valid NCName).
pub fn attr_name(name: &'static str) -> minidom::rxml::NcName {
    minidom::rxml::NcName::try_from(name).expect("attribute names here are valid NCNames")
}

/// An s2s XML stream of elements.
pub type S2sStream = XmlStream<S2sIo, Element>;

/// Read timeouts of s2s streams: a soft timeout after `idle`, then a
/// short grace period.
pub fn timeouts(idle: Duration) -> Timeouts {
    Timeouts {
        read_timeout: idle,
        response_timeout: Duration::from_secs(30),
    }
}

/// A copy of `element` whose elements in namespace `from` (the stanza and
/// its `jabber:*` children such as `<body/>` and `<error/>`) are in `to`.
pub fn rename_namespace(mut element: Element, from: &str, to: &str) -> Element {
    let ns = element.ns();
    let mut renamed = Element::bare(element.name(), if ns == from { to } else { &ns });
    *renamed.attrs_mut() = std::mem::take(element.attrs_mut());
    for node in element.take_nodes() {
        match node {
            minidom::Node::Element(child) => {
                renamed.append_child(rename_namespace(child, from, to));
            }
            minidom::Node::Text(text) => renamed.append_text_node(text),
        }
    }
    renamed
}

/// A stanza from a peer, as the server handles it.
pub fn to_client(stanza: Element) -> Element {
    if stanza.ns() == NS_SERVER {
        rename_namespace(stanza, NS_SERVER, NS_CLIENT)
    } else {
        stanza
    }
}

/// A stanza of the server's, as it goes to a peer.
pub fn to_server(stanza: Element) -> Element {
    if stanza.ns() == NS_CLIENT {
        rename_namespace(stanza, NS_CLIENT, NS_SERVER)
    } else {
        stanza
    }
}

/// Whether `element` is a stanza (as opposed to a nonza such as dialback
/// or stream management).
pub fn is_stanza(element: &Element) -> bool {
    (element.ns() == NS_SERVER || element.ns() == NS_CLIENT)
        && matches!(element.name(), "message" | "presence" | "iq")
}

/// The domain part of a JID attribute, if it is a valid JID.
pub fn domain_of(jid: Option<&str>) -> Option<String> {
    jid.and_then(|j| jid::Jid::new(j).ok())
        .map(|j| j.domain().as_str().to_owned())
}

/// Sends a stream error, the footer, and closes the transport (within
/// five seconds).
pub async fn close_with_error(stream: &mut S2sStream, condition: DefinedCondition, text: &str) {
    let error = SentStreamError(StreamError::new(condition, "en", text));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.send(&error).await;
        let _ = SinkExt::<&Element>::close(stream).await;
    })
    .await;
}

/// Sends the footer and closes the transport (within five seconds).
pub async fn close(stream: &mut S2sStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), SinkExt::<&Element>::close(stream)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_stanza_and_its_default_namespace_children_only() {
        let stanza: Element = "<message xmlns='jabber:server' from='a@x' to='b@y' type='chat'>\
             <body>hi</body><encrypted xmlns='urn:x'><payload>z</payload></encrypted></message>"
            .parse()
            .unwrap();
        let client = to_client(stanza.clone());
        assert_eq!(client.ns(), NS_CLIENT);
        assert_eq!(client.attr("from"), Some("a@x"));
        assert!(client.get_child("body", NS_CLIENT).is_some());
        let encrypted = client.get_child("encrypted", "urn:x").unwrap();
        assert!(encrypted.get_child("payload", "urn:x").is_some());
        assert_eq!(to_server(client), stanza);
    }

    #[test]
    fn domains_of_addresses() {
        assert_eq!(domain_of(Some("a@x.test/r")).as_deref(), Some("x.test"));
        assert_eq!(domain_of(Some("x.test")).as_deref(), Some("x.test"));
        assert_eq!(domain_of(Some("@@")), None);
        assert_eq!(domain_of(None), None);
    }
}
