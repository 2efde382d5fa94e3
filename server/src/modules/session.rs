//! The legacy session establishment IQ (RFC 3921 §3, kept optional by
//! RFC 6121): answered with an empty result for old clients.

use minidom::Element;

use crate::router::Destination;
use crate::stanza;

/// The session namespace.
pub const NS: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// Answers `<session/>`.
pub fn handle_iq(iq: &Element, destination: &Destination) -> Option<Element> {
    (iq.attr("type") == Some("set") && *destination == Destination::Server)
        .then(|| stanza::iq_result(iq, None))
}
