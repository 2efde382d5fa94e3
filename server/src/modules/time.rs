//! Entity Time (XEP-0202): the server's time, in UTC.

use minidom::Element;

use crate::stanza;

/// The entity time namespace.
pub const NS: &str = "urn:xmpp:time";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// Answers a time request to the server.
pub fn handle_iq(iq: &Element) -> Option<Element> {
    if iq.attr("type") != Some("get") {
        return None;
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let time = Element::builder("time", NS)
        .append(Element::builder("tzo", NS).append("+00:00").build())
        .append(Element::builder("utc", NS).append(now).build())
        .build();
    Some(stanza::iq_result(iq, Some(time)))
}
