//! The ciphertext-only rule (ARCHITECTURE §4): a `<message>` with a plain
//! `<body>` and no recognised end-to-end encryption payload is refused
//! with `policy-violation`, or with `plaintext = "route-live"` delivered to
//! online resources but never stored.

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

/// The text of the `policy-violation` error for a refused plain message.
pub const REFUSAL_TEXT: &str = "end-to-end encryption is required: this server only carries \
     encrypted messages (Tern MLS, OMEMO or OpenPGP); plain bodies are refused";

/// Whether the message carries an end-to-end encrypted payload.
pub fn is_encrypted(message: &Element) -> bool {
    message
        .children()
        .any(|child| ENCRYPTION_NAMESPACES.contains(&child.ns().as_str()))
}

/// Whether the message has a plain body and nothing that encrypts it.
pub fn is_plaintext(message: &Element) -> bool {
    message.get_child("body", NS_CLIENT).is_some() && !is_encrypted(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn recognises_encrypted_and_plain_messages() {
        let plain = parse("<message xmlns='jabber:client'><body>hello</body></message>");
        assert!(is_plaintext(&plain));
        let omemo = parse(
            "<message xmlns='jabber:client'><body>fallback</body>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>AAAA</payload></encrypted></message>",
        );
        assert!(!is_plaintext(&omemo));
        let omemo2 =
            parse("<message xmlns='jabber:client'><encrypted xmlns='urn:xmpp:omemo:2'/></message>");
        assert!(is_encrypted(&omemo2) && !is_plaintext(&omemo2));
        let receipt = parse(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='x'/></message>",
        );
        assert!(!is_plaintext(&receipt));
        let fake = parse("<message xmlns='jabber:client'><body>hi</body><encrypted xmlns='urn:example:not-e2ee'/></message>");
        assert!(is_plaintext(&fake));
    }
}
