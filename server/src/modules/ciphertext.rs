//! The ciphertext-only rule (ARCHITECTURE §4, spec/c2s.md "What the
//! server stores"), as an allow-list: a `<message>` is stored (offline,
//! archive, carbons kept for a resumption) only if every piece of text it
//! carries is inside a non-empty recognised end-to-end encryption payload,
//! beside a listed set of metadata elements. Anything else is plaintext:
//! refused with `policy-violation`, or with `plaintext = "route-live"`
//! delivered to online resources but never stored.
//!
//! The rule, child by child of the `<message>`:
//! - an encryption payload ([`ENCRYPTION_NAMESPACES`]) must not be empty
//!   (it holds an element or text);
//! - `<body>` is allowed only as the fallback text beside such a payload;
//!   `<thread>` (an identifier) and `<error>` (written by servers) keep
//!   their text; `<subject>` and any other `jabber:client` child are
//!   plaintext;
//! - an element of a metadata namespace ([`METADATA_NAMESPACES`]:
//!   receipts, markers, chat states, hints, stanza ids, …) must hold no
//!   text anywhere inside it (ids and stamps are attributes), except a
//!   delay's (XEP-0203) description, which servers write ("Offline
//!   storage");
//! - an element of any other namespace must hold neither text nor
//!   attributes anywhere inside it (such as `<unstyled/>`): XHTML-IM,
//!   out-of-band URLs, reactions and a `<body>` nested in another element
//!   are plaintext.

use minidom::Element;

use crate::stanza::NS_CLIENT;

/// Namespaces of end-to-end encryption payloads the server recognises.
pub const ENCRYPTION_NAMESPACES: &[&str] = &[
    // Tern's MLS payload.
    "urn:tern:mls:0",
    // OMEMO (legacy, XEP-0384 0.3) and OMEMO 2.
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    // OpenPGP for XMPP (XEP-0373) and legacy OpenPGP (XEP-0027).
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
];

/// Namespaces of elements that may stand beside an encryption payload
/// (or alone) as long as they hold no text: their information is in
/// attributes (ids, stamps, states).
pub const METADATA_NAMESPACES: &[&str] = &[
    // Receipts (XEP-0184), chat markers (XEP-0333), chat states (XEP-0085).
    "urn:xmpp:receipts",
    "urn:xmpp:chat-markers:0",
    "http://jabber.org/protocol/chatstates",
    // Processing hints (XEP-0334), stanza and origin ids (XEP-0359),
    // delayed delivery (XEP-0203).
    "urn:xmpp:hints",
    "urn:xmpp:sid:0",
    "urn:xmpp:delay",
    // Explicit encryption (XEP-0380), fallback indication (XEP-0428).
    "urn:xmpp:eme:0",
    "urn:xmpp:fallback:0",
    // References to other messages: replies (XEP-0461), corrections
    // (XEP-0308), retractions (XEP-0424).
    "urn:xmpp:reply:0",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:message-retract:0",
    // Carbons' <private/> (XEP-0280).
    "urn:xmpp:carbons:2",
    // Room invitations without a reason (XEP-0045, XEP-0249), which
    // OMEMO clients use to set up group chats.
    "http://jabber.org/protocol/muc#user",
    "jabber:x:conference",
];

const NS_DELAY: &str = "urn:xmpp:delay";

/// The text of the `policy-violation` error for a refused plain message.
pub const REFUSAL_TEXT: &str = "end-to-end encryption is required: this server only carries \
     encrypted messages (Tern MLS, OMEMO or OpenPGP); plain bodies are refused";

/// Why a message is plaintext; each names the element, never its text.
pub type Reason = &'static str;

/// Checks `message` against the rule: `Err` with the reason when it
/// carries text the server may not store.
pub fn check(message: &Element) -> Result<(), Reason> {
    if message.texts().any(|t| !t.trim().is_empty()) {
        return Err("text outside any element");
    }
    let mut encrypted = false;
    for child in message.children() {
        if is_payload(child) {
            if child.children().next().is_none() && child.text().trim().is_empty() {
                return Err("an empty encryption payload");
            }
            encrypted = true;
        }
    }
    for child in message.children().filter(|c| !is_payload(c)) {
        let ns = child.ns();
        if ns == NS_CLIENT {
            match child.name() {
                "body" if encrypted && child.children().next().is_none() => {}
                "body" => return Err("a body outside an encryption payload"),
                "thread" if child.children().next().is_none() => {}
                "error" if message.attr("type") == Some("error") => {}
                "subject" => return Err("a subject outside an encryption payload"),
                _ => return Err("a client element outside an encryption payload"),
            }
        } else if METADATA_NAMESPACES.contains(&ns.as_str()) {
            if has_text(child) && !child.is("delay", NS_DELAY) {
                return Err("text in a metadata element");
            }
            if child.attr("reason").is_some() {
                return Err("an invitation's reason outside an encryption payload");
            }
        } else if has_text(child) || has_attributes(child) {
            return Err("an element that may carry text outside an encryption payload");
        }
    }
    Ok(())
}

/// The `policy-violation` text for a refusal for `reason`.
pub fn refusal_text(reason: Reason) -> String {
    format!("{REFUSAL_TEXT} (this one has {reason})")
}

/// Whether the message carries a non-empty end-to-end encrypted payload.
pub fn is_encrypted(message: &Element) -> bool {
    message.children().any(|child| {
        is_payload(child) && (child.children().next().is_some() || !child.text().trim().is_empty())
    })
}

/// Whether the message breaks the rule (see [`check`]).
pub fn is_plaintext(message: &Element) -> bool {
    check(message).is_err()
}

fn is_payload(element: &Element) -> bool {
    ENCRYPTION_NAMESPACES.contains(&element.ns().as_str())
}

/// Whether `element` holds non-white-space text anywhere inside it.
fn has_text(element: &Element) -> bool {
    element.texts().any(|t| !t.trim().is_empty()) || element.children().any(has_text)
}

/// Whether `element` or anything inside it has attributes.
fn has_attributes(element: &Element) -> bool {
    !element.attrs().is_empty() || element.children().any(has_attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        format!("<message xmlns='jabber:client' to='b@x' id='1' type='chat'>{xml}</message>")
            .parse()
            .expect("test XML")
    }

    const OMEMO: &str = "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/>\
                         <payload>AAAA</payload></encrypted>";

    #[test]
    fn encrypted_messages_and_metadata_are_stored() {
        for xml in [
            OMEMO.to_owned(),
            format!("<body>I sent you an OMEMO encrypted message.</body>{OMEMO}"),
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='b@x'/></header></encrypted>".to_owned(),
            "<mls xmlns='urn:tern:mls:0'>AAAA</mls>".to_owned(),
            "<openpgp xmlns='urn:xmpp:openpgp:0'>AAAA</openpgp><body>fallback</body>".to_owned(),
            format!(
                "{OMEMO}<store xmlns='urn:xmpp:hints'/><encryption xmlns='urn:xmpp:eme:0' \
                 namespace='eu.siacs.conversations.axolotl'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
                 <request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='x'/>\
                 <active xmlns='http://jabber.org/protocol/chatstates'/><thread>t1</thread>\
                 <replace xmlns='urn:xmpp:message-correct:0' id='y'/><unstyled xmlns='urn:xmpp:styling:0'/>"
            ),
            "<received xmlns='urn:xmpp:receipts' id='x'/>".to_owned(),
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>".to_owned(),
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>".to_owned(),
            "<x xmlns='jabber:x:conference' jid='room@conference.x'/>".to_owned(),
            format!("{OMEMO}<delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'>Offline storage</delay>"),
        ] {
            let message = parse(&xml);
            assert_eq!(check(&message), Ok(()), "{xml}");
            assert!(!is_plaintext(&message));
        }
    }

    #[test]
    fn every_form_of_plaintext_is_refused() {
        for xml in [
            "<body>hello</body>".to_owned(),
            "<body>hello</body><encrypted xmlns='eu.siacs.conversations.axolotl'/>".to_owned(),
            "<body>hello</body><encrypted xmlns='urn:xmpp:omemo:2'>  </encrypted>".to_owned(),
            "<subject>secret plans</subject>".to_owned(),
            format!("{OMEMO}<subject>secret plans</subject>"),
            "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>\
             <p>hello</p></body></html>".to_owned(),
            "<x xmlns='jabber:x:oob'><url>https://example.org/secret.jpg</url></x>".to_owned(),
            "<wrapper xmlns='urn:example'><body xmlns='jabber:client'>hello</body></wrapper>".to_owned(),
            format!("{OMEMO}<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>👍</reaction></reactions>"),
            format!("{OMEMO}<active xmlns='http://jabber.org/protocol/chatstates'>secret</active>"),
            "<x xmlns='jabber:x:conference' jid='room@conference.x' reason='secret plans'/>".to_owned(),
            "<x xmlns='http://jabber.org/protocol/muc#user'><invite to='c@x'><reason>secret</reason></invite></x>".to_owned(),
            "<nick xmlns='http://jabber.org/protocol/nick'>Romeo</nick>".to_owned(),
            "<encrypted xmlns='urn:example:not-e2ee'>hello</encrypted>".to_owned(),
            format!("{OMEMO}secret plans"),
            format!("{OMEMO}<error type='cancel'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>secret</text></error>"),
            format!("{OMEMO}<body><b xmlns='urn:example'>x</b>hello</body>"),
        ] {
            let message = parse(&xml);
            assert!(check(&message).is_err(), "{xml}");
            assert!(is_plaintext(&message), "{xml}");
        }
    }

    #[test]
    fn refusals_name_the_element_and_never_the_text() {
        let message = parse("<subject>secret plans</subject>");
        let text = refusal_text(check(&message).expect_err("plaintext"));
        assert!(text.contains("subject"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn only_a_non_empty_payload_counts_as_encrypted() {
        assert!(is_encrypted(&parse(OMEMO)));
        assert!(!is_encrypted(&parse(
            "<encrypted xmlns='urn:xmpp:omemo:2'/>"
        )));
        assert!(!is_encrypted(&parse(
            "<received xmlns='urn:xmpp:receipts' id='x'/>"
        )));
    }
}
