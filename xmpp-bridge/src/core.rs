//! The bridge's core: one task owns the account's end-to-end encrypted
//! session with the home server and translates between it and the local
//! clients.
//!
//! - A client's chat message becomes an MLS message in the one-to-one
//!   conversation with its addressee (created on first use); incoming MLS
//!   messages reach the clients as ordinary `<message type='chat'/>`
//!   stanzas from the sender's JID ([`crate::mapping`]).
//! - Presence, roster and other IQs pass through to the home server and
//!   their answers come back to the client that asked.
//! - The bridge answers service discovery and pings for the domain
//!   itself, and says so with a stanza error when it cannot carry
//!   something, never silently.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use jid::BareJid;
use minidom::Element;
use tern_e2ee::envelope::{Content, Envelope};
use tern_e2ee::identity::DeviceName;
use tern_e2ee::{ConversationId, Event, Session, SessionError};
use tern_server::stanza::{self, errors};
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::archive::{self, Paging, NS_MAM};
use crate::local::{ClientId, Clients, FromClient};
use crate::mapping::{self, attr, contents_of, message_of, Ids, Outgoing, NS_CLIENT};
use crate::muc::{self, Room, Rooms, NS_MUC};

/// Messages kept for clients while none is connected.
const BACKLOG: usize = 1000;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// The bridge's core.
pub struct Core {
    session: Session,
    clients: std::sync::Arc<Clients>,
    account: BareJid,
    ids: Ids,
    /// IQs forwarded to the home server: which client asked.
    pending_iqs: HashMap<String, ClientId>,
    /// Conversations known to be one-to-one, with the other user.
    peers: HashMap<ConversationId, Option<BareJid>>,
    /// Clients that have been handed the backlog.
    seen: HashSet<ClientId>,
    /// Messages that arrived while no client was connected.
    backlog: VecDeque<Element>,
    /// The group rooms the clients joined.
    rooms: Rooms,
    /// Clients that enabled message carbons (XEP-0280).
    carbons: HashSet<ClientId>,
    /// Devices announced to the clients and not verified yet: a `verify`
    /// sent to the bridge's JID marks them verified.
    unverified: Vec<DeviceName>,
}

impl Core {
    /// A core around a logged-in session (pass-through on).
    pub fn new(mut session: Session, clients: std::sync::Arc<Clients>) -> Self {
        session.pass_through(true);
        let account = session.device().name().jid.clone();
        Self {
            session,
            clients,
            account,
            ids: Ids::default(),
            pending_iqs: HashMap::new(),
            peers: HashMap::new(),
            seen: HashSet::new(),
            backlog: VecDeque::new(),
            rooms: Rooms::default(),
            carbons: HashSet::new(),
            unverified: Vec::new(),
        }
    }

    /// Runs until the home server connection ends (`Err`) or the local
    /// side stops (`Ok`).
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<FromClient>,
    ) -> Result<(), SessionError> {
        self.drain_events().await?;
        loop {
            let step = tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.client_stanza(request).await,
                    None => return Ok(()),
                },
                ready = self.session.readable() => match ready {
                    Ok(()) => self.drain_events().await,
                    Err(e) => Err(e),
                },
            };
            match step {
                Ok(()) => {}
                Err(
                    e @ (SessionError::Disconnected
                    | SessionError::Timeout
                    | SessionError::Connect(_)),
                ) => self.reconnect(e).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Logs in again after the home server went away, waiting longer
    /// between attempts (1 s, doubling, up to 30 s). The clients stay
    /// connected; what they send meanwhile waits.
    async fn reconnect(&mut self, why: SessionError) {
        tracing::warn!("lost the home server ({why}); reconnecting");
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            match self.session.reconnect().await {
                Ok(()) => {
                    tracing::info!("reconnected to the home server");
                    return;
                }
                Err(e) => {
                    tracing::warn!(retry_in = ?wait, "cannot reconnect: {e}");
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn drain_events(&mut self) -> Result<(), SessionError> {
        while let Some(event) = self.session.next_event(Duration::ZERO).await? {
            self.event(event).await?;
        }
        Ok(())
    }

    // ----- from the clients --------------------------------------------------

    async fn client_stanza(&mut self, request: FromClient) -> Result<(), SessionError> {
        if self.seen.insert(request.client) {
            for stanza in std::mem::take(&mut self.backlog) {
                let mut stanza = stanza;
                tern_server::stanza::set_attr(&mut stanza, "to", request.jid.to_string());
                self.clients.send(request.client, stanza);
            }
        }
        let stanza = request.stanza;
        match stanza.name() {
            "message" => self.client_message(request.client, stanza).await,
            "iq" => self.client_iq(request.client, stanza).await,
            "presence" => self.client_presence(request.client, stanza).await,
            _ => Ok(()),
        }
    }

    async fn client_message(
        &mut self,
        client: ClientId,
        message: Element,
    ) -> Result<(), SessionError> {
        let Some(peer) = message
            .attr("to")
            .and_then(|to| to.parse::<jid::Jid>().ok())
            .map(|j| j.to_bare())
        else {
            return self.refuse(
                client,
                errors::bad_request(&message, "a message needs a 'to'"),
            );
        };
        let room = self.rooms.get(&peer).cloned();
        if message.attr("type") == Some("groupchat") || !muc::invitees(&message).is_empty() {
            let Some(room) = room else {
                return self.refuse(
                    client,
                    stanza::error_reply(
                        &message,
                        ErrorType::Cancel,
                        DefinedCondition::NotAcceptable,
                        "join the room first",
                    ),
                );
            };
            return self.room_message(client, &peer, room, message).await;
        }
        if peer.node().is_none() {
            if peer.domain() == self.account.domain() {
                return self.bridge_command(client, &message);
            }
            return self.refuse(
                client,
                errors::service_unavailable(&message, "the bridge carries messages to users only"),
            );
        }
        let Some(contents) = self.contents_for(client, &message) else {
            return Ok(());
        };
        let conversation = match self.session.conversation_with(&peer).await {
            Ok(conversation) => conversation,
            Err(e) => return self.cannot_send(client, &message, e),
        };
        if self
            .send_for(client, &message, &conversation, contents)
            .await?
            .is_some()
        {
            self.carbon_copy(Some(client), message);
        }
        Ok(())
    }

    /// The contents of a client's message; `None` when there is nothing
    /// to send (chat states) or the message was refused.
    fn contents_for(&self, client: ClientId, message: &Element) -> Option<Vec<Content>> {
        match contents_of(message, &self.ids) {
            Outgoing::Send(contents) => Some(contents),
            Outgoing::Ignore => None,
            Outgoing::Unsupported => {
                let refusal = stanza::error_reply(
                    message,
                    ErrorType::Cancel,
                    DefinedCondition::FeatureNotImplemented,
                    "the bridge carries text, receipts, chat markers, corrections, replies, \
                     reactions and retractions, end-to-end encrypted; this message has none of them",
                );
                let _ = self.refuse(client, refusal);
                None
            }
        }
    }

    /// Sends a client's message in `conversation`; its envelope, or
    /// `None` when it could not be sent (the client is told why).
    async fn send_for(
        &mut self,
        client: ClientId,
        message: &Element,
        conversation: &ConversationId,
        contents: Vec<Content>,
    ) -> Result<Option<Envelope>, SessionError> {
        match self.session.send(conversation, contents).await {
            Ok(envelope) => {
                if let Some(id) = message.attr("id") {
                    self.ids.record(id, &envelope.id);
                }
                Ok(Some(envelope))
            }
            Err(e) => self.cannot_send(client, message, e).map(|()| None),
        }
    }

    /// Tells the client why its message did not go (a lost connection to
    /// the home server ends the bridge's session instead).
    fn cannot_send(
        &self,
        client: ClientId,
        message: &Element,
        error: SessionError,
    ) -> Result<(), SessionError> {
        if matches!(error, SessionError::Disconnected) {
            return Err(error);
        }
        tracing::info!("cannot send: {error}");
        let text = format!("cannot send end-to-end encrypted: {error}");
        self.refuse(client, errors::service_unavailable(message, &text))
    }

    /// A message to the bridge's own JID: `verify` trusts the devices it
    /// announced.
    fn bridge_command(&mut self, client: ClientId, message: &Element) -> Result<(), SessionError> {
        let body = message
            .get_child("body", NS_CLIENT)
            .map(|b| b.text().trim().to_lowercase());
        let text = match body.as_deref() {
            Some("verify") if self.unverified.is_empty() => {
                "no device waits for verification".to_owned()
            }
            Some("verify") => {
                let store = self.session.device().store();
                let mut verified = Vec::new();
                for device in std::mem::take(&mut self.unverified) {
                    let id = device.device.to_string();
                    if store
                        .set_verified(device.jid.as_str(), &id, true)
                        .unwrap_or(false)
                    {
                        verified.push(device.to_string());
                    }
                }
                format!("verified: {}", verified.join(", "))
            }
            Some(_) => {
                "the bridge understands 'verify' (to trust the devices it announced)".to_owned()
            }
            None => return Ok(()),
        };
        self.notice(client_notice(&self.account, &text), Some(client));
        Ok(())
    }

    /// A client's message to a joined room: invitations add users to
    /// the group; anything else goes to the group, encrypted, and comes
    /// back to the clients as the room's echo.
    async fn room_message(
        &mut self,
        client: ClientId,
        address: &BareJid,
        room: Room,
        message: Element,
    ) -> Result<(), SessionError> {
        let invitees = muc::invitees(&message);
        if !invitees.is_empty() {
            if let Err(e) = self.session.add_users(&room.conversation, &invitees).await {
                return self.refuse(
                    client,
                    errors::service_unavailable(&message, &format!("cannot add them: {e}")),
                );
            }
            // Our own commit brings no event: the newcomers are shown now.
            self.refresh_occupants(address, &room.conversation).await;
            return Ok(());
        }
        let Some(contents) = self.contents_for(client, &message) else {
            return Ok(());
        };
        let conversation = room.conversation.clone();
        if let Some(envelope) = self
            .send_for(client, &message, &conversation, contents)
            .await?
        {
            let from = format!("{address}/{}", room.nick);
            let echo = message_of(&envelope, &from, "", "groupchat", &self.ids);
            self.deliver(echo);
        }
        Ok(())
    }

    /// A client's presence: joining or leaving a group's room, else on to
    /// the home server.
    async fn client_presence(
        &mut self,
        client: ClientId,
        presence: Element,
    ) -> Result<(), SessionError> {
        let to = presence
            .attr("to")
            .and_then(|to| to.parse::<jid::Jid>().ok());
        let Some(to) = to else {
            return self.forward(presence).await;
        };
        let (address, nick) = (to.to_bare(), to.resource().map(|r| r.to_string()));
        let joining =
            presence.get_child("x", NS_MUC).is_some() || self.rooms.get(&address).is_some();
        let mut conversation = match self.rooms.get(&address) {
            Some(room) => Some(room.conversation.clone()),
            None => self.session.conversation_at(&address)?,
        };
        let new_room = conversation.is_none()
            && joining
            && nick.is_some()
            && presence.attr("type") != Some("unavailable")
            && address.node().is_some()
            && address.domain().as_str() == format!("groups.{}", self.account.domain());
        if new_room {
            match self.session.create_conversation(&[]).await {
                Ok((id, hub)) => {
                    tracing::info!(room = %address, %hub, "a new room: created its group");
                    conversation = Some(id);
                }
                Err(SessionError::Disconnected) => return Err(SessionError::Disconnected),
                Err(e) => {
                    return self.refuse(
                        client,
                        errors::service_unavailable(
                            &presence,
                            &format!("cannot create the group: {e}"),
                        ),
                    )
                }
            }
        }
        let (Some(conversation), Some(nick), true) = (conversation, nick, joining) else {
            if presence.get_child("x", NS_MUC).is_some() {
                return self.refuse(
                    client,
                    errors::item_not_found(
                        &presence,
                        "no such group: rooms are the groups this account is in (create them with `tern group create`)",
                    ),
                );
            }
            return self.forward(presence).await;
        };
        if presence.attr("type") == Some("unavailable") {
            if let Some(room) = self.rooms.leave(&address) {
                let me = self.account.clone();
                self.deliver(muc::occupant(&address, &room.nick, &me, true, true));
            }
            return Ok(());
        }
        let occupants = self.occupants(&conversation).await;
        for user in &occupants {
            self.deliver(muc::occupant(
                &address,
                &muc::nick_of(user),
                user,
                false,
                false,
            ));
        }
        let me = self.account.clone();
        let mut own = muc::occupant(&address, &nick, &me, true, false);
        if new_room {
            muc::mark_created(&mut own);
        }
        self.deliver(own);
        self.deliver(muc::subject(&address));
        self.rooms.join(
            address,
            Room {
                conversation,
                nick,
                occupants,
            },
        );
        Ok(())
    }

    /// Shows the room's occupants as the group's members are now: who
    /// came, who went.
    async fn refresh_occupants(&mut self, address: &BareJid, conversation: &ConversationId) {
        let occupants = self.occupants(conversation).await;
        let (came, went) = self.rooms.update(address, occupants);
        let changes = came.into_iter().map(|u| (u, false));
        for (user, gone) in changes.chain(went.into_iter().map(|u| (u, true))) {
            self.deliver(muc::occupant(
                address,
                &muc::nick_of(&user),
                &user,
                false,
                gone,
            ));
        }
    }

    /// The member users of a group other than the account (none when
    /// this device is not in it).
    async fn occupants(
        &self,
        conversation: &ConversationId,
    ) -> std::collections::BTreeSet<BareJid> {
        self.other_members(conversation).await.unwrap_or_default()
    }

    /// The member users other than the account; `None` when this device
    /// is not (or no longer) in the conversation.
    async fn other_members(
        &self,
        conversation: &ConversationId,
    ) -> Option<std::collections::BTreeSet<BareJid>> {
        let users = self
            .session
            .device()
            .member_users(conversation)
            .await
            .ok()
            .flatten()?;
        Some(users.into_iter().filter(|u| *u != self.account).collect())
    }

    async fn client_iq(&mut self, client: ClientId, iq: Element) -> Result<(), SessionError> {
        let to_server = match iq.attr("to") {
            None => true,
            Some(to) => to == self.account.domain().as_str(),
        };
        let request = matches!(iq.attr("type"), Some("get" | "set"));
        let payload = stanza::iq_payload(&iq).cloned();
        if let (true, Some(payload)) = (request, payload) {
            if payload.is("query", NS_MAM) {
                return self.archive_query(client, &iq, &payload).await;
            }
            let to_room = iq
                .attr("to")
                .and_then(|to| to.parse::<BareJid>().ok())
                .is_some_and(|to| self.rooms.get(&to).is_some());
            if to_room && payload.ns() == muc::NS_MUC_OWNER {
                // Rooms are members-only and non-anonymous by nature: the
                // instant-room (or any) configuration is accepted as is.
                self.clients.send(client, stanza::iq_result(&iq, None));
                return Ok(());
            }
            if payload.ns() == NS_CARBONS && to_server {
                match payload.name() {
                    "enable" => self.carbons.insert(client),
                    _ => self.carbons.remove(&client),
                };
                self.clients.send(client, stanza::iq_result(&iq, None));
                return Ok(());
            }
        }
        if to_server && request {
            if let Some(answer) = self.answer_locally(&iq) {
                self.clients.send(client, answer);
                return Ok(());
            }
        }
        if request {
            if let Some(id) = iq.attr("id") {
                self.pending_iqs.insert(id.to_owned(), client);
            }
        }
        self.forward(iq).await
    }

    /// What the bridge answers itself: disco of the domain, pings, the
    /// legacy session.
    fn answer_locally(&self, iq: &Element) -> Option<Element> {
        let payload = stanza::iq_payload(iq)?;
        match (payload.ns().as_str(), payload.name()) {
            (NS_DISCO_INFO, "query") if payload.attr("node").is_none() => {
                Some(stanza::iq_result(iq, Some(self.disco_info())))
            }
            (NS_DISCO_ITEMS, "query") => Some(stanza::iq_result(
                iq,
                Some(Element::bare("query", NS_DISCO_ITEMS)),
            )),
            (NS_PING, "ping") | (NS_SESSION, "session") => Some(stanza::iq_result(iq, None)),
            _ => None,
        }
    }

    fn disco_info(&self) -> Element {
        let mut query = Element::builder("query", NS_DISCO_INFO)
            .append(
                Element::builder("identity", NS_DISCO_INFO)
                    .attr(attr("category"), "gateway")
                    .attr(attr("type"), "tern")
                    .attr(attr("name"), "tern-bridge (MLS end-to-end encryption)")
                    .build(),
            )
            .build();
        let features = [
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_PING,
            "jabber:iq:roster",
            NS_MUC,
        ]
        .into_iter()
        .chain(mapping::FEATURES);
        for feature in features {
            query.append_child(
                Element::builder("feature", NS_DISCO_INFO)
                    .attr(attr("var"), feature)
                    .build(),
            );
        }
        query
    }

    /// Copies a message the account sent to every client with carbons
    /// enabled, but `except` (the one that sent it).
    fn carbon_copy(&self, except: Option<ClientId>, message: Element) {
        for (id, jid) in self.clients.all() {
            if Some(id) == except || !self.carbons.contains(&id) {
                continue;
            }
            let forwarded = Element::builder("forwarded", NS_FORWARD)
                .append(message.clone())
                .build();
            let sent = Element::builder("sent", NS_CARBONS)
                .append(forwarded)
                .build();
            let mut carbon = Element::builder("message", NS_CLIENT).append(sent).build();
            stanza::set_attr(&mut carbon, "from", self.account.to_string());
            stanza::set_attr(&mut carbon, "to", jid.to_string());
            self.clients.send(id, carbon);
        }
    }

    /// Answers a MAM query from the bridge's decrypted store: the
    /// conversation with `with` (or the room the query is sent to), or
    /// every conversation.
    async fn archive_query(
        &mut self,
        client: ClientId,
        iq: &Element,
        payload: &Element,
    ) -> Result<(), SessionError> {
        let query = match archive::Query::parse(payload) {
            Ok(query) if query.is_extended() || query.flip_page => {
                let text = "the bridge pages with RSM only (no extended queries)";
                return self.refuse(client, errors::bad_request(iq, text));
            }
            Ok(query) => query,
            Err(problem) => return self.refuse(client, errors::bad_request(iq, &problem)),
        };
        let target = iq
            .attr("to")
            .filter(|to| *to != self.account.domain().as_str() && *to != self.account.as_str())
            .or(query.with.as_deref())
            .and_then(|t| t.parse::<jid::Jid>().ok())
            .map(|j| j.to_bare());
        let device = self.session.device();
        let room = target.as_ref().and_then(|t| self.rooms.get(t));
        let conversations = match &target {
            Some(_) if room.is_some() => room.map(|r| r.conversation.clone()).into_iter().collect(),
            Some(target) => match device.conversation_at(target)? {
                Some(group) => vec![group],
                None => device
                    .direct_conversation(target)
                    .await?
                    .into_iter()
                    .collect(),
            },
            None => device
                .conversations()?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        };
        let mut messages = Vec::new();
        for conversation in &conversations {
            let history = device.store().history(&conversation.0, archive::LOOKED_AT);
            messages.extend(history.map_err(tern_e2ee::Error::from)?);
        }
        messages.sort_by_key(|m| m.envelope.time);
        let (page, complete) = query.page(&messages);
        let Some(to) = self.client_jid(client) else {
            return Ok(());
        };
        for stored in page {
            let conversation = ConversationId(stored.group_id.clone());
            let Some(message) = self.archived_message(&conversation, stored).await else {
                continue;
            };
            let result = archive::result(&query, stored, message, &to);
            self.clients.send(client, result);
        }
        let fin = archive::fin(page, complete);
        self.clients.send(client, stanza::iq_result(iq, Some(fin)));
        Ok(())
    }

    /// A stored message as the client would have got it.
    async fn archived_message(
        &mut self,
        conversation: &ConversationId,
        stored: &tern_e2ee::store::StoredMessage,
    ) -> Option<Element> {
        let sender = &stored.envelope.from;
        if let Some(peer) = self.peer_of(conversation).await {
            let mut message = message_of(&stored.envelope, sender.as_str(), "", "chat", &self.ids);
            let to = if *sender == self.account {
                peer
            } else {
                self.account.clone()
            };
            stanza::set_attr(&mut message, "to", to.to_string());
            return Some(message);
        }
        let address = match self.rooms.of(conversation) {
            Some((alias, _)) => alias.clone(),
            None => self.session.device().address(conversation).ok().flatten()?,
        };
        let from = format!("{address}/{}", muc::nick_of(sender));
        Some(message_of(
            &stored.envelope,
            &from,
            self.account.as_str(),
            "groupchat",
            &self.ids,
        ))
    }

    fn client_jid(&self, client: ClientId) -> Option<String> {
        self.clients.jid(client).map(|jid| jid.to_string())
    }

    /// Sends a client's stanza on to the home server, as the account.
    async fn forward(&mut self, mut stanza: Element) -> Result<(), SessionError> {
        tern_server::stanza::remove_attr(&mut stanza, "from");
        self.session.send_stanza(stanza).await
    }

    /// Answers a client's stanza with an error (the stanza is handled).
    fn refuse(&self, client: ClientId, error: Option<Element>) -> Result<(), SessionError> {
        if let Some(error) = error {
            self.clients.send(client, error);
        }
        Ok(())
    }

    // ----- from the home server ----------------------------------------------

    async fn event(&mut self, event: Event) -> Result<(), SessionError> {
        tracing::debug!(?event, "from the home server");
        match event {
            Event::Message {
                conversation,
                sender,
                envelope,
                ..
            } => {
                if sender.jid == self.account {
                    // Written on another device of the account.
                    if let Some((address, room)) = self.rooms.of(&conversation) {
                        let from = format!("{address}/{}", room.nick);
                        let message = message_of(&envelope, &from, "", "groupchat", &self.ids);
                        self.deliver(message);
                    } else if let Some(peer) = self.peer_of(&conversation).await {
                        let mut message =
                            message_of(&envelope, self.account.as_str(), "", "chat", &self.ids);
                        stanza::set_attr(&mut message, "to", peer.to_string());
                        self.carbon_copy(None, message);
                    }
                    return Ok(());
                }
                if let Some((address, _)) = self.rooms.of(&conversation) {
                    let from = format!("{address}/{}", muc::nick_of(&sender.jid));
                    let message = message_of(&envelope, &from, "", "groupchat", &self.ids);
                    self.deliver(message);
                } else if self.peer_of(&conversation).await.is_some() {
                    let message = message_of(&envelope, sender.jid.as_str(), "", "chat", &self.ids);
                    self.deliver(message);
                } else {
                    tracing::debug!("a message of a group no client joined");
                }
            }
            Event::Joined { address, .. } => self.deliver(muc::invitation(&address)),
            Event::MembersChanged {
                conversation,
                added,
                ..
            } => {
                self.peers.remove(&conversation);
                for device in added {
                    self.announce_device(device, "has a new device");
                }
                if let Some((address, _)) = self.rooms.of(&conversation) {
                    let address = address.clone();
                    self.refresh_occupants(&address, &conversation).await;
                }
            }
            Event::Removed { conversation } => {
                if let Some((address, _)) = self.rooms.of(&conversation) {
                    let address = address.clone();
                    if let Some(room) = self.rooms.leave(&address) {
                        let me = self.account.clone();
                        self.deliver(muc::occupant(&address, &room.nick, &me, true, true));
                    }
                }
            }
            Event::Stanza(stanza) => self.server_stanza(stanza).await?,
            Event::VerificationReset { device, .. } => {
                self.announce_device(
                    device,
                    "has a device whose key changed (no longer verified)",
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Tells the clients about another user's device that is not
    /// verified, with its fingerprint, and how to trust it.
    fn announce_device(&mut self, device: DeviceName, what: &str) {
        if device.jid == self.account || self.unverified.contains(&device) {
            return;
        }
        let id = device.device.to_string();
        let known = self
            .session
            .device()
            .store()
            .known_devices(device.jid.as_str())
            .unwrap_or_default();
        let Some(known) = known.into_iter().find(|k| k.device == id) else {
            return;
        };
        if known.verified {
            return;
        }
        let text = format!(
            "{} {what}: {id}, fingerprint {}. Compare it with them, then reply 'verify' to trust it.",
            device.jid, known.fingerprint
        );
        self.unverified.push(device);
        self.notice(client_notice(&self.account, &text), None);
    }

    /// A message from the bridge's own JID, to one client or all.
    fn notice(&mut self, notice: Element, client: Option<ClientId>) {
        match client {
            Some(client) => {
                let mut notice = notice;
                if let Some(jid) = self.client_jid(client) {
                    stanza::set_attr(&mut notice, "to", jid);
                }
                self.clients.send(client, notice);
            }
            None => self.deliver(notice),
        }
    }

    /// The other user of a one-to-one conversation; `None` for groups.
    async fn peer_of(&mut self, conversation: &ConversationId) -> Option<BareJid> {
        if let Some(peer) = self.peers.get(conversation) {
            return peer.clone();
        }
        // Not cached while this device is not a member (yet).
        let others: Vec<BareJid> = self
            .other_members(conversation)
            .await?
            .into_iter()
            .collect();
        let peer = match others.as_slice() {
            [one]
                if self
                    .session
                    .device()
                    .address(conversation)
                    .ok()
                    .flatten()
                    .is_some() =>
            {
                Some(one.clone())
            }
            _ => None,
        };
        self.peers.insert(conversation.clone(), peer.clone());
        peer
    }

    async fn server_stanza(&mut self, stanza: Element) -> Result<(), SessionError> {
        let kind = stanza.attr("type").unwrap_or_default();
        if stanza.name() == "iq" {
            if matches!(kind, "result" | "error") {
                let client = stanza.attr("id").and_then(|id| self.pending_iqs.remove(id));
                if let Some((client, jid)) = client.and_then(|c| Some((c, self.client_jid(c)?))) {
                    let mut answer = stanza;
                    stanza::set_attr(&mut answer, "to", jid);
                    self.clients.send(client, answer);
                }
                return Ok(());
            }
            // The home server's keepalive: answered here, clients or not.
            if stanza.get_child("ping", NS_PING).is_some() {
                return self
                    .session
                    .send_stanza(stanza::iq_result(&stanza, None))
                    .await;
            }
        }
        self.deliver(stanza);
        Ok(())
    }

    /// Hands a stanza to every client, or keeps messages until one comes.
    fn deliver(&mut self, stanza: Element) {
        if self.clients.broadcast(&stanza) || stanza.name() != "message" {
            return;
        }
        if self.backlog.len() == BACKLOG {
            self.backlog.pop_front();
        }
        self.backlog.push_back(stanza);
    }
}

/// A chat message from the bridge's JID (the account's domain).
fn client_notice(account: &BareJid, text: &str) -> Element {
    let mut notice = Element::builder("message", NS_CLIENT)
        .append(Element::builder("body", NS_CLIENT).append(text).build())
        .build();
    stanza::set_attr(&mut notice, "from", account.domain().to_string());
    stanza::set_attr(&mut notice, "type", "chat");
    notice
}
