//! Entity Capabilities (XEP-0115) of the server: a hash of its
//! disco#info, announced in stream features, so that clients cache what
//! the server supports instead of asking on every login.

use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps, Caps};
use xmpp_parsers::hashes::Algo;

use crate::server::Server;

/// The caps namespace.
pub const NS: &str = "http://jabber.org/protocol/caps";
/// The node that names this software.
pub const NODE: &str = "urn:tern:server";

/// The verification string of the server's disco#info.
pub fn ver(server: &Server) -> Option<String> {
    let info = super::disco::server_info(server);
    let hash = hash_caps(&compute_disco(&info), Algo::Sha_1).ok()?;
    Some(hash.to_base64())
}

/// The `<c/>` stream feature.
pub fn stream_feature(server: &Server) -> Option<Element> {
    let info = super::disco::server_info(server);
    let hash = hash_caps(&compute_disco(&info), Algo::Sha_1).ok()?;
    Some(Caps::new(NODE, hash).into())
}
