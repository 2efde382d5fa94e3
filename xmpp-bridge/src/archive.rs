//! Message Archive Management (XEP-0313) for the bridge's clients,
//! answered from the bridge's own decrypted store (the home server holds
//! only ciphertext it cannot give a standard client).
//!
//! Queries filter by `with` (a contact or a room), `start` and `end`, and
//! page with RSM (`max`, `after`, `before`, an empty `before` for the last
//! page); ids are envelope ids.

use chrono::{DateTime, Utc};
use minidom::Element;
use tern_e2ee::store::StoredMessage;
use tern_server::stanza::set_attr;

/// The MAM namespace.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_DATA: &str = "jabber:x:data";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";

/// Most results in one page.
pub const MAX_PAGE: usize = 250;
/// Messages looked at per conversation.
pub const LOOKED_AT: u32 = 10_000;

/// A parsed archive query.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    /// The client's query id, echoed in every result.
    pub query_id: Option<String>,
    /// Only this conversation partner (bare JID) or room.
    pub with: Option<String>,
    /// Only messages at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only messages at or before this time.
    pub end: Option<DateTime<Utc>>,
    /// Page size.
    pub max: usize,
    /// Messages after this id.
    pub after: Option<String>,
    /// Messages before this id (`Some("")`: the last page).
    pub before: Option<String>,
}

impl Query {
    /// Reads `<query xmlns='urn:xmpp:mam:2'/>`; `Err` says what is wrong.
    pub fn parse(query: &Element) -> Result<Self, String> {
        let mut parsed = Query {
            query_id: query.attr("queryid").map(str::to_owned),
            max: MAX_PAGE,
            ..Query::default()
        };
        if let Some(form) = query.get_child("x", NS_DATA) {
            for field in form.children().filter(|f| f.is("field", NS_DATA)) {
                let value = field
                    .get_child("value", NS_DATA)
                    .map(Element::text)
                    .unwrap_or_default();
                let time = || {
                    DateTime::parse_from_rfc3339(&value)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| format!("{value:?} is not a date-time"))
                };
                match field.attr("var") {
                    Some("with") => parsed.with = Some(value.clone()),
                    Some("start") => parsed.start = Some(time()?),
                    Some("end") => parsed.end = Some(time()?),
                    Some("FORM_TYPE") | None => {}
                    Some(other) => return Err(format!("unsupported field {other:?}")),
                }
            }
        }
        if let Some(set) = query.get_child("set", NS_RSM) {
            if let Some(max) = set.get_child("max", NS_RSM) {
                parsed.max = max
                    .text()
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| "max is not a number".to_owned())?
                    .min(MAX_PAGE);
            }
            parsed.after = set.get_child("after", NS_RSM).map(Element::text);
            parsed.before = set.get_child("before", NS_RSM).map(Element::text);
        }
        Ok(parsed)
    }

    /// The page of `messages` (oldest first) the query asks for, and
    /// whether it reaches the end of what matched.
    pub fn page<'a>(&self, messages: &'a [StoredMessage]) -> (&'a [StoredMessage], bool) {
        let in_range = |m: &&StoredMessage| {
            self.start.is_none_or(|s| m.envelope.time >= s)
                && self.end.is_none_or(|e| m.envelope.time <= e)
        };
        let first = messages
            .iter()
            .position(|m| in_range(&m))
            .unwrap_or(messages.len());
        let last = messages
            .iter()
            .rposition(|m| in_range(&m))
            .map_or(first, |l| l + 1);
        let mut matched = &messages[first..last.max(first)];
        let position = |id: &str| matched.iter().position(|m| m.envelope.id == id);
        match (&self.after, &self.before) {
            (Some(after), _) => {
                matched = position(after).map_or(&[][..], |at| &matched[at + 1..]);
                let complete = matched.len() <= self.max;
                (&matched[..matched.len().min(self.max)], complete)
            }
            (None, Some(before)) => {
                if !before.is_empty() {
                    matched = position(before).map_or(&[][..], |at| &matched[..at]);
                }
                let complete = matched.len() <= self.max;
                (&matched[matched.len().saturating_sub(self.max)..], complete)
            }
            (None, None) => {
                let complete = matched.len() <= self.max;
                (&matched[..matched.len().min(self.max)], complete)
            }
        }
    }
}

/// One result: `message` (as the client would have got it) wrapped for
/// the query.
pub fn result(query: &Query, stored: &StoredMessage, message: Element, to: &str) -> Element {
    let mut result = Element::builder("result", NS_MAM).build();
    set_attr(&mut result, "id", stored.envelope.id.clone());
    if let Some(id) = &query.query_id {
        set_attr(&mut result, "queryid", id.clone());
    }
    let mut delay = Element::bare("delay", NS_DELAY);
    set_attr(
        &mut delay,
        "stamp",
        stored
            .envelope
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let forwarded = Element::builder("forwarded", NS_FORWARD)
        .append(delay)
        .append(message)
        .build();
    result.append_child(forwarded);
    let mut wrapper = Element::builder("message", crate::mapping::NS_CLIENT)
        .append(result)
        .build();
    set_attr(&mut wrapper, "to", to.to_owned());
    wrapper
}

/// The `<fin/>` that ends a query.
pub fn fin(page: &[StoredMessage], complete: bool) -> Element {
    let mut set = Element::bare("set", NS_RSM);
    if let (Some(first), Some(last)) = (page.first(), page.last()) {
        set.append_child(
            Element::builder("first", NS_RSM)
                .append(first.envelope.id.as_str())
                .build(),
        );
        set.append_child(
            Element::builder("last", NS_RSM)
                .append(last.envelope.id.as_str())
                .build(),
        );
    }
    let mut fin = Element::builder("fin", NS_MAM).append(set).build();
    if complete {
        set_attr(&mut fin, "complete", "true");
    }
    fin
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_e2ee::envelope::{Content, Envelope};

    fn stored(id: &str) -> StoredMessage {
        let mut envelope = Envelope::new(
            "bob@b.test".parse().expect("jid"),
            vec![Content::Body(id.into())],
        );
        envelope.id = id.into();
        StoredMessage {
            group_id: vec![1],
            seq: None,
            sender: "bob@b.test#1".into(),
            envelope,
        }
    }

    #[test]
    fn pages_go_forward_and_back() {
        let messages: Vec<StoredMessage> = ["a", "b", "c", "d", "e"].map(stored).into();
        let ids = |page: &[StoredMessage]| -> Vec<String> {
            page.iter().map(|m| m.envelope.id.clone()).collect()
        };
        let query: Element = "<query xmlns='urn:xmpp:mam:2' queryid='q'>\
            <set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set></query>"
            .parse()
            .expect("xml");
        let mut query = Query::parse(&query).expect("query");
        let (page, complete) = query.page(&messages);
        assert_eq!((ids(page), complete), (vec!["d".into(), "e".into()], false));
        query.before = Some("d".into());
        let (page, complete) = query.page(&messages);
        assert_eq!((ids(page), complete), (vec!["b".into(), "c".into()], false));
        query.before = None;
        query.after = Some("c".into());
        let (page, complete) = query.page(&messages);
        assert_eq!((ids(page), complete), (vec!["d".into(), "e".into()], true));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let query: Element =
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
            <field var='fulltext'><value>x</value></field></x></query>"
                .parse()
                .expect("xml");
        assert!(Query::parse(&query).is_err());
    }
}
