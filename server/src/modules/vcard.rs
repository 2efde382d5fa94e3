//! vCard-temp (XEP-0054): each user's vCard, which anyone may read and
//! only its owner may set. Clients keep their avatar in it too (PHOTO,
//! announced in presence by XEP-0153).

use minidom::Element;

use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors};

/// The vCard namespace.
pub const NS: &str = "vcard-temp";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// Sets the requester's own vCard.
pub async fn handle_set(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if !session.addresses_own_account(iq, destination) {
        return errors::forbidden(iq, "you may only set your own vCard");
    }
    let vcard = stanza::iq_payload(iq)?;
    match server
        .storage
        .set_vcard(&session.username, &String::from(vcard))
        .await
    {
        Ok(()) => Some(stanza::iq_result(iq, None)),
        Err(e) => {
            tracing::error!("storing a vCard failed: {e}");
            errors::internal(iq)
        }
    }
}

/// Answers a vCard request for an account (the requester's own without
/// `to`): the stored vCard, or an empty one.
pub async fn handle_get(server: &Server, owner: &str, iq: &Element) -> Option<Element> {
    let vcard = match server.storage.vcard(owner).await {
        Ok(Some(xml)) => xml.parse::<Element>().ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::error!("reading a vCard failed: {e}");
            return errors::internal(iq);
        }
    };
    let vcard = vcard.unwrap_or_else(|| Element::bare("vCard", NS));
    Some(stanza::iq_result(iq, Some(vcard)))
}
