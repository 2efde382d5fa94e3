//! One module per protocol feature. Each serves the IQ namespaces it owns
//! through [`handle_iq`]'s table and declares its disco features in
//! [`server_features`] / [`account_features`].

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod ciphertext;
pub mod csi;
pub mod disco;
pub mod keys;
pub mod last;
pub mod mam;
pub mod message;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod session;
pub mod time;
pub mod vcard;
pub mod version;

use jid::BareJid;
use minidom::Element;

use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza;

/// Dispatches an IQ request of a client session addressed to the server
/// or to a local bare JID by its payload's namespace. `None`: nobody
/// serves it.
pub async fn handle_iq(
    server: &Server,
    session: &mut SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?;
    match payload.ns().as_str() {
        roster::NS => roster::handle_iq(server, session, iq, destination).await,
        register::NS => register::handle_iq(server, session, iq, destination).await,
        session::NS => session::handle_iq(iq, destination),
        carbons::NS => carbons::handle_iq(server, session, iq, destination),
        mam::NS => mam::handle_iq(server, session, iq, destination).await,
        blocking::NS => blocking::handle_iq(server, session, iq, destination).await,
        private::NS => private::handle_iq(server, session, iq, destination).await,
        push::NS => push::handle_iq(server, session, iq, destination).await,
        vcard::NS if iq.attr("type") == Some("set") => {
            vcard::handle_set(server, session, iq, destination).await
        }
        _ => handle_open_iq(server, &session.bare(), iq, destination).await,
    }
}

/// Dispatches the IQ requests open to any requester, a local user or
/// another server's: discovery, ping, version, PEP and the key
/// directory (each module decides what only a local owner may do).
pub async fn handle_open_iq(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?;
    match payload.ns().as_str() {
        disco::NS_INFO | disco::NS_ITEMS => {
            disco::handle_iq(server, requester, iq, destination).await
        }
        pep::NS | pep::NS_OWNER => pep::handle_iq(server, requester, iq, destination).await,
        ping::NS => ping::handle_iq(iq, destination),
        version::NS => version::handle_iq(iq, destination),
        keys::NS => keys::handle_iq(server, requester, iq, destination).await,
        vcard::NS => match destination {
            Destination::Account(user) => vcard::handle_get(server, user, iq).await,
            Destination::Server if iq.attr("to").is_none() => {
                vcard::handle_get(server, server.local_user(requester)?, iq).await
            }
            _ => None,
        },
        last::NS => match destination {
            Destination::Account(user) => last::of_user(server, requester, user, iq).await,
            Destination::Server => last::uptime(server.started, iq),
            _ => None,
        },
        time::NS if *destination == Destination::Server => time::handle_iq(iq),
        _ => None,
    }
}

/// The features the server itself announces in disco#info.
pub fn server_features(server: &Server) -> Vec<&'static str> {
    let mut features = Vec::new();
    features.extend_from_slice(disco::FEATURES);
    features.extend_from_slice(ping::FEATURES);
    features.extend_from_slice(version::FEATURES);
    features.extend_from_slice(offline::FEATURES);
    features.extend_from_slice(roster::FEATURES);
    features.extend_from_slice(carbons::FEATURES);
    features.extend_from_slice(blocking::FEATURES);
    features.extend_from_slice(last::FEATURES);
    features.extend_from_slice(time::FEATURES);
    features.extend_from_slice(vcard::FEATURES);
    if server.config.registration == crate::config::Registration::Open {
        features.extend_from_slice(register::FEATURES);
    }
    features.sort_unstable();
    features
}

/// The features a user's account (bare JID) announces in disco#info.
pub fn account_features(server: &Server) -> Vec<&'static str> {
    let mut features = Vec::new();
    if server.config.archive.enabled {
        features.extend_from_slice(mam::FEATURES);
    }
    features.extend_from_slice(push::FEATURES);
    features.extend_from_slice(disco::FEATURES);
    features.extend_from_slice(pep::FEATURES);
    features.extend_from_slice(keys::FEATURES);
    features.sort_unstable();
    features
}
