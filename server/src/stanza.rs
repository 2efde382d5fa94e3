//! Small helpers over `minidom::Element` stanzas: attributes, error
//! replies, results. Stanzas travel through the router as elements so that
//! payloads the server does not understand pass through untouched;
//! modules convert the payloads they serve into xmpp-parsers types.

use minidom::rxml::{Namespace, NcName};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

/// The `jabber:client` namespace of c2s stanzas.
pub const NS_CLIENT: &str = "jabber:client";

/// An attribute name written in this crate (a static, valid NCName).
pub fn attr_name(name: &'static str) -> NcName {
    NcName::try_from(name).expect("attribute names in this crate are valid NCNames")
}

/// Sets (or replaces) an unqualified attribute.
pub fn set_attr(el: &mut Element, name: &'static str, value: impl Into<String>) {
    el.attrs_mut()
        .insert(Namespace::NONE, attr_name(name), value.into());
}

/// Removes an unqualified attribute.
pub fn remove_attr(el: &mut Element, name: &str) {
    el.attrs_mut().remove(&Namespace::NONE, name);
}

/// Removes the child elements `unwanted` selects, keeping the order of
/// the other nodes.
pub fn remove_children(el: &mut Element, unwanted: impl Fn(&Element) -> bool) {
    if !el.children().any(&unwanted) {
        return;
    }
    for node in el.take_nodes() {
        match node {
            minidom::Node::Element(child) if unwanted(&child) => {}
            node => el.append_node(node),
        }
    }
}

/// A new stanza element in `jabber:client`.
pub fn new_stanza(name: &str) -> Element {
    Element::bare(name, NS_CLIENT)
}

/// An `<iq type='result'>` answering `request`, with an optional payload.
pub fn iq_result(request: &Element, payload: Option<Element>) -> Element {
    let mut iq = new_stanza("iq");
    set_attr(&mut iq, "type", "result");
    copy_reply_addressing(request, &mut iq);
    if let Some(p) = payload {
        iq.append_child(p);
    }
    iq
}

/// The error reply to `stanza`, or `None` when `stanza` is itself an error
/// (errors are never answered with errors). The original payload is not
/// echoed back.
pub fn error_reply(
    stanza: &Element,
    type_: ErrorType,
    condition: DefinedCondition,
    text: &str,
) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    let mut reply = new_stanza(stanza.name());
    set_attr(&mut reply, "type", "error");
    copy_reply_addressing(stanza, &mut reply);
    let mut error = StanzaError::new(type_, condition, "en", text);
    if text.is_empty() {
        error.texts.clear();
    }
    reply.append_child(error.into());
    Some(reply)
}

/// Shorthands for the common error replies.
/// Adds an application-specific condition (RFC 6120 §8.3.3.2) to an
/// error reply made by [`error_reply`].
pub fn with_application_condition(
    mut reply: Option<Element>,
    condition: impl Into<Element>,
) -> Option<Element> {
    if let Some(error) = reply
        .as_mut()
        .and_then(|r| r.get_child_mut("error", NS_CLIENT))
    {
        error.append_child(condition.into());
    }
    reply
}

pub mod errors {
    use super::*;

    /// `service-unavailable` (cancel).
    pub fn service_unavailable(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            text,
        )
    }

    /// `bad-request` (modify).
    pub fn bad_request(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Modify,
            DefinedCondition::BadRequest,
            text,
        )
    }

    /// `forbidden` (auth).
    pub fn forbidden(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(stanza, ErrorType::Auth, DefinedCondition::Forbidden, text)
    }

    /// `not-allowed` (cancel).
    pub fn not_allowed(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Cancel,
            DefinedCondition::NotAllowed,
            text,
        )
    }

    /// `not-acceptable` (modify).
    pub fn not_acceptable(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Modify,
            DefinedCondition::NotAcceptable,
            text,
        )
    }

    /// `item-not-found` (cancel).
    pub fn item_not_found(stanza: &Element, text: &str) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
            text,
        )
    }

    /// `internal-server-error` (wait).
    pub fn internal(stanza: &Element) -> Option<Element> {
        error_reply(
            stanza,
            ErrorType::Wait,
            DefinedCondition::InternalServerError,
            "internal server error",
        )
    }
}

/// Swaps `from`/`to` of `request` into `reply` and copies the `id`.
fn copy_reply_addressing(request: &Element, reply: &mut Element) {
    if let Some(id) = request.attr("id") {
        set_attr(reply, "id", id);
    }
    if let Some(from) = request.attr("from") {
        set_attr(reply, "to", from);
    }
    if let Some(to) = request.attr("to") {
        set_attr(reply, "from", to);
    }
}

/// The first child element of an IQ: its payload.
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    iq.children().next()
}

/// About how many bytes `element` takes serialised (names, attributes
/// and text; escaping and namespace declarations not counted): what a
/// session's queue and unacknowledged stanzas are bounded by, without
/// serialising.
pub fn approx_len(element: &Element) -> usize {
    let name = element.name().len();
    let attributes: usize = element
        .attrs()
        .iter()
        .map(|((_, name), value)| name.len() + value.len() + 4)
        .sum();
    let text: usize = element.texts().map(str::len).sum();
    let children: usize = element.children().map(approx_len).sum();
    2 * name + 5 + attributes + text + children
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_len_is_near_the_serialised_length() {
        let stanza: Element = "<message xmlns='jabber:client' to='b@x' id='1'>\
             <body>hello there</body><x xmlns='urn:example'><y a='b'/></x></message>"
            .parse()
            .unwrap();
        let serialised = String::from(&stanza).len();
        let approx = approx_len(&stanza);
        assert!(
            approx <= serialised && approx * 2 >= serialised,
            "{approx} {serialised}"
        );
    }

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let msg: Element =
            "<message xmlns='jabber:client' from='a@x/r' to='b@x' id='1'><body>hi</body></message>"
                .parse()
                .unwrap();
        let err = errors::service_unavailable(&msg, "gone").unwrap();
        assert_eq!(err.attr("to"), Some("a@x/r"));
        assert_eq!(err.attr("from"), Some("b@x"));
        assert_eq!(err.attr("id"), Some("1"));
        assert_eq!(err.attr("type"), Some("error"));
        assert!(err.get_child("body", NS_CLIENT).is_none());
        assert!(errors::service_unavailable(&err, "").is_none());
    }
}
