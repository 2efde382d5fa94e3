//! Message Archive Management (XEP-0313) for the bridge's clients,
//! answered from the bridge's own decrypted store (the home server holds
//! only ciphertext it cannot give a standard client).
//!
//! Queries filter by `with` (a contact or a room), `start` and `end`, and
//! page with RSM (`max`, `after`, `before`, an empty `before` for the last
//! page); ids are envelope ids.

use minidom::Element;
use tern_e2ee::store::StoredMessage;
pub use tern_server::modules::mam::{Query, NS as NS_MAM};

/// Messages looked at per conversation.
pub const LOOKED_AT: u32 = 10_000;

/// The paging the bridge does over its store.
pub trait Paging {
    /// The page of `messages` (oldest first) the query asks for, and
    /// whether it reaches the end of what matched.
    fn page<'a>(&self, messages: &'a [StoredMessage]) -> (&'a [StoredMessage], bool);
}

impl Paging for Query {
    fn page<'a>(&self, messages: &'a [StoredMessage]) -> (&'a [StoredMessage], bool) {
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
    tern_server::modules::mam::result(
        query.query_id.as_deref(),
        &stored.envelope.id,
        stored.envelope.time,
        message,
        to,
    )
}

/// The `<fin/>` that ends a query.
pub fn fin(page: &[StoredMessage], complete: bool) -> Element {
    let id = |m: Option<&StoredMessage>| m.map(|m| m.envelope.id.clone());
    tern_server::modules::mam::fin(
        id(page.first()).as_deref(),
        id(page.last()).as_deref(),
        complete,
    )
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
}
