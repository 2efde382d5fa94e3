//! Presence subscriptions (RFC 6121) of a session: asking to see a
//! contact's presence, letting them see ours, and the roster the server
//! keeps with each contact's subscription state.

use jid::BareJid;
use minidom::Element;

use crate::connection::attr;
use crate::session::{Session, SessionError};

const ROSTER: &str = "jabber:iq:roster";

/// A contact on the server-side roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact.
    pub jid: BareJid,
    /// `none`, `to` (we see theirs), `from` (they see ours) or `both`.
    pub subscription: String,
    /// Our request to see their presence waits for their answer.
    pub asked: bool,
}

impl Session {
    /// Subscribes to `contact`'s presence and lets them subscribe to ours:
    /// a pre-approval (or the approval of their pending request) first,
    /// then our request. Their server answers once they approve (or at
    /// once if they did so beforehand).
    pub async fn subscribe(&mut self, contact: &BareJid) -> Result<(), SessionError> {
        for kind in ["subscribed", "subscribe"] {
            let presence = Element::builder("presence", "jabber:client")
                .attr(attr("to"), contact.as_str())
                .attr(attr("type"), kind)
                .build();
            self.send_stanza(presence).await?;
        }
        Ok(())
    }

    /// The roster the server keeps for this account.
    pub async fn roster(&mut self) -> Result<Vec<RosterItem>, SessionError> {
        let answer = self.get(None, Element::bare("query", ROSTER)).await?;
        Ok(answer
            .children()
            .filter(|child| child.is("item", ROSTER))
            .filter_map(|item| {
                Some(RosterItem {
                    jid: item.attr("jid")?.parse().ok()?,
                    subscription: item.attr("subscription").unwrap_or("none").to_owned(),
                    asked: item.attr("ask") == Some("subscribe"),
                })
            })
            .collect())
    }
}
