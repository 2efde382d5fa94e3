//! XMPP Ping (XEP-0199): the server answers pings addressed to itself or
//! to a user's bare JID.

use minidom::Element;

use crate::router::Destination;
use crate::stanza;

/// The ping namespace.
pub const NS: &str = "urn:xmpp:ping";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// Answers a ping.
pub fn handle_iq(iq: &Element, destination: &Destination) -> Option<Element> {
    match (iq.attr("type"), destination) {
        (Some("get"), Destination::Server | Destination::Account(_)) => {
            Some(stanza::iq_result(iq, None))
        }
        _ => None,
    }
}
