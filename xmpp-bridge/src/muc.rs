//! Tern groups as Multi-User Chat rooms (XEP-0045) for the bridge's
//! clients: a group's hub address is the room's JID, each member user is
//! an occupant named by their bare JID, `groupchat` messages go through
//! the hub encrypted, mediated invitations add users. Joining a room that
//! does not exist on the account's groups domain creates a group; its
//! hub picks the group's address, so the client keeps the room's JID as
//! an alias while the other members see the hub's.

use std::collections::{BTreeSet, HashMap};

use jid::BareJid;
use minidom::Element;
use tern_e2ee::ConversationId;
use tern_server::stanza::set_attr;

use crate::mapping::NS_CLIENT;

/// The MUC namespace (joining).
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// The MUC user namespace (occupants, invitations, status codes).
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// The MUC owner namespace (room configuration).
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// A room the clients are in.
#[derive(Debug, Clone)]
pub struct Room {
    /// The group behind it.
    pub conversation: ConversationId,
    /// The nick the client joined with.
    pub nick: String,
    /// The member users shown as occupants (the account excluded).
    pub occupants: BTreeSet<BareJid>,
}

/// The joined rooms, by address.
#[derive(Debug, Default)]
pub struct Rooms {
    joined: HashMap<BareJid, Room>,
}

impl Rooms {
    /// The room at `address`, if joined.
    pub fn get(&self, address: &BareJid) -> Option<&Room> {
        self.joined.get(address)
    }

    /// The joined room of a conversation.
    pub fn of(&self, conversation: &ConversationId) -> Option<(&BareJid, &Room)> {
        self.joined
            .iter()
            .find(|(_, room)| room.conversation == *conversation)
    }

    /// Records a joined room.
    pub fn join(&mut self, address: BareJid, room: Room) {
        self.joined.insert(address, room);
    }

    /// Forgets a room; what it was.
    pub fn leave(&mut self, address: &BareJid) -> Option<Room> {
        self.joined.remove(address)
    }

    /// Replaces a room's occupants; who came and who went.
    pub fn update(
        &mut self,
        address: &BareJid,
        occupants: BTreeSet<BareJid>,
    ) -> (Vec<BareJid>, Vec<BareJid>) {
        let Some(room) = self.joined.get_mut(address) else {
            return (Vec::new(), Vec::new());
        };
        let came = occupants.difference(&room.occupants).cloned().collect();
        let went = room.occupants.difference(&occupants).cloned().collect();
        room.occupants = occupants;
        (came, went)
    }
}

/// An occupant's nick: the user's bare JID (unique across domains).
pub fn nick_of(user: &BareJid) -> String {
    user.to_string()
}

/// The presence of occupant `nick` in `room`: `user` is their real JID
/// (the room is non-anonymous), `own` marks the client's own occupant
/// (status 110), `gone` makes it unavailable.
pub fn occupant(room: &BareJid, nick: &str, user: &BareJid, own: bool, gone: bool) -> Element {
    let mut item = Element::builder("item", NS_MUC_USER)
        .attr(crate::mapping::attr("affiliation"), "member")
        .attr(
            crate::mapping::attr("role"),
            if gone { "none" } else { "participant" },
        )
        .build();
    set_attr(&mut item, "jid", user.to_string());
    let mut x = Element::builder("x", NS_MUC_USER).append(item).build();
    if own {
        for code in ["100", "110"] {
            x.append_child(
                Element::builder("status", NS_MUC_USER)
                    .attr(crate::mapping::attr("code"), code)
                    .build(),
            );
        }
    }
    let mut presence = Element::builder("presence", NS_CLIENT).append(x).build();
    set_attr(&mut presence, "from", format!("{room}/{nick}"));
    if gone {
        set_attr(&mut presence, "type", "unavailable");
    }
    presence
}

/// Adds status 201 (the room was created by this join) to the client's
/// own occupant presence.
pub fn mark_created(own: &mut Element) {
    if let Some(x) = own.get_child_mut("x", NS_MUC_USER) {
        x.append_child(
            Element::builder("status", NS_MUC_USER)
                .attr(crate::mapping::attr("code"), "201")
                .build(),
        );
    }
}

/// The (empty) subject, which ends a join (XEP-0045 §7.2.15).
pub fn subject(room: &BareJid) -> Element {
    let mut message = Element::builder("message", NS_CLIENT)
        .attr(crate::mapping::attr("type"), "groupchat")
        .append(Element::bare("subject", NS_CLIENT))
        .build();
    set_attr(&mut message, "from", room.to_string());
    message
}

/// A mediated invitation to `room` (the account was added to its group).
pub fn invitation(room: &BareJid) -> Element {
    let invite = Element::builder("invite", NS_MUC_USER)
        .append(
            Element::builder("reason", NS_MUC_USER)
                .append("you were added to this end-to-end encrypted group")
                .build(),
        )
        .build();
    let mut message = Element::builder("message", NS_CLIENT)
        .append(Element::builder("x", NS_MUC_USER).append(invite).build())
        .build();
    set_attr(&mut message, "from", room.to_string());
    message
}

/// The users a client's mediated invitation names.
pub fn invitees(message: &Element) -> Vec<BareJid> {
    message
        .get_child("x", NS_MUC_USER)
        .into_iter()
        .flat_map(|x| x.children().filter(|c| c.is("invite", NS_MUC_USER)))
        .filter_map(|invite| invite.attr("to")?.parse::<BareJid>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupants_come_and_go() {
        let room: BareJid = "g1@groups.a.test".parse().expect("jid");
        let bob: BareJid = "bob@a.test".parse().expect("jid");
        let carol: BareJid = "carol@b.test".parse().expect("jid");
        let mut rooms = Rooms::default();
        rooms.join(
            room.clone(),
            Room {
                conversation: ConversationId(vec![1]),
                nick: "alice".into(),
                occupants: [bob.clone(), carol.clone()].into(),
            },
        );
        let (came, went) = rooms.update(&room, [bob.clone()].into());
        assert!(came.is_empty());
        assert_eq!(went, vec![carol.clone()]);
        let gone = occupant(&room, &nick_of(&carol), &carol, false, true);
        assert_eq!(gone.attr("type"), Some("unavailable"));
        assert_eq!(gone.attr("from"), Some("g1@groups.a.test/carol@b.test"));
    }

    #[test]
    fn invitations_name_users() {
        let message: Element = "<message xmlns='jabber:client' to='g1@groups.a.test'>\
            <x xmlns='http://jabber.org/protocol/muc#user'><invite to='carol@b.test'/></x></message>"
            .parse()
            .expect("xml");
        assert_eq!(
            invitees(&message),
            vec!["carol@b.test".parse::<BareJid>().expect("jid")]
        );
    }
}
