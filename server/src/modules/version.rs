//! Software Version (XEP-0092) of the server. The operating system is
//! not disclosed.

use minidom::Element;
use xmpp_parsers::version::VersionResult;

use crate::router::Destination;
use crate::stanza;

/// The software version namespace.
pub const NS: &str = "jabber:iq:version";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// Answers a version query addressed to the server.
pub fn handle_iq(iq: &Element, destination: &Destination) -> Option<Element> {
    if iq.attr("type") != Some("get") || *destination != Destination::Server {
        return None;
    }
    let version = VersionResult {
        name: "Tern".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        os: None,
    };
    Some(stanza::iq_result(iq, Some(version.into())))
}
