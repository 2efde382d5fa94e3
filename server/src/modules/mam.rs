//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2` with the
//! extended queries): every user's encrypted one-to-one messages, sent and
//! received, kept as ciphertext and paged with RSM (XEP-0059).
//!
//! The query syntax ([`Query`], [`result`], [`fin`]) is public: the bridge
//! answers the same queries from its decrypted store.

use chrono::{DateTime, SecondsFormat, Utc};
use jid::{BareJid, Jid};
use minidom::Element;
use std::sync::Arc;

use super::ciphertext;
use super::message::MessageKind;
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, set_attr, NS_CLIENT};
use crate::storage::{
    ArchiveEntry, ArchiveFilter, ArchiveKind, ArchiveSlot, ArchivedMessage, StoredMessage,
};

/// The MAM namespace.
pub const NS: &str = "urn:xmpp:mam:2";
/// Stanza ids (XEP-0359).
pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_DATA: &str = "jabber:x:data";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_DELAY: &str = "urn:xmpp:delay";
const NS_HINTS: &str = "urn:xmpp:hints";

/// Disco features of an account's archive.
pub const FEATURES: &[&str] = &[NS, "urn:xmpp:mam:2#extended", NS_SID];

/// Most results in one page.
pub const MAX_PAGE: usize = 250;

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
    /// RSM: messages after this id.
    pub after: Option<String>,
    /// RSM: messages before this id (`Some("")`: the last page).
    pub before: Option<String>,
    /// Extended query: messages after this id.
    pub after_id: Option<String>,
    /// Extended query: messages before this id.
    pub before_id: Option<String>,
    /// Extended query: only these ids.
    pub ids: Vec<String>,
    /// Extended query: the page in reverse order.
    pub flip_page: bool,
}

impl Query {
    /// Reads `<query xmlns='urn:xmpp:mam:2'/>`; `Err` says what is wrong.
    pub fn parse(query: &Element) -> Result<Self, String> {
        let mut parsed = Query {
            query_id: query.attr("queryid").map(str::to_owned),
            max: MAX_PAGE,
            flip_page: query.get_child("flip-page", NS).is_some(),
            ..Query::default()
        };
        if let Some(form) = query.get_child("x", NS_DATA) {
            for field in form.children().filter(|f| f.is("field", NS_DATA)) {
                let mut values = field
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(Element::text);
                let value = values.next().unwrap_or_default();
                let time = || {
                    DateTime::parse_from_rfc3339(&value)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| format!("{value:?} is not a date-time"))
                };
                match field.attr("var") {
                    Some("with") => parsed.with = Some(value.clone()),
                    Some("start") => parsed.start = Some(time()?),
                    Some("end") => parsed.end = Some(time()?),
                    Some("after-id") => parsed.after_id = Some(value),
                    Some("before-id") => parsed.before_id = Some(value),
                    Some("ids") => {
                        parsed.ids = std::iter::once(value).chain(values).collect();
                    }
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

    /// Whether the query uses extended-query parts.
    pub fn is_extended(&self) -> bool {
        self.after_id.is_some() || self.before_id.is_some() || !self.ids.is_empty()
    }
}

/// One result: `message` (as the client got it) wrapped for the query,
/// addressed to `to`.
pub fn result(
    query_id: Option<&str>,
    id: &str,
    stamp: DateTime<Utc>,
    message: Element,
    to: &str,
) -> Element {
    let mut result = Element::builder("result", NS).build();
    set_attr(&mut result, "id", id);
    if let Some(query_id) = query_id {
        set_attr(&mut result, "queryid", query_id);
    }
    let mut delay = Element::bare("delay", NS_DELAY);
    set_attr(
        &mut delay,
        "stamp",
        stamp.to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    let forwarded = Element::builder("forwarded", NS_FORWARD)
        .append(delay)
        .append(message)
        .build();
    result.append_child(forwarded);
    let mut wrapper = Element::builder("message", NS_CLIENT)
        .append(result)
        .build();
    set_attr(&mut wrapper, "to", to);
    wrapper
}

/// The `<fin/>` that ends a query whose page went from `first` to `last`.
pub fn fin(first: Option<&str>, last: Option<&str>, complete: bool) -> Element {
    let mut set = Element::bare("set", NS_RSM);
    if let (Some(first), Some(last)) = (first, last) {
        set.append_child(Element::builder("first", NS_RSM).append(first).build());
        set.append_child(Element::builder("last", NS_RSM).append(last).build());
    }
    let mut fin = Element::builder("fin", NS).append(set).build();
    if complete {
        set_attr(&mut fin, "complete", "true");
    }
    fin
}

/// Serves MAM requests of a user on their own archive: queries, the query
/// form, metadata and preferences.
pub async fn handle_iq(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if !session.addresses_own_account(iq, destination) {
        return errors::forbidden(iq, "only the owner reads an archive");
    }
    let archive = Archive {
        kind: ArchiveKind::User,
        owner: session.username.clone(),
    };
    answer(server, session, &archive, iq).await
}

/// Whose archive a request reads.
#[derive(Debug, Clone)]
pub struct Archive {
    /// A user's or a room's.
    pub kind: ArchiveKind,
    /// The user name, or the room's bare JID.
    pub owner: String,
}

impl Archive {
    /// The archive's JID, which its stanza ids are `by`.
    pub fn jid(&self, server: &Server) -> String {
        match self.kind {
            ArchiveKind::User => format!("{}@{}", self.owner, server.config.domain),
            ArchiveKind::Room => self.owner.clone(),
        }
    }
}

/// Answers a MAM request of `session` on `archive` (which the caller
/// allowed it to read).
pub async fn answer(
    server: &Server,
    session: &SessionCtx,
    archive: &Archive,
    iq: &Element,
) -> Option<Element> {
    if !server.config.archive.enabled {
        return errors::service_unavailable(iq, "this server keeps no message archive");
    }
    let payload = stanza::iq_payload(iq)?;
    match (iq.attr("type"), payload.name()) {
        (Some("get"), "query") => Some(stanza::iq_result(iq, Some(query_form()))),
        (Some("set"), "query") => Some(query(server, session, archive, iq, payload).await),
        (Some("get"), "metadata") => metadata(server, archive, iq).await,
        (Some("get"), "prefs") => Some(stanza::iq_result(iq, Some(prefs()))),
        (Some("set"), "prefs") if payload.attr("default") == Some("always") => {
            Some(stanza::iq_result(iq, Some(prefs())))
        }
        (Some("set"), "prefs") => stanza::error_reply(
            iq,
            xmpp_parsers::stanza_error::ErrorType::Cancel,
            xmpp_parsers::stanza_error::DefinedCondition::FeatureNotImplemented,
            "this server archives every encrypted message (default 'always')",
        ),
        _ => None,
    }
}

async fn query(
    server: &Server,
    session: &SessionCtx,
    archive: &Archive,
    iq: &Element,
    payload: &Element,
) -> Element {
    let fail = |reply: Option<Element>| reply.unwrap_or_else(|| iq.clone());
    let query = match Query::parse(payload) {
        Ok(query) => query,
        Err(problem) => return fail(errors::bad_request(iq, &problem)),
    };
    let with = match query.with.as_deref().map(Jid::new).transpose() {
        Ok(with) => with.map(|j| j.to_bare().to_string()),
        Err(_) => return fail(errors::bad_request(iq, "'with' is not a JID")),
    };
    server.archive.flushed().await;
    let mut filter = ArchiveFilter {
        with,
        start: query.start.map(|t| t.timestamp_micros()),
        end: query.end.map(|t| t.timestamp_micros()),
        after_id: query.after.clone().or(query.after_id.clone()),
        before_id: query.before_id.clone(),
        ids: query.ids.clone(),
        limit: query.max as u32 + 1,
        from_the_end: false,
    };
    if let Some(before) = query.before.as_deref() {
        filter.from_the_end = true;
        if !before.is_empty() {
            filter.before_id = Some(before.to_owned());
        }
    }
    let mut page = match server
        .storage
        .archive_query(archive.kind, &archive.owner, &filter)
        .await
    {
        Ok(Some(page)) => page,
        Ok(None) => return fail(errors::item_not_found(iq, "no message with that id")),
        Err(e) => {
            tracing::error!("reading the archive failed: {e}");
            return fail(errors::internal(iq));
        }
    };
    let complete = page.len() <= query.max;
    if !complete {
        if filter.from_the_end {
            page.remove(0);
        } else {
            page.pop();
        }
    }
    let first = page.first().map(|m| m.id.clone());
    let last = page.last().map(|m| m.id.clone());
    if query.flip_page {
        page.reverse();
    }
    let to = session.jid.to_string();
    let by = archive.jid(server);
    for archived in &page {
        if let Some((message, stamp)) = restore(archived, &by) {
            let wrapped = result(query.query_id.as_deref(), &archived.id, stamp, message, &to);
            // Past the queue's bounds: the session writes the page before
            // it reads the next request.
            session.handle.answer(wrapped);
        }
    }
    let fin = fin(first.as_deref(), last.as_deref(), complete);
    stanza::iq_result(iq, Some(fin))
}

/// The archive's first and last message (XEP-0313 §6.1).
async fn metadata(server: &Server, archive: &Archive, iq: &Element) -> Option<Element> {
    server.archive.flushed().await;
    let bounds = match server
        .storage
        .archive_bounds(archive.kind, &archive.owner)
        .await
    {
        Ok(bounds) => bounds,
        Err(e) => {
            tracing::error!("reading the archive failed: {e}");
            return errors::internal(iq);
        }
    };
    let mut metadata = Element::bare("metadata", NS);
    if let Some((first, last)) = bounds {
        for (name, archived) in [("start", first), ("end", last)] {
            let mut end = Element::bare(name, NS);
            set_attr(&mut end, "id", archived.id);
            set_attr(&mut end, "timestamp", format_stamp(archived.stamp));
            metadata.append_child(end);
        }
    }
    Some(stanza::iq_result(iq, Some(metadata)))
}

/// The fields a query form may hold (XEP-0313 §5.1).
fn query_form() -> Element {
    let field = |var: &str, type_: &str| {
        let mut field = Element::bare("field", NS_DATA);
        set_attr(&mut field, "var", var);
        set_attr(&mut field, "type", type_);
        field
    };
    let mut form_type = field("FORM_TYPE", "hidden");
    form_type.append_child(Element::builder("value", NS_DATA).append(NS).build());
    let mut form = Element::builder("x", NS_DATA)
        .attr(stanza::attr_name("type"), "form")
        .append(form_type)
        .build();
    for (var, type_) in [
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("after-id", "text-single"),
        ("before-id", "text-single"),
        ("ids", "text-multi"),
    ] {
        form.append_child(field(var, type_));
    }
    Element::builder("query", NS).append(form).build()
}

fn prefs() -> Element {
    let mut prefs = Element::builder("prefs", NS)
        .append(Element::bare("always", NS))
        .append(Element::bare("never", NS))
        .build();
    set_attr(&mut prefs, "default", "always");
    prefs
}

/// An archived message as the archive `by` serves it, with its time: the
/// stored stanza with the archive's `<stanza-id/>` (and no other claiming
/// to be by `by`).
pub fn restore(archived: &ArchivedMessage, by: &str) -> Option<(Element, DateTime<Utc>)> {
    let mut message = match archived.stanza.parse::<Element>() {
        Ok(message) => message,
        Err(e) => {
            tracing::error!(id = archived.id, "an archived message does not parse: {e}");
            return None;
        }
    };
    let stamp = DateTime::from_timestamp_micros(archived.stamp)?;
    stanza::remove_children(&mut message, |c| {
        c.is("stanza-id", NS_SID) && c.attr("by") == Some(by)
    });
    add_stanza_id(&mut message, by.to_owned(), &archived.id);
    Some((message, stamp))
}

fn format_stamp(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether a message belongs in the archive: a chat or normal message
/// with an end-to-end encrypted payload, not marked `no-store`.
pub fn archivable(server: &Server, message: &Element) -> bool {
    server.config.archive.enabled
        && matches!(
            MessageKind::of(message),
            MessageKind::Chat | MessageKind::Normal
        )
        && keeps(server, message)
}

/// Whether an archive (a user's or a room's) keeps a message of the
/// right kind: archiving is on, the content is encrypted, and the sender
/// did not ask not to store it (XEP-0334).
pub fn keeps(server: &Server, message: &Element) -> bool {
    server.config.archive.enabled
        && ciphertext::is_encrypted(message)
        && ciphertext::check(message).is_ok()
        && message.get_child("no-store", NS_HINTS).is_none()
        && message.get_child("no-permanent-store", NS_HINTS).is_none()
}

/// Prepares an incoming message for `owner`'s archive: drops any
/// `<stanza-id/>` claiming to be by `owner` (only this server may say
/// that) and, if the message is archivable, adds the id it is archived
/// under. That is `shared`'s when the message is stored already (its local
/// sender archived it, so it is archivable); otherwise the message is
/// stored now. Returns the stored message.
pub fn stamp_incoming(
    server: &Server,
    owner: &BareJid,
    message: &mut Element,
    shared: Option<&Arc<StoredMessage>>,
) -> Option<Arc<StoredMessage>> {
    let by = owner.to_string();
    stanza::remove_children(message, |c| {
        c.is("stanza-id", NS_SID) && c.attr("by") == Some(by.as_str())
    });
    let stored = match shared {
        Some(stored) => stored.clone(),
        None if archivable(server, message) => store(server.archive.slot(), message),
        None => return None,
    };
    add_stanza_id(message, by, &stored.id);
    Some(stored)
}

/// Adds `<stanza-id by='{by}' id='{id}'/>` (the caller removed any that
/// claimed to be by `by`).
fn add_stanza_id(message: &mut Element, by: String, id: &str) {
    let mut stanza_id = Element::bare("stanza-id", NS_SID);
    set_attr(&mut stanza_id, "by", by);
    set_attr(&mut stanza_id, "id", id);
    message.append_child(stanza_id);
}

/// Whether a message was archived in the archive of `owner` (a bare JID):
/// it carries the stanza id this server gave it there.
pub fn archived_by(message: &Element, owner: &str) -> bool {
    message
        .children()
        .any(|c| c.is("stanza-id", NS_SID) && c.attr("by") == Some(owner))
}

/// `message` stored in `slot`, serialised now so that the message itself
/// can go on without a copy.
pub fn store(slot: ArchiveSlot, message: &Element) -> Arc<StoredMessage> {
    slot.message(tern_federation::xml_text::to_text(message))
}

/// Stores `message` in `slot` and lists it in the archive of `owner` (a
/// user or a room).
pub async fn append_to(
    server: &Server,
    kind: ArchiveKind,
    owner: &str,
    slot: ArchiveSlot,
    with: &BareJid,
    message: &Element,
) {
    let stored = store(slot, message);
    let entry = ArchiveEntry {
        kind,
        owner,
        with: with.as_str(),
        message: &stored,
    };
    server.archive.append(entry).await;
}

/// A message its local sender is sending, stored for their archive
/// before it is routed; a local recipient's archive lists the same stored
/// message ([`stamp_incoming`]).
#[derive(Debug)]
pub struct Outgoing {
    /// The recipient's bare JID.
    pub with: String,
    /// The message as stored.
    pub message: Arc<StoredMessage>,
}

/// `message` stored for its sender's archive; `None` if it is not
/// archivable or has no `to` (which the router has normalised).
pub fn outgoing(server: &Server, message: &Element) -> Option<Outgoing> {
    if !archivable(server, message) {
        return None;
    }
    let to = message.attr("to")?;
    // A normalised JID's bare part is what comes before the first '/'
    // (nodeprep forbids it in a local part).
    let with = to.split_once('/').map_or(to, |(bare, _)| bare);
    Some(Outgoing {
        with: with.to_owned(),
        message: store(server.archive.slot(), message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_queries_are_read() {
        let query: Element = "<query xmlns='urn:xmpp:mam:2' queryid='q'>\
            <x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
            <field var='with'><value>bob@b.test</value></field>\
            <field var='start'><value>2026-01-01T00:00:00Z</value></field>\
            <field var='ids'><value>a</value><value>b</value></field>\
            <field var='after-id'><value>x</value></field></x>\
            <set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>\
            <flip-page/></query>"
            .parse()
            .expect("xml");
        let query = Query::parse(&query).expect("query");
        assert_eq!(query.with.as_deref(), Some("bob@b.test"));
        assert_eq!(query.ids, ["a", "b"]);
        assert_eq!(query.after_id.as_deref(), Some("x"));
        assert_eq!(query.before.as_deref(), Some(""));
        assert_eq!(query.max, 2);
        assert!(query.flip_page && query.is_extended());
        assert!(query.start.is_some());
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
