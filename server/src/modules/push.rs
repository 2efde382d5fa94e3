//! Push Notifications (XEP-0357): a client registers its app server (a
//! JID and node, with a publish-options form holding its secret); when a
//! message for the user goes to offline storage, or to a session waiting
//! to be resumed, the app server is told "there is a message" so it can
//! wake the phone. The notification never carries the message's content
//! nor its sender: only a count.

use jid::Jid;
use minidom::Element;

use crate::c2s::negotiation::account_jid;
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, set_attr};

/// The push namespace.
pub const NS: &str = "urn:xmpp:push:0";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_DATA: &str = "jabber:x:data";

/// Disco features of an account.
pub const FEATURES: &[&str] = &[NS];

/// Serves `<enable/>` and `<disable/>` of a user on their own account.
pub async fn handle_iq(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if *destination != Destination::Server || iq.attr("type") != Some("set") {
        return errors::bad_request(iq, "enable or disable push with an IQ set to your server");
    }
    let payload = stanza::iq_payload(iq)?;
    let Some(jid) = payload.attr("jid").and_then(|j| Jid::new(j).ok()) else {
        return errors::bad_request(iq, "'jid' must name the app server");
    };
    let node = payload.attr("node");
    let saved = match (payload.name(), node) {
        ("enable", Some(node)) if !node.is_empty() => {
            let options = payload
                .get_child("x", NS_DATA)
                .map(String::from)
                .unwrap_or_default();
            let max = server.config.limits.max_push_registrations;
            match server
                .storage
                .push_enable(&session.username, &jid.to_string(), node, &options, max)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => {
                    return stanza::error_reply(
                        iq,
                        xmpp_parsers::stanza_error::ErrorType::Wait,
                        xmpp_parsers::stanza_error::DefinedCondition::ResourceConstraint,
                        "too many push registrations: disable one first",
                    )
                }
                Err(e) => Err(e),
            }
        }
        ("enable", _) => return errors::bad_request(iq, "'node' is required"),
        ("disable", node) => {
            server
                .storage
                .push_disable(&session.username, &jid.to_string(), node)
                .await
        }
        _ => return errors::bad_request(iq, "expected <enable/> or <disable/>"),
    };
    match saved {
        Ok(()) => Some(stanza::iq_result(iq, None)),
        Err(e) => {
            tracing::error!("saving a push registration failed: {e}");
            errors::internal(iq)
        }
    }
}

/// Whether a message is worth a notification: it has content.
pub fn worth_notifying(message: &Element) -> bool {
    message.get_child("body", stanza::NS_CLIENT).is_some()
        || super::ciphertext::is_encrypted(message)
}

/// Tells `username`'s app servers that a message is waiting.
pub async fn notify(server: &Server, username: &str) {
    let registrations = match server.storage.push_registrations(username).await {
        Ok(registrations) => registrations,
        Err(e) => {
            tracing::error!("reading push registrations failed: {e}");
            return;
        }
    };
    let Some(account) = account_jid(username, &server.config.domain) else {
        return;
    };
    for (jid, node, options) in registrations {
        let Ok(to) = Jid::new(&jid) else { continue };
        let publish = notification(&account.to_string(), &to, &node, &options);
        match server.destination(Some(&to)) {
            Destination::Remote(_) => server.send_remote(publish).await,
            Destination::Resource(user, resource) => {
                if let Some(target) = server.sessions.resource(&user, &resource) {
                    target.handle.send(publish);
                }
            }
            other => tracing::debug!(?other, "no app server to push to at {jid}"),
        }
        tracing::debug!(user = username, app_server = %jid, "push notification sent");
    }
}

/// The pubsub publish to an app server: a summary with a message count,
/// and the client's publish-options.
fn notification(from: &str, to: &Jid, node: &str, options: &str) -> Element {
    let field = |var: &str, value: &str| {
        let mut field = Element::builder("field", NS_DATA)
            .append(Element::builder("value", NS_DATA).append(value).build())
            .build();
        set_attr(&mut field, "var", var);
        field
    };
    let mut summary = Element::builder("x", NS_DATA)
        .append(field("FORM_TYPE", "urn:xmpp:push:summary"))
        .append(field("message-count", "1"))
        .build();
    set_attr(&mut summary, "type", "submit");
    let item = Element::builder("item", NS_PUBSUB)
        .append(Element::builder("notification", NS).append(summary).build())
        .build();
    let mut publish = Element::builder("publish", NS_PUBSUB).append(item).build();
    set_attr(&mut publish, "node", node);
    let mut pubsub = Element::builder("pubsub", NS_PUBSUB)
        .append(publish)
        .build();
    if let Ok(form) = options.parse::<Element>() {
        pubsub.append_child(
            Element::builder("publish-options", NS_PUBSUB)
                .append(form)
                .build(),
        );
    }
    let mut iq = stanza::new_stanza("iq");
    set_attr(&mut iq, "type", "set");
    set_attr(&mut iq, "id", format!("push-{:08x}", rand::random::<u32>()));
    set_attr(&mut iq, "from", from);
    set_attr(&mut iq, "to", to.to_string());
    iq.append_child(pubsub);
    iq
}
