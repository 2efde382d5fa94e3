//! Personal Eventing Protocol (XEP-0163): a pubsub service on every user's
//! bare JID, with the publish-options OMEMO clients rely on
//! (`pubsub#access_model`, `pubsub#max_items`), item retrieval, retraction,
//! node configuration and deletion, and notifications to the owner's
//! resources and presence subscribers.

use jid::BareJid;
use minidom::Element;
use rand::Rng;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::c2s::negotiation::account_jid;
use crate::router::Destination;
use crate::server::Server;
use crate::stanza::{self, errors};
use crate::storage::{AccessModel, PepNodeConfig};

/// The pubsub namespace.
pub const NS: &str = "http://jabber.org/protocol/pubsub";
/// The pubsub owner namespace.
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_DATA: &str = "jabber:x:data";
const NODE_CONFIG_FORM: &str = "http://jabber.org/protocol/pubsub#node_config";

/// The most items a node keeps (`pubsub#max_items = "max"`).
pub const MAX_ITEMS_CAP: u32 = 256;

/// Disco features of a PEP account.
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// The configuration of a node created without options.
const DEFAULT_CONFIG: PepNodeConfig = PepNodeConfig {
    access_model: AccessModel::Presence,
    max_items: 1,
};

/// Serves pubsub requests addressed to a user's bare JID (or, without
/// `to`, to the requester's own). Only a local owner changes nodes;
/// anyone may read what the access model lets them.
pub async fn handle_iq(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let requesting_user = server.local_user(requester);
    let owner = match destination {
        Destination::Server if iq.attr("to").is_none() => requesting_user?.to_owned(),
        Destination::Account(user) => user.clone(),
        _ => return None,
    };
    let payload = stanza::iq_payload(iq)?;
    let action = payload.children().next()?;
    let is_owner = requesting_user == Some(owner.as_str());
    let result = match (iq.attr("type"), payload.ns().as_str(), action.name()) {
        (Some("get"), NS, "items") => items(server, requester, iq, &owner, action).await,
        (Some("set"), NS, "publish") if is_owner => {
            publish(server, &owner, iq, payload, action).await
        }
        (Some("set"), NS, "retract") if is_owner => retract(server, &owner, iq, action).await,
        (Some("get"), NS_OWNER, "configure") if is_owner => {
            get_config(server, iq, &owner, action).await
        }
        (Some("set"), NS_OWNER, "configure") if is_owner => {
            set_config(server, iq, &owner, action).await
        }
        (Some("set"), NS_OWNER, "delete") if is_owner => delete(server, iq, &owner, action).await,
        (Some("set"), _, _) if !is_owner => {
            Ok(errors::forbidden(iq, "only the owner may change PEP nodes"))
        }
        _ => Ok(stanza::error_reply(
            iq,
            ErrorType::Cancel,
            DefinedCondition::FeatureNotImplemented,
            "unsupported",
        )),
    };
    result.unwrap_or_else(|e| {
        tracing::error!("PEP operation failed: {e}");
        errors::internal(iq)
    })
}

type Reply = Result<Option<Element>, crate::storage::StorageError>;

async fn items(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    owner: &str,
    request: &Element,
) -> Reply {
    let Some(node) = request.attr("node") else {
        return Ok(errors::bad_request(iq, "node required"));
    };
    let Some(config) = server.storage.pep_node(owner, node).await? else {
        return Ok(errors::item_not_found(iq, "no such node"));
    };
    if !may_read(server, requester, owner, config.access_model).await? {
        return Ok(errors::forbidden(iq, "not allowed to read this node"));
    }
    let max = request.attr("max_items").and_then(|m| m.parse().ok());
    let wanted: Vec<&str> = request
        .children()
        .filter(|c| c.name() == "item")
        .filter_map(|c| c.attr("id"))
        .collect();
    let stored = server
        .storage
        .pep_items(owner, node, if wanted.is_empty() { max } else { None })
        .await?;
    let mut items = Element::builder("items", NS)
        .attr(stanza::attr_name("node"), node)
        .build();
    for (id, payload) in stored {
        if !wanted.is_empty() && !wanted.contains(&id.as_str()) {
            continue;
        }
        items.append_child(item_element(NS, &id, &payload));
    }
    let pubsub = Element::builder("pubsub", NS).append(items).build();
    Ok(Some(stanza::iq_result(iq, Some(pubsub))))
}

async fn publish(
    server: &Server,
    owner: &str,
    iq: &Element,
    pubsub: &Element,
    publish: &Element,
) -> Reply {
    let Some(node) = publish.attr("node").filter(|n| !n.is_empty()) else {
        return Ok(errors::bad_request(iq, "node required"));
    };
    let mut items = publish.children().filter(|c| c.name() == "item");
    let (Some(item), None) = (items.next(), items.next()) else {
        return Ok(errors::bad_request(iq, "publish exactly one item"));
    };
    let mut payloads = item.children();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return Ok(errors::bad_request(
            iq,
            "an item carries exactly one payload",
        ));
    };
    let options = pubsub
        .get_child("publish-options", NS)
        .and_then(|o| o.get_child("x", NS_DATA));
    let existing = server.storage.pep_node(owner, node).await?;
    // XEP-0060 §7.1.3: bounded item size and node count per user.
    let limits = &server.config.limits;
    if crate::stanza::approx_len(payload) > limits.max_pep_item_bytes {
        return Ok(crate::stanza::with_application_condition(
            stanza::error_reply(
                iq,
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                "the item is larger than this server keeps",
            ),
            Element::bare("payload-too-big", NS_ERRORS),
        ));
    }
    if existing.is_none() && server.storage.pep_nodes(owner).await?.len() >= limits.max_pep_nodes {
        return Ok(stanza::error_reply(
            iq,
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
            "too many nodes: delete one first",
        ));
    }
    let requested =
        match options.map(|form| config_from_form(form, existing.unwrap_or(DEFAULT_CONFIG))) {
            None => None,
            Some(Ok(config)) => Some(config),
            Some(Err(text)) => return Ok(precondition_not_met(iq, text)),
        };
    let config = match (existing, requested) {
        (Some(current), Some(wanted)) if current != wanted => {
            return Ok(precondition_not_met(
                iq,
                "publish-options differ from the node's configuration",
            ));
        }
        (Some(current), _) => current,
        (None, wanted) => wanted.unwrap_or(DEFAULT_CONFIG),
    };
    let id = item
        .attr("id")
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::thread_rng().gen::<u64>()));
    let payload_xml = String::from(payload);
    server
        .storage
        .pep_publish(owner, node, config, &id, &payload_xml)
        .await?;
    let event_items = Element::builder("items", NS_EVENT)
        .attr(stanza::attr_name("node"), node)
        .append(item_element(NS_EVENT, &id, &payload_xml))
        .build();
    notify(server, owner, config.access_model, event_items).await?;
    let answer = Element::builder("pubsub", NS)
        .append(
            Element::builder("publish", NS)
                .attr(stanza::attr_name("node"), node)
                .append(
                    Element::builder("item", NS)
                        .attr(stanza::attr_name("id"), id.as_str())
                        .build(),
                )
                .build(),
        )
        .build();
    Ok(Some(stanza::iq_result(iq, Some(answer))))
}

async fn retract(server: &Server, owner: &str, iq: &Element, retract: &Element) -> Reply {
    let (Some(node), Some(id)) = (
        retract.attr("node"),
        retract.get_child("item", NS).and_then(|i| i.attr("id")),
    ) else {
        return Ok(errors::bad_request(iq, "node and item id required"));
    };
    let Some(config) = server.storage.pep_node(owner, node).await? else {
        return Ok(errors::item_not_found(iq, "no such node"));
    };
    if !server.storage.pep_retract(owner, node, id).await? {
        return Ok(errors::item_not_found(iq, "no such item"));
    }
    if matches!(retract.attr("notify"), Some("true" | "1")) {
        let event_items = Element::builder("items", NS_EVENT)
            .attr(stanza::attr_name("node"), node)
            .append(
                Element::builder("retract", NS_EVENT)
                    .attr(stanza::attr_name("id"), id)
                    .build(),
            )
            .build();
        notify(server, owner, config.access_model, event_items).await?;
    }
    Ok(Some(stanza::iq_result(iq, None)))
}

async fn get_config(server: &Server, iq: &Element, owner: &str, request: &Element) -> Reply {
    let Some(node) = request.attr("node") else {
        return Ok(errors::bad_request(iq, "node required"));
    };
    let Some(config) = server.storage.pep_node(owner, node).await? else {
        return Ok(errors::item_not_found(iq, "no such node"));
    };
    let form = Element::builder("x", NS_DATA)
        .attr(stanza::attr_name("type"), "form")
        .append(field("FORM_TYPE", Some("hidden"), NODE_CONFIG_FORM))
        .append(field(
            "pubsub#access_model",
            Some("list-single"),
            config.access_model.as_str(),
        ))
        .append(field(
            "pubsub#max_items",
            Some("text-single"),
            &config.max_items.to_string(),
        ))
        .build();
    let configure = Element::builder("configure", NS_OWNER)
        .attr(stanza::attr_name("node"), node)
        .append(form)
        .build();
    let pubsub = Element::builder("pubsub", NS_OWNER)
        .append(configure)
        .build();
    Ok(Some(stanza::iq_result(iq, Some(pubsub))))
}

async fn set_config(server: &Server, iq: &Element, owner: &str, request: &Element) -> Reply {
    let (Some(node), Some(form)) = (request.attr("node"), request.get_child("x", NS_DATA)) else {
        return Ok(errors::bad_request(iq, "node and form required"));
    };
    let Some(current) = server.storage.pep_node(owner, node).await? else {
        return Ok(errors::item_not_found(iq, "no such node"));
    };
    let config = match config_from_form(form, current) {
        Ok(c) => c,
        Err(text) => return Ok(errors::bad_request(iq, text)),
    };
    server.storage.pep_configure(owner, node, config).await?;
    Ok(Some(stanza::iq_result(iq, None)))
}

async fn delete(server: &Server, iq: &Element, owner: &str, request: &Element) -> Reply {
    let Some(node) = request.attr("node") else {
        return Ok(errors::bad_request(iq, "node required"));
    };
    if !server.storage.pep_delete_node(owner, node).await? {
        return Ok(errors::item_not_found(iq, "no such node"));
    }
    Ok(Some(stanza::iq_result(iq, None)))
}

/// The nodes of `owner` that `requester` may see.
pub async fn visible_nodes(server: &Server, requester: &BareJid, owner: &str) -> Vec<String> {
    let Ok(nodes) = server.storage.pep_nodes(owner).await else {
        return Vec::new();
    };
    let mut visible = Vec::new();
    for (node, config) in nodes {
        if may_read(server, requester, owner, config.access_model)
            .await
            .unwrap_or(false)
        {
            visible.push(node);
        }
    }
    visible
}

/// Access control of XEP-0060 §4.5 for the models PEP uses.
async fn may_read(
    server: &Server,
    requester: &BareJid,
    owner: &str,
    model: AccessModel,
) -> Result<bool, crate::storage::StorageError> {
    if server.local_user(requester) == Some(owner) {
        return Ok(true);
    }
    Ok(match model {
        AccessModel::Open => true,
        AccessModel::Whitelist => false,
        AccessModel::Presence => server
            .storage
            .roster_item(owner, requester.as_str())
            .await?
            .is_some_and(|item| item.subscription.has_from()),
    })
}

/// Sends a pubsub event to the owner's available resources and, unless the
/// node is private, to the available resources of presence subscribers.
async fn notify(
    server: &Server,
    owner: &str,
    model: AccessModel,
    event_items: Element,
) -> Result<(), crate::storage::StorageError> {
    let Some(owner_jid) = account_jid(owner, &server.config.domain) else {
        return Ok(());
    };
    let mut recipients: Vec<BareJid> = vec![owner_jid.clone()];
    if model != AccessModel::Whitelist {
        for item in server.storage.roster_items(owner).await? {
            if item.subscription.has_from() {
                if let Ok(jid) = BareJid::new(&item.contact) {
                    recipients.push(jid);
                }
            }
        }
    }
    let event = Element::builder("event", NS_EVENT)
        .append(event_items)
        .build();
    for recipient in recipients {
        if recipient.domain().as_str() != server.config.domain {
            continue;
        }
        let Some(user) = recipient.node() else {
            continue;
        };
        for resource in server
            .sessions
            .resources(user.as_str())
            .into_iter()
            .filter(|r| r.available())
        {
            let mut message = stanza::new_stanza("message");
            stanza::set_attr(&mut message, "type", "headline");
            stanza::set_attr(&mut message, "from", owner_jid.to_string());
            if let Ok(full) = recipient.with_resource_str(&resource.resource) {
                stanza::set_attr(&mut message, "to", full.to_string());
            }
            message.append_child(event.clone());
            resource.handle.send(message);
        }
    }
    Ok(())
}

/// Reads `pubsub#access_model` and `pubsub#max_items` from a data form,
/// starting from `base`; other fields are accepted and ignored.
fn config_from_form(form: &Element, base: PepNodeConfig) -> Result<PepNodeConfig, &'static str> {
    let mut config = base;
    for field in form.children().filter(|c| c.is("field", NS_DATA)) {
        let value = field
            .get_child("value", NS_DATA)
            .map(|v| v.text())
            .unwrap_or_default();
        match field.attr("var") {
            Some("pubsub#access_model") => {
                config.access_model =
                    AccessModel::parse(&value).ok_or("unsupported access model")?;
            }
            Some("pubsub#max_items") => {
                config.max_items = if value == "max" {
                    MAX_ITEMS_CAP
                } else {
                    value
                        .parse::<u32>()
                        .map_err(|_| "bad max_items")?
                        .clamp(1, MAX_ITEMS_CAP)
                };
            }
            _ => {}
        }
    }
    Ok(config)
}

fn field(var: &str, type_: Option<&str>, value: &str) -> Element {
    let mut field = Element::builder("field", NS_DATA)
        .attr(stanza::attr_name("var"), var)
        .build();
    if let Some(t) = type_ {
        stanza::set_attr(&mut field, "type", t);
    }
    field.append_child(Element::builder("value", NS_DATA).append(value).build());
    field
}

fn item_element(ns: &str, id: &str, payload_xml: &str) -> Element {
    let mut item = Element::builder("item", ns)
        .attr(stanza::attr_name("id"), id)
        .build();
    match payload_xml.parse::<Element>() {
        Ok(payload) => {
            item.append_child(payload);
        }
        Err(e) => tracing::error!("stored PEP payload does not parse: {e}"),
    }
    item
}

fn precondition_not_met(iq: &Element, text: &str) -> Option<Element> {
    stanza::error_reply(iq, ErrorType::Cancel, DefinedCondition::Conflict, text).map(|mut reply| {
        if let Some(error) = reply.get_child_mut("error", stanza::NS_CLIENT) {
            error.append_child(Element::bare("precondition-not-met", NS_ERRORS));
        }
        reply
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_options_form_is_read() {
        let form: Element = "<x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
            <field var='pubsub#access_model'><value>open</value></field>\
            <field var='pubsub#max_items'><value>max</value></field>\
            <field var='pubsub#persist_items'><value>true</value></field></x>"
            .parse()
            .unwrap();
        let config = config_from_form(&form, DEFAULT_CONFIG).unwrap();
        assert_eq!(
            config,
            PepNodeConfig {
                access_model: AccessModel::Open,
                max_items: MAX_ITEMS_CAP
            }
        );
        let bad: Element = "<x xmlns='jabber:x:data'><field var='pubsub#access_model'><value>roster</value></field></x>"
            .parse()
            .unwrap();
        assert!(config_from_form(&bad, DEFAULT_CONFIG).is_err());
    }
}
