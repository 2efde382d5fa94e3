//! Entity Capabilities (XEP-0115) of the server: a hash of its
//! disco#info, announced in stream features, so that clients cache what
//! the server supports instead of asking on every login.

use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps, Caps};
use xmpp_parsers::hashes::{Algo, Hash};

use crate::server::Server;

/// The caps namespace.
pub const NS: &str = "http://jabber.org/protocol/caps";
/// The node that names this software.
pub const NODE: &str = "urn:tern:server";

/// The hash of the server's disco#info, computed once (the features
/// follow from the configuration, fixed at start-up).
fn hash(server: &Server) -> Option<&Hash> {
    server
        .caps
        .get_or_init(|| {
            let info = super::disco::server_info(server);
            hash_caps(&compute_disco(&info), Algo::Sha_1).ok()
        })
        .as_ref()
}

/// The verification string of the server's disco#info.
pub fn ver(server: &Server) -> Option<String> {
    Some(hash(server)?.to_base64())
}

/// The `<c/>` stream feature.
pub fn stream_feature(server: &Server) -> Option<Element> {
    Some(Caps::new(NODE, hash(server)?.clone()).into())
}
