//! The MUC service (XEP-0045) for standard clients that encrypt with
//! OMEMO: every room is persistent, members-only and non-anonymous (so
//! each member can find every other member's devices), on
//! `conference.<domain>`. The ciphertext rule holds as for one-to-one
//! messages (the router refuses plain bodies before they get here);
//! encrypted messages are reflected to the occupants and kept in the
//! room's archive (XEP-0313 on the room's JID).
//!
//! Rooms and affiliations are stored; occupants and the subject live in
//! memory. Any local user may create a room (and owns it); owners and
//! admins manage affiliations; a member's invitation makes the invitee a
//! member.

pub mod room;

use std::collections::HashMap;
use std::sync::Mutex;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::modules::mam::{self, Archive};
use crate::modules::{ciphertext, disco};
use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors, set_attr, NS_CLIENT};
use crate::storage::{ArchiveFilter, ArchiveKind};
use room::{Affiliation, Occupant, Room, NS_MUC, NS_USER};

const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DATA: &str = "jabber:x:data";
const NS_DELAY: &str = "urn:xmpp:delay";

/// Features of every room.
const ROOM_FEATURES: &[&str] = &[
    NS_MUC,
    "http://jabber.org/protocol/muc#self-ping-optimization",
    "muc_membersonly",
    "muc_nonanonymous",
    "muc_persistent",
    "muc_hidden",
    "muc_unsecured",
    "muc_unmoderated",
    mam::NS,
    mam::NS_SID,
    disco::NS_INFO,
];

/// The service and its rooms in memory.
#[derive(Debug)]
pub struct MucService {
    /// The service's domain.
    pub domain: String,
    rooms: Mutex<HashMap<String, Room>>,
}

impl MucService {
    /// A service on `domain`.
    pub fn new(domain: String) -> Self {
        Self {
            domain,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bare JID of room `node`.
    fn room_jid(&self, node: &str) -> Option<BareJid> {
        BareJid::new(&format!("{node}@{}", self.domain)).ok()
    }
}

/// Runs `f` on room `node`, loading it from storage first if needed;
/// `None` when there is no such room.
async fn with_room<R>(server: &Server, node: &str, f: impl FnOnce(&mut Room) -> R) -> Option<R> {
    if !server.muc.lock().contains_key(node) {
        let jid = server.muc.room_jid(node)?;
        let stored = match server.storage.muc_room(&jid.to_string()).await {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::error!("reading a room failed: {e}");
                return None;
            }
        };
        let room = Room {
            name: stored.name,
            description: stored.description,
            affiliations: stored
                .affiliations
                .into_iter()
                .filter_map(|(jid, a)| Some((jid, Affiliation::parse(&a)?)))
                .collect(),
            ..Room::default()
        };
        server.muc.lock().entry(node.to_owned()).or_insert(room);
    }
    server.muc.lock().get_mut(node).map(f)
}

/// Sends a stanza from the service to a local or remote address.
async fn send(server: &Server, stanza: Element) {
    let to = stanza.attr("to").and_then(|t| Jid::new(t).ok());
    match server.destination(to.as_ref()) {
        Destination::Resource(user, resource) => {
            if let Some(target) = server.sessions.resource(&user, &resource) {
                target.handle.send(stanza);
            }
        }
        Destination::Account(user) => {
            let _ = crate::modules::message::deliver(server, stanza, &user, None, false).await;
        }
        Destination::Remote(_) => server.send_remote(stanza).await,
        _ => {}
    }
}

async fn send_all(server: &Server, stanzas: Vec<Element>) {
    for stanza in stanzas {
        send(server, stanza).await;
    }
}

/// Handles presence to a room (joining, updating, leaving).
pub async fn presence(server: &Server, presence: Element, node: &str, nick: Option<&str>) {
    let Some(from) = presence.attr("from").and_then(|f| FullJid::new(f).ok()) else {
        return;
    };
    let Some(room_jid) = server.muc.room_jid(node) else {
        return;
    };
    let result = match (presence.attr("type"), nick) {
        (Some("unavailable" | "error"), _) => leave(server, node, &room_jid, &from).await,
        (None, Some(nick)) => join(server, &presence, node, &room_jid, &from, nick).await,
        (None, None) => Err(refusal(
            ErrorType::Modify,
            DefinedCondition::JidMalformed,
            "join with a nickname: room@service/nick",
        )),
        _ => Ok(()),
    };
    if let Err((kind, condition, text)) = result {
        if let Some(mut error) = stanza::error_reply(&presence, kind, condition, text) {
            error.append_child(Element::bare("x", NS_MUC));
            send(server, error).await;
        }
    }
}

type Refusal = (ErrorType, DefinedCondition, &'static str);

fn refusal(kind: ErrorType, condition: DefinedCondition, text: &'static str) -> Refusal {
    (kind, condition, text)
}

async fn join(
    server: &Server,
    presence: &Element,
    node: &str,
    room_jid: &BareJid,
    from: &FullJid,
    nick: &str,
) -> Result<(), Refusal> {
    let mut created = false;
    if with_room(server, node, |_| ()).await.is_none() {
        if server.local_user(&from.to_bare()).is_none() {
            return Err(refusal(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                "no such room; rooms are created by this server's users",
            ));
        }
        let limits = crate::storage::RoomLimits {
            per_owner: server.config.muc.max_rooms_per_user,
            total: server.config.muc.max_rooms,
        };
        match server
            .storage
            .muc_create(&room_jid.to_string(), &from.to_bare().to_string(), limits)
            .await
        {
            Ok(crate::storage::RoomCreation::Created) => created = true,
            Ok(crate::storage::RoomCreation::Exists) => {}
            // XEP-0045 §10.1.1: room creation is restricted.
            Ok(crate::storage::RoomCreation::TooMany) => {
                return Err(refusal(
                    ErrorType::Cancel,
                    DefinedCondition::NotAllowed,
                    "no more rooms may be created (yours, or this service's)",
                ))
            }
            Err(e) => {
                tracing::error!("creating a room failed: {e}");
                return Err(refusal(
                    ErrorType::Wait,
                    DefinedCondition::InternalServerError,
                    "cannot create the room",
                ));
            }
        }
    }
    let history = requested_history(presence, server.config.muc.history_messages);
    let joined = with_room(server, node, |room| {
        join_room(room, room_jid, from, nick, presence, created)
    })
    .await
    .unwrap_or(Err(refusal(
        ErrorType::Cancel,
        DefinedCondition::ItemNotFound,
        "no such room",
    )))?;
    send_all(server, joined).await;
    if !created {
        send_history(server, room_jid, from, history).await;
    }
    if let Some(subject) = with_room(server, node, |room| room.subject_for(room_jid, from)).await {
        send(server, subject).await;
    }
    Ok(())
}

/// The stanzas of a join (or a presence update of an occupant).
fn join_room(
    room: &mut Room,
    room_jid: &BareJid,
    from: &FullJid,
    nick: &str,
    presence: &Element,
    created: bool,
) -> Result<Vec<Element>, Refusal> {
    let from_jid = Jid::from(from.clone());
    if let Some(index) = room.occupants.iter().position(|o| o.jid == *from) {
        if room.occupants[index].nick != nick {
            return Err(refusal(
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                "leave and join again to change your nickname",
            ));
        }
        room.occupants[index].presence = room::shown_children(presence);
        let updated = room.occupants[index].clone();
        return Ok(room
            .occupants
            .iter()
            .map(|o| {
                let codes: &[u16] = if o.jid == *from { &[110] } else { &[] };
                Room::presence_of(room_jid, &updated, &o.jid, false, codes)
            })
            .collect());
    }
    let affiliation = room.affiliation_of(&from_jid);
    if affiliation == Affiliation::Outcast {
        return Err(refusal(
            ErrorType::Auth,
            DefinedCondition::Forbidden,
            "you are banned from this room",
        ));
    }
    if !affiliation.may_enter() {
        return Err(refusal(
            ErrorType::Auth,
            DefinedCondition::RegistrationRequired,
            "this room is members-only: ask a member to invite you",
        ));
    }
    if room.occupant_by_nick(nick).is_some() {
        return Err(refusal(
            ErrorType::Cancel,
            DefinedCondition::Conflict,
            "that nickname is taken in this room",
        ));
    }
    let joiner = Occupant {
        nick: nick.to_owned(),
        jid: from.clone(),
        affiliation,
        presence: room::shown_children(presence),
    };
    let mut out: Vec<Element> = room
        .occupants
        .iter()
        .map(|o| Room::presence_of(room_jid, o, from, false, &[]))
        .collect();
    for other in &room.occupants {
        out.push(Room::presence_of(room_jid, &joiner, &other.jid, false, &[]));
    }
    // 110 self, 100 non-anonymous, 170 logged (archived), 201 created.
    let mut codes = vec![100, 110, 170];
    if created {
        codes.push(201);
    }
    out.push(Room::presence_of(room_jid, &joiner, from, false, &codes));
    room.occupants.push(joiner);
    Ok(out)
}

async fn leave(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    from: &FullJid,
) -> Result<(), Refusal> {
    let out = with_room(server, node, |room| {
        let Some(index) = room.occupants.iter().position(|o| o.jid == *from) else {
            return Vec::new();
        };
        let leaver = room.occupants.remove(index);
        let mut out: Vec<Element> = room
            .occupants
            .iter()
            .map(|o| Room::presence_of(room_jid, &leaver, &o.jid, true, &[]))
            .collect();
        out.push(Room::presence_of(room_jid, &leaver, from, true, &[110]));
        out
    })
    .await
    .unwrap_or_default();
    send_all(server, out).await;
    Ok(())
}

/// How many archived messages a joining occupant asked for (within the
/// configured most).
fn requested_history(presence: &Element, most: u32) -> u32 {
    presence
        .get_child("x", NS_MUC)
        .and_then(|x| x.get_child("history", NS_MUC))
        .and_then(|h| h.attr("maxstanzas"))
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(most, |n| n.min(most))
}

async fn send_history(server: &Server, room_jid: &BareJid, to: &FullJid, count: u32) {
    if count == 0 || !server.config.archive.enabled {
        return;
    }
    server.archive.flushed().await;
    let filter = ArchiveFilter {
        limit: count,
        from_the_end: true,
        ..ArchiveFilter::default()
    };
    let archived = match server
        .storage
        .archive_query(ArchiveKind::Room, &room_jid.to_string(), &filter)
        .await
    {
        // No id bounds: always a page.
        Ok(archived) => archived.unwrap_or_default(),
        Err(e) => {
            tracing::error!("reading a room's archive failed: {e}");
            return;
        }
    };
    let by = room_jid.to_string();
    for entry in archived {
        let Some((mut message, _)) = mam::restore(&entry, &by) else {
            continue;
        };
        set_attr(&mut message, "to", to.to_string());
        let mut delay = Element::bare("delay", NS_DELAY);
        set_attr(&mut delay, "from", room_jid.to_string());
        let stamp = chrono::DateTime::from_timestamp_micros(entry.stamp).unwrap_or_default();
        set_attr(
            &mut delay,
            "stamp",
            stamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        message.append_child(delay);
        send(server, message).await;
    }
}

/// Handles a message to a room or an occupant; the error for its sender,
/// if any.
pub async fn message(
    server: &Server,
    message: Element,
    node: Option<&str>,
    nick: Option<&str>,
) -> Option<Element> {
    let Some(node) = node else {
        return errors::service_unavailable(&message, "send to a room");
    };
    let room_jid = server.muc.room_jid(node)?;
    let from = message.attr("from").and_then(|f| FullJid::new(f).ok())?;
    if message.attr("type") == Some("error") {
        return None;
    }
    let result = match (nick, message.attr("type")) {
        (None, Some("groupchat")) => {
            groupchat(server, node, &room_jid, &from, message.clone()).await
        }
        (None, _) if message.get_child("x", NS_USER).is_some() => {
            invite(server, node, &room_jid, &from, &message).await
        }
        (Some(nick), _) => private(server, node, &room_jid, &from, nick, message.clone()).await,
        (None, _) => Err(refusal(
            ErrorType::Modify,
            DefinedCondition::BadRequest,
            "messages to a room are groupchat",
        )),
    };
    match result {
        Ok(()) => None,
        Err((kind, condition, text)) => stanza::error_reply(&message, kind, condition, text),
    }
}

fn not_in_room() -> Refusal {
    refusal(
        ErrorType::Modify,
        DefinedCondition::NotAcceptable,
        "join the room first",
    )
}

/// Whether a message to a room is the room's own protocol rather than a
/// message to its occupants: a subject change (kept in memory only) or a
/// mediated invitation, whose reason reaches the invitee live only (the
/// ciphertext rule keeps a forwarded invitation with a reason off the
/// disk).
pub fn is_room_protocol(message: &Element) -> bool {
    let invitation = message.attr("type") != Some("groupchat")
        && message.has_child("x", NS_USER)
        && message.get_child("body", NS_CLIENT).is_none();
    invitation || is_subject_change(message)
}

/// Whether a groupchat message changes the room's subject (XEP-0045
/// §8.1): a subject, and no body or encrypted payload. Subjects are kept
/// in memory only, never stored.
pub fn is_subject_change(message: &Element) -> bool {
    message.attr("type") == Some("groupchat")
        && message.get_child("subject", NS_CLIENT).is_some()
        && message.get_child("body", NS_CLIENT).is_none()
        && !ciphertext::is_encrypted(message)
}

async fn groupchat(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    from: &FullJid,
    mut message: Element,
) -> Result<(), Refusal> {
    let is_subject = is_subject_change(&message);
    let slot = server.archive.slot();
    let id = slot.id.clone();
    stanza::remove_children(&mut message, |c| {
        c.is("stanza-id", mam::NS_SID) && c.attr("by") == Some(&room_jid.to_string())
    });
    let mut stanza_id = Element::bare("stanza-id", mam::NS_SID);
    set_attr(&mut stanza_id, "by", room_jid.to_string());
    set_attr(&mut stanza_id, "id", id.clone());
    if !is_subject {
        message.append_child(stanza_id);
    }
    let reflected = with_room(server, node, |room| {
        let sender = room.occupants.iter().find(|o| o.jid == *from)?.clone();
        if is_subject {
            if !sender.affiliation.administers() {
                return Some(Err(refusal(
                    ErrorType::Auth,
                    DefinedCondition::Forbidden,
                    "only owners and admins change the subject",
                )));
            }
            let text = message
                .get_child("subject", NS_CLIENT)
                .map(Element::text)
                .unwrap_or_default();
            room.subject = Some((sender.nick.clone(), text));
        }
        let mut template = message.clone();
        set_attr(&mut template, "from", format!("{room_jid}/{}", sender.nick));
        stanza::remove_attr(&mut template, "to");
        let copies = room
            .occupants
            .iter()
            .map(|o| {
                let mut copy = template.clone();
                set_attr(&mut copy, "to", o.jid.to_string());
                copy
            })
            .collect::<Vec<_>>();
        Some(Ok((template, copies)))
    })
    .await
    .flatten()
    .ok_or_else(not_in_room)??;
    let (template, copies) = reflected;
    send_all(server, copies).await;
    if mam::keeps(server, &template) {
        mam::append_to(
            server,
            ArchiveKind::Room,
            &room_jid.to_string(),
            slot,
            &from.to_bare(),
            &template,
        )
        .await;
    }
    Ok(())
}

/// A private message between occupants.
async fn private(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    from: &FullJid,
    nick: &str,
    mut message: Element,
) -> Result<(), Refusal> {
    let routed = with_room(server, node, |room| {
        let sender = room.occupants.iter().find(|o| o.jid == *from)?;
        let target = room.occupant_by_nick(nick)?;
        Some((sender.nick.clone(), target.jid.clone()))
    })
    .await
    .flatten();
    let Some((sender_nick, target)) = routed else {
        return Err(refusal(
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
            "no such occupant (or you are not in the room)",
        ));
    };
    set_attr(&mut message, "from", format!("{room_jid}/{sender_nick}"));
    set_attr(&mut message, "to", target.to_string());
    message.append_child(Element::bare("x", NS_USER));
    send(server, message).await;
    Ok(())
}

/// A mediated invitation (XEP-0045 §7.8.2): the invitee becomes a
/// member and is told.
async fn invite(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    from: &FullJid,
    message: &Element,
) -> Result<(), Refusal> {
    let invites: Vec<(BareJid, String)> = message
        .get_child("x", NS_USER)
        .into_iter()
        .flat_map(|x| x.children().filter(|c| c.is("invite", NS_USER)))
        .filter_map(|invite| {
            let to = BareJid::new(invite.attr("to")?).ok()?;
            let reason = invite
                .get_child("reason", NS_USER)
                .map(Element::text)
                .unwrap_or_default();
            Some((to, reason))
        })
        .collect();
    let allowed = with_room(server, node, |room| {
        room.affiliation_of(&Jid::from(from.clone())).may_enter()
            && room.occupants.iter().any(|o| o.jid == *from)
    })
    .await
    .ok_or_else(not_in_room)?;
    if !allowed {
        return Err(not_in_room());
    }
    for (invitee, reason) in invites {
        let added = with_room(server, node, |room| {
            let current = room.affiliation_of(&Jid::from(invitee.clone()));
            if current == Affiliation::Outcast {
                return false;
            }
            if current < Affiliation::Member {
                room.affiliations
                    .insert(invitee.to_string(), Affiliation::Member);
            }
            true
        })
        .await
        .unwrap_or(false);
        if !added {
            continue;
        }
        if let Err(e) = server
            .storage
            .muc_affiliate(&room_jid.to_string(), &invitee.to_string(), Some("member"))
            .await
        {
            tracing::error!("storing a member failed: {e}");
        }
        let mut invite = Element::bare("invite", NS_USER);
        set_attr(&mut invite, "from", from.to_bare().to_string());
        if !reason.is_empty() {
            invite.append_child(Element::builder("reason", NS_USER).append(reason).build());
        }
        let mut notice = stanza::new_stanza("message");
        set_attr(&mut notice, "from", room_jid.to_string());
        set_attr(&mut notice, "to", invitee.to_string());
        notice.append_child(Element::builder("x", NS_USER).append(invite).build());
        send(server, notice).await;
    }
    Ok(())
}

/// Handles an IQ to the service, a room or an occupant. `session`: the
/// local requester's, if local (the room archive is for local members).
pub async fn iq(
    server: &Server,
    session: Option<&SessionCtx>,
    iq: &Element,
    node: Option<&str>,
    nick: Option<&str>,
) -> Option<Element> {
    let requester = Jid::new(iq.attr("from")?).ok()?;
    let payload = stanza::iq_payload(iq)?;
    let get = iq.attr("type") == Some("get");
    let Some(node) = node else {
        return match (get, payload.ns().as_str()) {
            (true, disco::NS_INFO) => Some(stanza::iq_result(iq, Some(service_info().into()))),
            (true, disco::NS_ITEMS) => Some(service_items(server, iq, &requester).await),
            _ => None,
        };
    };
    if let Some(nick) = nick {
        return occupant_iq(server, iq, payload, node, nick, &requester).await;
    }
    let room_jid = server.muc.room_jid(node)?;
    let affiliation = with_room(server, node, |room| room.affiliation_of(&requester)).await;
    let Some(affiliation) = affiliation else {
        return errors::item_not_found(iq, "no such room");
    };
    match (get, payload.ns().as_str()) {
        (true, disco::NS_INFO) => {
            let info = with_room(server, node, |room| room_info(room, node)).await?;
            Some(stanza::iq_result(iq, Some(info.into())))
        }
        (true, disco::NS_ITEMS) => {
            let empty = DiscoItemsResult {
                node: None,
                items: Vec::new(),
                rsm: None,
            };
            Some(stanza::iq_result(iq, Some(empty.into())))
        }
        (_, mam::NS) => match session {
            Some(session) if affiliation.may_enter() => {
                let archive = Archive {
                    kind: ArchiveKind::Room,
                    owner: room_jid.to_string(),
                };
                mam::answer(server, session, &archive, iq).await
            }
            Some(_) => errors::forbidden(iq, "only members read a room's archive"),
            None => errors::service_unavailable(iq, "the room archive is for local members"),
        },
        (true, NS_ADMIN) if affiliation.may_enter() => {
            Some(affiliation_list(server, node, iq, payload).await)
        }
        (false, NS_ADMIN) if affiliation.administers() => {
            Some(set_affiliations(server, node, &room_jid, iq, payload, affiliation).await)
        }
        (_, NS_OWNER) if affiliation == Affiliation::Owner => {
            Some(owner(server, node, &room_jid, iq, payload, get).await)
        }
        (_, NS_ADMIN | NS_OWNER) => errors::forbidden(iq, "your affiliation does not allow that"),
        _ => None,
    }
}

/// An IQ to an occupant: MUC self-ping (XEP-0410) answers whether the
/// requester is still in the room under that nickname; the rest is not
/// relayed.
async fn occupant_iq(
    server: &Server,
    iq: &Element,
    payload: &Element,
    node: &str,
    nick: &str,
    requester: &Jid,
) -> Option<Element> {
    if !payload.is("ping", crate::modules::ping::NS) {
        return errors::service_unavailable(iq, "requests are not relayed to occupants");
    }
    let joined = with_room(server, node, |room| {
        room.occupant_by_nick(nick)
            .is_some_and(|o| requester.try_as_full().is_ok_and(|r| *r == o.jid))
    })
    .await
    .unwrap_or(false);
    if joined {
        Some(stanza::iq_result(iq, None))
    } else {
        errors::not_acceptable(iq, "you are not in this room under that nickname")
    }
}

fn service_info() -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("conference", "text", "en", "Tern rooms")],
        features: [NS_MUC, disco::NS_INFO, disco::NS_ITEMS]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        extensions: Vec::new(),
    }
}

/// The rooms the requester is affiliated with (rooms are hidden).
async fn service_items(server: &Server, iq: &Element, requester: &Jid) -> Element {
    let rooms = server
        .storage
        .muc_rooms_of(&requester.to_bare().to_string())
        .await
        .unwrap_or_default();
    let items = DiscoItemsResult {
        node: None,
        items: rooms
            .into_iter()
            .filter_map(|room| {
                Some(Item {
                    jid: Jid::new(&room).ok()?,
                    node: None,
                    name: None,
                })
            })
            .collect(),
        rsm: None,
    };
    stanza::iq_result(iq, Some(items.into()))
}

fn room_info(room: &Room, node: &str) -> DiscoInfoResult {
    let name = if room.name.is_empty() {
        node.to_owned()
    } else {
        room.name.clone()
    };
    let form = xmpp_parsers::data_forms::DataForm::new(
        xmpp_parsers::data_forms::DataFormType::Result_,
        "http://jabber.org/protocol/muc#roominfo",
        vec![
            xmpp_parsers::data_forms::Field::text_single(
                "muc#roominfo_description",
                &room.description,
            ),
            xmpp_parsers::data_forms::Field::text_single(
                "muc#roominfo_occupants",
                &room.occupants.len().to_string(),
            ),
        ],
    );
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("conference", "text", "en", name)],
        features: ROOM_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        extensions: vec![form],
    }
}

/// The JIDs with an affiliation, for members (OMEMO clients need them).
async fn affiliation_list(server: &Server, node: &str, iq: &Element, query: &Element) -> Element {
    let wanted: Vec<Affiliation> = query
        .children()
        .filter(|c| c.is("item", NS_ADMIN))
        .filter_map(|c| Affiliation::parse(c.attr("affiliation")?))
        .collect();
    let items = with_room(server, node, |room| {
        let mut list: Vec<(String, Affiliation)> = room
            .affiliations
            .iter()
            .filter(|(_, a)| wanted.contains(a))
            .map(|(j, a)| (j.clone(), *a))
            .collect();
        list.sort();
        list
    })
    .await
    .unwrap_or_default();
    let mut result = Element::bare("query", NS_ADMIN);
    for (jid, affiliation) in items {
        let mut item = Element::bare("item", NS_ADMIN);
        set_attr(&mut item, "jid", jid);
        set_attr(&mut item, "affiliation", affiliation.as_str());
        set_attr(&mut item, "role", affiliation.role());
        result.append_child(item);
    }
    stanza::iq_result(iq, Some(result))
}

/// Changes affiliations; an occupant who is no longer a member leaves.
async fn set_affiliations(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    iq: &Element,
    query: &Element,
    requester: Affiliation,
) -> Element {
    let fail = |e: Option<Element>| e.unwrap_or_else(|| iq.clone());
    let mut affiliations = with_room(server, node, |room| room.affiliations.clone())
        .await
        .unwrap_or_default();
    let mut changes = Vec::new();
    for item in query.children().filter(|c| c.is("item", NS_ADMIN)) {
        let (Some(jid), Some(affiliation)) = (
            item.attr("jid").and_then(|j| BareJid::new(j).ok()),
            item.attr("affiliation").and_then(Affiliation::parse),
        ) else {
            return fail(errors::bad_request(
                iq,
                "each item needs a jid and an affiliation",
            ));
        };
        if (affiliation >= Affiliation::Admin) && requester != Affiliation::Owner {
            return fail(errors::forbidden(iq, "only owners make owners and admins"));
        }
        // XEP-0045 §9: an admin changes no owner's or admin's affiliation.
        let current = affiliations
            .get(jid.as_str())
            .copied()
            .unwrap_or(Affiliation::None);
        if current >= Affiliation::Admin && requester != Affiliation::Owner {
            return fail(errors::not_allowed(
                iq,
                "only owners change an owner's or an admin's affiliation",
            ));
        }
        match affiliation {
            Affiliation::None => affiliations.remove(jid.as_str()),
            other => affiliations.insert(jid.to_string(), other),
        };
        changes.push((jid, affiliation));
    }
    // §10.9: a room keeps an owner.
    if !affiliations.values().any(|a| *a == Affiliation::Owner) {
        return stanza::error_reply(
            iq,
            xmpp_parsers::stanza_error::ErrorType::Cancel,
            xmpp_parsers::stanza_error::DefinedCondition::Conflict,
            "a room keeps at least one owner",
        )
        .unwrap_or_else(|| iq.clone());
    }
    let mut out = Vec::new();
    for (jid, affiliation) in changes {
        let stored = (affiliation != Affiliation::None).then(|| affiliation.as_str());
        if let Err(e) = server
            .storage
            .muc_affiliate(&room_jid.to_string(), &jid.to_string(), stored)
            .await
        {
            tracing::error!("storing an affiliation failed: {e}");
            return fail(errors::internal(iq));
        }
        let kicked = with_room(server, node, |room| {
            match stored {
                Some(_) => room.affiliations.insert(jid.to_string(), affiliation),
                None => room.affiliations.remove(&jid.to_string()),
            };
            for occupant in room.occupants.iter_mut() {
                if occupant.jid.to_bare() == jid {
                    occupant.affiliation = affiliation;
                }
            }
            if affiliation.may_enter() {
                return Vec::new();
            }
            // 321: removed because of an affiliation change.
            let (gone, stay): (Vec<Occupant>, Vec<Occupant>) = room
                .occupants
                .drain(..)
                .partition(|o| o.jid.to_bare() == jid);
            room.occupants = stay;
            let mut out = Vec::new();
            for leaver in &gone {
                for o in room.occupants.iter().chain(std::iter::once(leaver)) {
                    out.push(Room::presence_of(room_jid, leaver, &o.jid, true, &[321]));
                }
            }
            out
        })
        .await
        .unwrap_or_default();
        out.extend(kicked);
    }
    send_all(server, out).await;
    stanza::iq_result(iq, None)
}

/// Owner requests: the configuration form, its submission, destruction.
async fn owner(
    server: &Server,
    node: &str,
    room_jid: &BareJid,
    iq: &Element,
    query: &Element,
    get: bool,
) -> Element {
    let fail = |e: Option<Element>| e.unwrap_or_else(|| iq.clone());
    if get {
        let form = with_room(server, node, config_form)
            .await
            .unwrap_or_else(|| Element::bare("x", NS_DATA));
        let query = Element::builder("query", NS_OWNER).append(form).build();
        return stanza::iq_result(iq, Some(query));
    }
    if query.get_child("destroy", NS_OWNER).is_some() {
        let occupants = server
            .muc
            .lock()
            .remove(node)
            .map(|room| room.occupants)
            .unwrap_or_default();
        if let Err(e) = server.storage.muc_destroy(&room_jid.to_string()).await {
            tracing::error!("destroying a room failed: {e}");
            return fail(errors::internal(iq));
        }
        // Its archived messages leave the message log too.
        server.archive.sweep_soon();
        let mut out = Vec::new();
        for occupant in &occupants {
            let mut presence = Room::presence_of(room_jid, occupant, &occupant.jid, true, &[110]);
            if let Some(x) = presence.get_child_mut("x", NS_USER) {
                x.append_child(Element::bare("destroy", NS_USER));
            }
            out.push(presence);
        }
        send_all(server, out).await;
        return stanza::iq_result(iq, None);
    }
    let Some(form) = query.get_child("x", NS_DATA) else {
        return fail(errors::bad_request(iq, "submit the configuration form"));
    };
    if form.attr("type") == Some("cancel") {
        return stanza::iq_result(iq, None);
    }
    let mut name = None;
    let mut description = None;
    for field in form.children().filter(|c| c.is("field", NS_DATA)) {
        let value = field
            .get_child("value", NS_DATA)
            .map(Element::text)
            .unwrap_or_default();
        let on = matches!(value.as_str(), "1" | "true");
        match field.attr("var") {
            Some("muc#roomconfig_roomname") => name = Some(value),
            Some("muc#roomconfig_roomdesc") => description = Some(value),
            Some("muc#roomconfig_membersonly") if !on => {
                return fail(errors::not_acceptable(iq, MEMBERS_ONLY));
            }
            Some("muc#roomconfig_whois") if value != "anyone" => {
                return fail(errors::not_acceptable(iq, MEMBERS_ONLY));
            }
            _ => {}
        }
    }
    let (name, description) = with_room(server, node, |room| {
        if let Some(name) = name {
            room.name = name;
        }
        if let Some(description) = description {
            room.description = description;
        }
        (room.name.clone(), room.description.clone())
    })
    .await
    .unwrap_or_default();
    match server
        .storage
        .muc_describe(&room_jid.to_string(), &name, &description)
        .await
    {
        Ok(()) => stanza::iq_result(iq, None),
        Err(e) => {
            tracing::error!("storing a room's configuration failed: {e}");
            fail(errors::internal(iq))
        }
    }
}

const MEMBERS_ONLY: &str =
    "rooms here are members-only and non-anonymous, so that end-to-end encryption works";

/// The room configuration form; the fixed fields say what cannot change.
fn config_form(room: &mut Room) -> Element {
    let field = |var: &str, type_: &str, label: &str, value: &str| {
        let mut field = Element::builder("field", NS_DATA)
            .append(Element::builder("value", NS_DATA).append(value).build())
            .build();
        set_attr(&mut field, "var", var);
        set_attr(&mut field, "type", type_);
        set_attr(&mut field, "label", label);
        field
    };
    let mut form = Element::bare("x", NS_DATA);
    set_attr(&mut form, "type", "form");
    for child in [
        field(
            "FORM_TYPE",
            "hidden",
            "",
            "http://jabber.org/protocol/muc#roomconfig",
        ),
        field("muc#roomconfig_roomname", "text-single", "Name", &room.name),
        field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            &room.description,
        ),
        field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent (always)",
            "1",
        ),
        field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only (always)",
            "1",
        ),
        field(
            "muc#roomconfig_whois",
            "list-single",
            "Real JIDs visible to (always anyone)",
            "anyone",
        ),
        field(
            "muc#roomconfig_publicroom",
            "boolean",
            "Listed (never)",
            "0",
        ),
        field(
            "muc#roomconfig_enablearchiving",
            "boolean",
            "Archive (encrypted messages)",
            "1",
        ),
    ] {
        form.append_child(child);
    }
    form
}
