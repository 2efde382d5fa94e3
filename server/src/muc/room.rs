//! One room's state: affiliations (persistent), occupants (in memory),
//! and the stanzas its occupants see.

use std::collections::HashMap;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::stanza::{self, set_attr, NS_CLIENT};

/// The MUC namespace.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// The MUC user namespace.
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";

/// An affiliation (XEP-0045 §5.2), as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// None.
    None,
    /// A member.
    Member,
    /// An admin.
    Admin,
    /// An owner.
    Owner,
}

impl Affiliation {
    /// Reads a stored or requested affiliation.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "outcast" => Self::Outcast,
            "none" => Self::None,
            "member" => Self::Member,
            "admin" => Self::Admin,
            "owner" => Self::Owner,
            _ => return None,
        })
    }

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outcast => "outcast",
            Self::None => "none",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// The role an occupant with it gets: owners and admins moderate.
    pub fn role(self) -> &'static str {
        match self {
            Self::Owner | Self::Admin => "moderator",
            Self::Member => "participant",
            Self::None | Self::Outcast => "none",
        }
    }

    /// Whether it lets one into a members-only room.
    pub fn may_enter(self) -> bool {
        self >= Self::Member
    }

    /// Whether it may change others' affiliations and the configuration.
    pub fn administers(self) -> bool {
        self >= Self::Admin
    }
}

/// Someone in the room.
#[derive(Debug, Clone)]
pub struct Occupant {
    /// The room nickname.
    pub nick: String,
    /// The real full JID (rooms here are non-anonymous).
    pub jid: FullJid,
    /// Their affiliation when they joined (kept up to date).
    pub affiliation: Affiliation,
    /// Their presence's own children (show, status, caps).
    pub presence: Vec<Element>,
}

/// A room.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// The owner's name for it.
    pub name: String,
    /// The owner's description.
    pub description: String,
    /// Affiliations by bare JID.
    pub affiliations: HashMap<String, Affiliation>,
    /// Who is in it.
    pub occupants: Vec<Occupant>,
    /// The subject and who set it (never stored).
    pub subject: Option<(String, String)>,
}

impl Room {
    /// The affiliation of a (bare or full) JID.
    pub fn affiliation_of(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.to_bare().to_string())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// The occupant with this real full JID.
    pub fn occupant_by_jid(&self, jid: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.jid.to_string() == jid)
    }

    /// The occupant with this nickname.
    pub fn occupant_by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    /// The presence of `occupant` as `to` sees it, with these status
    /// codes.
    pub fn presence_of(
        room: &BareJid,
        occupant: &Occupant,
        to: &FullJid,
        unavailable: bool,
        codes: &[u16],
    ) -> Element {
        let mut presence = stanza::new_stanza("presence");
        set_attr(&mut presence, "from", format!("{room}/{}", occupant.nick));
        set_attr(&mut presence, "to", to.to_string());
        if unavailable {
            set_attr(&mut presence, "type", "unavailable");
        } else {
            for child in &occupant.presence {
                presence.append_child(child.clone());
            }
        }
        let mut item = Element::bare("item", NS_USER);
        set_attr(&mut item, "affiliation", occupant.affiliation.as_str());
        let role = if unavailable {
            "none"
        } else {
            occupant.affiliation.role()
        };
        set_attr(&mut item, "role", role);
        set_attr(&mut item, "jid", occupant.jid.to_string());
        let mut x = Element::builder("x", NS_USER).append(item).build();
        for code in codes {
            x.append_child(status(*code));
        }
        presence.append_child(x);
        presence
    }

    /// The subject message a joining occupant gets last.
    pub fn subject_for(&self, room: &BareJid, to: &FullJid) -> Element {
        let mut message = stanza::new_stanza("message");
        set_attr(&mut message, "type", "groupchat");
        let (from, text) = match &self.subject {
            Some((nick, text)) => (format!("{room}/{nick}"), text.clone()),
            None => (room.to_string(), String::new()),
        };
        set_attr(&mut message, "from", from);
        set_attr(&mut message, "to", to.to_string());
        message.append_child(Element::builder("subject", NS_CLIENT).append(text).build());
        message
    }
}

/// `<status code/>`.
pub fn status(code: u16) -> Element {
    let mut status = Element::bare("status", NS_USER);
    set_attr(&mut status, "code", code.to_string());
    status
}

/// The children of a join presence worth showing others (not the MUC
/// join element itself).
pub fn shown_children(presence: &Element) -> Vec<Element> {
    presence
        .children()
        .filter(|c| !c.is("x", NS_MUC) && !c.is("x", NS_USER))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affiliations_order_what_they_allow() {
        assert!(Affiliation::Member.may_enter());
        assert!(!Affiliation::None.may_enter());
        assert!(!Affiliation::Outcast.may_enter());
        assert!(Affiliation::Admin.administers() && !Affiliation::Member.administers());
        assert_eq!(
            Affiliation::parse("owner").map(Affiliation::role),
            Some("moderator")
        );
        assert_eq!(Affiliation::parse("nobody"), None);
    }
}
