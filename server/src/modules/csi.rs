//! Client State Indication (XEP-0352): while a client says it is
//! inactive (a phone in a pocket), presence updates and chat states wait,
//! the latest of each per sender; anything else (a message with content,
//! an IQ) sends what waited first, then itself, so order is kept. Going
//! active sends what waited.

use minidom::Element;

use super::ciphertext;
use crate::stanza::NS_CLIENT;

/// The CSI namespace.
pub const NS: &str = "urn:xmpp:csi:0";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Stanzas held back at most; more send everything.
const MAX_HELD: usize = 256;

/// One session's CSI state.
#[derive(Debug, Default)]
pub struct State {
    inactive: bool,
    held: Vec<Element>,
}

impl State {
    /// The client said it is active (true) or inactive; what to send now.
    pub fn set_active(&mut self, active: bool) -> Vec<Element> {
        self.inactive = !active;
        if active {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }

    /// What to write for a stanza for the client: nothing while it waits,
    /// or what waited and the stanza.
    pub fn process(&mut self, stanza: Element) -> Vec<Element> {
        if !self.inactive {
            return vec![stanza];
        }
        if is_noise(&stanza) && self.held.len() < MAX_HELD {
            let from = stanza.attr("from").map(str::to_owned);
            let kind = stanza.name().to_owned();
            // Only the latest presence (or chat state) of a sender matters.
            self.held
                .retain(|held| !(held.name() == kind && held.attr("from") == from.as_deref()));
            self.held.push(stanza);
            return Vec::new();
        }
        let mut out = std::mem::take(&mut self.held);
        out.push(stanza);
        out
    }

    /// What waits (the session ends).
    pub fn take_held(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.held)
    }
}

/// Presence that is not a subscription request or an error, and messages
/// that carry only a chat state.
fn is_noise(stanza: &Element) -> bool {
    match stanza.name() {
        "presence" => matches!(stanza.attr("type"), None | Some("unavailable")),
        "message" => {
            stanza.children().any(|c| c.ns() == NS_CHATSTATES)
                && stanza.get_child("body", NS_CLIENT).is_none()
                && !ciphertext::is_encrypted(stanza)
                && stanza.attr("type") != Some("error")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().expect("xml")
    }

    #[test]
    fn noise_waits_and_content_flushes_in_order() {
        let mut state = State::default();
        assert!(state.set_active(false).is_empty());
        let away =
            parse("<presence xmlns='jabber:client' from='b@x/r'><show>away</show></presence>");
        let back = parse("<presence xmlns='jabber:client' from='b@x/r'/>");
        let typing = parse(
            "<message xmlns='jabber:client' from='b@x/r' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        let subscribe = parse("<presence xmlns='jabber:client' from='c@x' type='subscribe'/>");
        assert!(state.process(away).is_empty());
        assert!(state.process(back.clone()).is_empty());
        assert!(state.process(typing.clone()).is_empty());
        assert_eq!(
            state.process(subscribe.clone()),
            [back.clone(), typing, subscribe]
        );
        assert!(state.process(back.clone()).is_empty());
        assert_eq!(state.set_active(true), std::slice::from_ref(&back));
        assert_eq!(state.process(back.clone()), [back]);
    }
}
