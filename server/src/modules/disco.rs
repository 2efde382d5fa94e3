//! Service Discovery (XEP-0030) for the server and for user accounts.

use std::collections::BTreeSet;

use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};

use super::pep;
use crate::router::Destination;
use crate::server::Server;
use crate::stanza::{self, errors};

/// disco#info namespace.
pub const NS_INFO: &str = "http://jabber.org/protocol/disco#info";
/// disco#items namespace.
pub const NS_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS_INFO, NS_ITEMS];

/// Answers disco#info and disco#items for the server and accounts.
pub async fn handle_iq(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if iq.attr("type") != Some("get") {
        return None;
    }
    let query = stanza::iq_payload(iq)?;
    let node = query.attr("node");
    let info = query.is("query", NS_INFO);
    match destination {
        Destination::Server if node.is_some() && node != caps_node(server).as_deref() => {
            errors::item_not_found(iq, "no such node")
        }
        Destination::Server if info => {
            let mut info = server_info(server);
            info.node = node.map(str::to_owned);
            Some(stanza::iq_result(iq, Some(info.into())))
        }
        Destination::Server => Some(stanza::iq_result(iq, Some(server_items(server).into()))),
        Destination::Account(user) => {
            match server.storage.account_exists(user).await {
                Ok(true) => {}
                Ok(false) => return errors::service_unavailable(iq, ""),
                Err(e) => {
                    tracing::error!("account lookup failed: {e}");
                    return errors::internal(iq);
                }
            }
            if info {
                Some(stanza::iq_result(
                    iq,
                    Some(account_info(server, node).into()),
                ))
            } else {
                let items = pep::visible_nodes(server, requester, user).await;
                let owner = iq.attr("to").and_then(|t| Jid::new(t).ok())?;
                let result = DiscoItemsResult {
                    node: None,
                    items: items
                        .into_iter()
                        .map(|n| Item {
                            jid: owner.clone(),
                            node: Some(n),
                            name: None,
                        })
                        .collect(),
                    rsm: None,
                };
                Some(stanza::iq_result(iq, Some(result.into())))
            }
        }
        Destination::Resource(..)
        | Destination::Hub(_)
        | Destination::Upload
        | Destination::Muc(..)
        | Destination::Remote(_) => None,
    }
}

/// The node of the server's caps (`NODE#ver`), answered like the server.
fn caps_node(server: &Server) -> Option<String> {
    Some(format!(
        "{}#{}",
        super::caps::NODE,
        super::caps::ver(server)?
    ))
}

/// The server's own disco#info.
pub fn server_info(server: &Server) -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("server", "im", "en", "Tern")],
        features: features(super::server_features(server)),
        extensions: Vec::new(),
    }
}

fn account_info(server: &Server, node: Option<&str>) -> DiscoInfoResult {
    DiscoInfoResult {
        node: node.map(str::to_owned),
        identities: vec![
            anonymous_identity("account", "registered"),
            anonymous_identity("pubsub", "pep"),
        ],
        features: features(super::account_features(server)),
        extensions: Vec::new(),
    }
}

fn anonymous_identity(category: &str, type_: &str) -> Identity {
    Identity {
        category: category.to_owned(),
        type_: type_.to_owned(),
        lang: None,
        name: None,
    }
}

/// The server's services: the group hub and the upload service.
fn server_items(server: &Server) -> DiscoItemsResult {
    let item = |domain: &str, name: &str| {
        Jid::new(domain).ok().map(|jid| Item {
            jid,
            node: None,
            name: Some(name.to_owned()),
        })
    };
    DiscoItemsResult {
        node: None,
        items: [
            item(server.hub.domain(), "Groups"),
            item(&server.upload.domain, "File upload"),
            server
                .config
                .muc
                .enabled
                .then(|| item(&server.muc.domain, "Rooms"))
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .collect(),
        rsm: None,
    }
}

fn features(list: Vec<&'static str>) -> BTreeSet<String> {
    list.into_iter().map(str::to_owned).collect()
}
