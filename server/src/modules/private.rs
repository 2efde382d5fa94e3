//! Private XML Storage (XEP-0049): a user keeps elements of any
//! namespace (`storage:bookmarks` of older clients, client settings) on
//! their account, readable only by themselves.

use minidom::Element;

use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors};

/// The private storage namespace.
pub const NS: &str = "jabber:iq:private";

/// Serves `jabber:iq:private` requests of a user on their own account.
pub async fn handle_iq(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if !session.addresses_own_account(iq, destination) {
        return errors::forbidden(iq, "private storage is for its owner only");
    }
    let query = stanza::iq_payload(iq)?;
    let elements: Vec<&Element> = query.children().collect();
    if elements.is_empty() || elements.iter().any(|e| e.ns().starts_with("jabber:")) {
        return errors::not_acceptable(iq, "name one or more elements outside jabber:* namespaces");
    }
    match iq.attr("type") {
        Some("get") => {
            let mut result = Element::bare("query", NS);
            for wanted in elements {
                let stored = server
                    .storage
                    .private_xml(&session.username, &wanted.ns(), wanted.name())
                    .await;
                match stored {
                    Ok(Some(xml)) => match xml.parse::<Element>() {
                        Ok(element) => result.append_child(element),
                        Err(_) => result.append_child(wanted.clone()),
                    },
                    Ok(None) => result.append_child(Element::bare(wanted.name(), wanted.ns())),
                    Err(e) => {
                        tracing::error!("reading private XML failed: {e}");
                        return errors::internal(iq);
                    }
                };
            }
            Some(stanza::iq_result(iq, Some(result)))
        }
        Some("set") => {
            let rows: Vec<(String, String, String)> = elements
                .iter()
                .map(|e| (e.ns(), e.name().to_owned(), String::from(*e)))
                .collect();
            match server
                .storage
                .set_private_xml(&session.username, &rows)
                .await
            {
                Ok(()) => Some(stanza::iq_result(iq, None)),
                Err(e) => {
                    tracing::error!("storing private XML failed: {e}");
                    errors::internal(iq)
                }
            }
        }
        _ => None,
    }
}
