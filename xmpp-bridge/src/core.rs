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
use tern_e2ee::{ConversationId, Event, Session, SessionError};
use tern_server::stanza::{self, errors};
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::local::{ClientId, Clients, FromClient};
use crate::mapping::{self, attr, contents_of, message_of, Ids, Outgoing, NS_CLIENT};
use crate::muc::{self, Room, Rooms, NS_MUC};

/// Messages kept for clients while none is connected.
const BACKLOG: usize = 1000;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

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
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.client_stanza(request).await?;
                }
                ready = self.session.readable() => {
                    ready?;
                    self.drain_events().await?;
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
            return self.refuse(
                client,
                errors::service_unavailable(&message, "the bridge carries messages to users only"),
            );
        }
        let contents = match contents_of(&message, &self.ids) {
            Outgoing::Send(contents) => contents,
            Outgoing::Ignore => return Ok(()),
            Outgoing::Unsupported => {
                return self.refuse(
                    client,
                    stanza::error_reply(
                        &message,
                        ErrorType::Cancel,
                        DefinedCondition::FeatureNotImplemented,
                        "the bridge carries text, receipts, chat markers, corrections, replies, \
                         reactions and retractions, end-to-end encrypted; this message has none of them",
                    ),
                )
            }
        };
        let sent = match self.session.conversation_with(&peer).await {
            Ok(conversation) => self.session.send(&conversation, contents).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(envelope) => {
                if let Some(id) = message.attr("id") {
                    self.ids.record(id, &envelope.id);
                }
                Ok(())
            }
            Err(SessionError::Disconnected) => Err(SessionError::Disconnected),
            Err(e) => {
                tracing::info!(%peer, "cannot send: {e}");
                self.refuse(
                    client,
                    errors::service_unavailable(
                        &message,
                        &format!("cannot send to {peer} end-to-end encrypted: {e}"),
                    ),
                )
            }
        }
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
            return Ok(());
        }
        let contents = match contents_of(&message, &self.ids) {
            Outgoing::Send(contents) => contents,
            Outgoing::Ignore => return Ok(()),
            Outgoing::Unsupported => {
                return self.refuse(
                    client,
                    errors::bad_request(&message, "nothing the bridge can carry to the group"),
                )
            }
        };
        match self.session.send(&room.conversation, contents).await {
            Ok(envelope) => {
                if let Some(id) = message.attr("id") {
                    self.ids.record(id, &envelope.id);
                }
                let from = format!("{address}/{}", room.nick);
                let echo = message_of(&envelope, &from, "", "groupchat", &self.ids);
                self.deliver(echo);
                Ok(())
            }
            Err(SessionError::Disconnected) => Err(SessionError::Disconnected),
            Err(e) => self.refuse(
                client,
                errors::service_unavailable(&message, &format!("cannot send to the group: {e}")),
            ),
        }
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
        let conversation = self.session.conversation_at(&address)?;
        let joining =
            presence.get_child("x", NS_MUC).is_some() || self.rooms.get(&address).is_some();
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
        self.deliver(muc::occupant(&address, &nick, &me, true, false));
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

    /// The member users of a group other than the account.
    async fn occupants(
        &self,
        conversation: &ConversationId,
    ) -> std::collections::BTreeSet<BareJid> {
        let users = self
            .session
            .device()
            .member_users(conversation)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        users.into_iter().filter(|u| *u != self.account).collect()
    }

    async fn client_iq(&mut self, client: ClientId, iq: Element) -> Result<(), SessionError> {
        let to_server = match iq.attr("to") {
            None => true,
            Some(to) => to == self.account.domain().as_str(),
        };
        let request = matches!(iq.attr("type"), Some("get" | "set"));
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
            Event::MembersChanged { conversation, .. } => {
                self.peers.remove(&conversation);
                let Some((address, _)) = self.rooms.of(&conversation) else {
                    return Ok(());
                };
                let address = address.clone();
                let occupants = self.occupants(&conversation).await;
                let (came, went) = self.rooms.update(&address, occupants);
                for user in came {
                    self.deliver(muc::occupant(
                        &address,
                        &muc::nick_of(&user),
                        &user,
                        false,
                        false,
                    ));
                }
                for user in went {
                    self.deliver(muc::occupant(
                        &address,
                        &muc::nick_of(&user),
                        &user,
                        false,
                        true,
                    ));
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
                let text = format!(
                    "{} has a new device ({}); its key changed, so it is no longer verified. \
                     Compare its fingerprint with `tern verify {}`.",
                    device.jid, device.device, device.jid
                );
                let notice = Element::builder("message", NS_CLIENT)
                    .attr(attr("from"), self.account.domain().as_str())
                    .attr(attr("type"), "chat")
                    .append(Element::builder("body", NS_CLIENT).append(text).build())
                    .build();
                self.deliver(notice);
            }
            _ => {}
        }
        Ok(())
    }

    /// The other user of a one-to-one conversation; `None` for groups.
    async fn peer_of(&mut self, conversation: &ConversationId) -> Option<BareJid> {
        if let Some(peer) = self.peers.get(conversation) {
            return peer.clone();
        }
        let users = self
            .session
            .device()
            .member_users(conversation)
            .await
            .ok()
            .flatten()?;
        let others: Vec<BareJid> = users.into_iter().filter(|u| *u != self.account).collect();
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
                if let Some(client) = client {
                    if let Some((_, jid)) =
                        self.clients.all().into_iter().find(|(id, _)| *id == client)
                    {
                        let mut answer = stanza;
                        tern_server::stanza::set_attr(&mut answer, "to", jid.to_string());
                        self.clients.send(client, answer);
                    }
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
        if self.clients.all().is_empty() {
            if stanza.name() == "message" {
                if self.backlog.len() == BACKLOG {
                    self.backlog.pop_front();
                }
                self.backlog.push_back(stanza);
            }
            return;
        }
        self.clients.broadcast(&stanza);
    }
}
