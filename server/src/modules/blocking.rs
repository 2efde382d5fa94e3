//! Blocking Command (XEP-0191): a user's blocklist of domains, bare and
//! full JIDs. Nothing from a blocked JID reaches the user (messages and
//! IQ requests bounce with `service-unavailable`, presence is dropped),
//! and the user cannot send to it (`not-acceptable` with `<blocked/>`).
//!
//! Lists are read from storage once per user and kept in memory, since
//! every stanza for a user is checked against them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jid::Jid;
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, set_attr};

/// The blocking namespace.
pub const NS: &str = "urn:xmpp:blocking";
const NS_ERRORS: &str = "urn:xmpp:blocking:errors";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// The blocklists of the users seen so far.
#[derive(Debug, Default)]
pub struct Blocklists {
    lists: RwLock<HashMap<String, Arc<Vec<String>>>>,
}

impl Blocklists {
    fn cached(&self, username: &str) -> Option<Arc<Vec<String>>> {
        let lists = self.lists.read().unwrap_or_else(|e| e.into_inner());
        lists.get(username).cloned()
    }

    fn store(&self, username: &str, list: Vec<String>) {
        let mut lists = self.lists.write().unwrap_or_else(|e| e.into_inner());
        lists.insert(username.to_owned(), Arc::new(list));
    }
}

/// `username`'s blocklist (from memory, or storage the first time).
async fn list(server: &Server, username: &str) -> Arc<Vec<String>> {
    if let Some(list) = server.blocklists.cached(username) {
        return list;
    }
    match server.storage.blocklist(username).await {
        Ok(list) => {
            server.blocklists.store(username, list);
            server.blocklists.cached(username).unwrap_or_default()
        }
        Err(e) => {
            tracing::error!("reading a blocklist failed: {e}");
            Arc::default()
        }
    }
}

/// Whether `username` blocks `jid`: its full JID, bare JID or domain is
/// on the list.
pub async fn blocks(server: &Server, username: &str, jid: &Jid) -> bool {
    listed(&list(server, username).await, jid)
}

/// Whether `jid`'s full JID, bare JID or domain is on `list`.
fn listed(list: &[String], jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let full = jid.to_string();
    let bare = jid.to_bare().to_string();
    let domain = jid.domain().as_str();
    list.iter()
        .any(|item| *item == full || *item == bare || item == domain)
}

/// Whether `username` blocks the sender of a stanza, answered from
/// memory; `None` when the list was not read yet.
pub fn blocks_sender_cached(server: &Server, username: &str, stanza: &Element) -> Option<bool> {
    let list = server.blocklists.cached(username)?;
    Some(match stanza.attr("from").map(Jid::new) {
        Some(Ok(from)) => listed(&list, &from),
        _ => false,
    })
}

/// Whether `username` blocks the sender (`from`) of a stanza.
pub async fn blocks_sender(server: &Server, username: &str, stanza: &Element) -> bool {
    match stanza.attr("from").map(Jid::new) {
        Some(Ok(from)) => blocks(server, username, &from).await,
        _ => false,
    }
}

/// The error for a user who sends to a JID they block.
pub fn refusal(stanza: &Element) -> Option<Element> {
    stanza::with_application_condition(
        stanza::error_reply(
            stanza,
            ErrorType::Cancel,
            DefinedCondition::NotAcceptable,
            "you block this address; unblock it first",
        ),
        Element::bare("blocked", NS_ERRORS),
    )
}

/// Serves the blocklist requests of a user on their own account.
pub async fn handle_iq(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if !session.addresses_own_account(iq, destination) {
        return errors::forbidden(iq, "only your own blocklist");
    }
    let payload = stanza::iq_payload(iq)?;
    let user = &session.username;
    match (iq.attr("type"), payload.name()) {
        (Some("get"), "blocklist") => {
            let mut blocklist = Element::bare("blocklist", NS);
            for jid in list(server, user).await.iter() {
                blocklist.append_child(item(jid));
            }
            Some(stanza::iq_result(iq, Some(blocklist)))
        }
        (Some("set"), kind @ ("block" | "unblock")) => {
            let jids = match items_of(payload) {
                Ok(jids) => jids,
                Err(text) => return errors::bad_request(iq, text),
            };
            if kind == "block" && jids.is_empty() {
                return errors::bad_request(iq, "name at least one JID to block");
            }
            let saved = if kind == "block" {
                server.storage.block(user, &jids).await
            } else {
                server.storage.unblock(user, &jids).await
            };
            if let Err(e) = saved {
                tracing::error!("saving a blocklist failed: {e}");
                return errors::internal(iq);
            }
            match server.storage.blocklist(user).await {
                Ok(list) => server.blocklists.store(user, list),
                Err(e) => tracing::error!("reading a blocklist failed: {e}"),
            }
            if kind == "block" {
                for jid in jids.iter().filter_map(|j| Jid::new(j).ok()) {
                    crate::modules::presence::send_unavailable_to(server, user, &jid).await;
                }
            }
            push(server, session, payload);
            Some(stanza::iq_result(iq, None))
        }
        _ => errors::bad_request(iq, "expected blocklist, block or unblock"),
    }
}

/// Tells the user's other resources of the change (XEP-0191 §3.3).
fn push(server: &Server, session: &SessionCtx, change: &Element) {
    for resource in server.sessions.resources(&session.username) {
        if resource.handle.id == session.handle.id {
            continue;
        }
        let mut iq = stanza::new_stanza("iq");
        set_attr(&mut iq, "type", "set");
        set_attr(
            &mut iq,
            "id",
            format!("block-push-{}", rand::random::<u32>()),
        );
        set_attr(
            &mut iq,
            "to",
            format!("{}/{}", session.bare(), resource.resource),
        );
        iq.append_child(change.clone());
        resource.handle.send(iq);
    }
}

fn item(jid: &str) -> Element {
    let mut item = Element::bare("item", NS);
    set_attr(&mut item, "jid", jid);
    item
}

/// The normalised JIDs of a block or unblock request.
fn items_of(payload: &Element) -> Result<Vec<String>, &'static str> {
    payload
        .children()
        .filter(|c| c.is("item", NS))
        .map(|c| {
            c.attr("jid")
                .and_then(|j| Jid::new(j).ok())
                .map(|j| j.to_string())
                .ok_or("every item needs a valid 'jid'")
        })
        .collect()
}
