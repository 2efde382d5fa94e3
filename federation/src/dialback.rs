//! Server dialback (XEP-0220) with the key derivation of XEP-0185:
//! `HMAC-SHA256(hex(SHA256(secret)), "receiving originating stream-id")`,
//! hex-encoded. The secret is random per process: a key is only ever
//! checked while the stream that carried it is being opened.

use hmac::{Hmac, Mac};
use minidom::Element;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::xml::{attr_name, NS_DIALBACK};

/// The secret behind this server's dialback keys.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh random secret.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The key that proves `originating` (one of our domains) opened the
    /// stream `stream_id` to `receiving`.
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        key(&self.0, receiving, originating, stream_id)
    }

    /// Whether `key` is the one we would have sent.
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        let expected = self.key(receiving, originating, stream_id);
        expected.as_bytes().ct_eq(key.trim().as_bytes()).into()
    }
}

/// XEP-0185's key.
fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let hashed_secret = hex(&Sha256::digest(secret));
    let mut mac = Hmac::<Sha256>::new_from_slice(hashed_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{receiving} {originating} {stream_id}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<db:result from to>key</db:result>`: the originating server asks to
/// be accepted for `from`.
pub fn result_request(from: &str, to: &str, key: &str) -> Element {
    Element::builder("result", NS_DIALBACK)
        .attr(attr_name("from"), from)
        .attr(attr_name("to"), to)
        .append(key)
        .build()
}

/// `<db:result type='valid|invalid'/>`: the receiving server's answer.
pub fn result_answer(from: &str, to: &str, valid: bool) -> Element {
    Element::builder("result", NS_DIALBACK)
        .attr(attr_name("from"), from)
        .attr(attr_name("to"), to)
        .attr(attr_name("type"), verdict(valid))
        .build()
}

/// `<db:result type='error'/>` (XEP-0220 §2.4): the receiving server cannot
/// verify now; the originating server may try again later.
pub fn result_busy(from: &str, to: &str) -> Element {
    let condition = Element::bare("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas");
    let error = Element::builder("error", NS_DIALBACK)
        .attr(attr_name("type"), "wait")
        .append(condition)
        .build();
    Element::builder("result", NS_DIALBACK)
        .attr(attr_name("from"), from)
        .attr(attr_name("to"), to)
        .attr(attr_name("type"), "error")
        .append(error)
        .build()
}

/// `<db:verify from to id>key</db:verify>`: the receiving server asks the
/// authoritative server whether `key` is its own.
pub fn verify_request(from: &str, to: &str, id: &str, key: &str) -> Element {
    Element::builder("verify", NS_DIALBACK)
        .attr(attr_name("from"), from)
        .attr(attr_name("to"), to)
        .attr(attr_name("id"), id)
        .append(key)
        .build()
}

/// `<db:verify type='valid|invalid'/>`: the authoritative server's answer.
pub fn verify_answer(from: &str, to: &str, id: &str, valid: bool) -> Element {
    Element::builder("verify", NS_DIALBACK)
        .attr(attr_name("from"), from)
        .attr(attr_name("to"), to)
        .attr(attr_name("id"), id)
        .attr(attr_name("type"), verdict(valid))
        .build()
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_only_for_their_own_stream() {
        let secret = Secret::random();
        let key = secret.key("b.test", "a.test", "id1");
        assert!(secret.verify("b.test", "a.test", "id1", &key));
        assert!(!secret.verify("b.test", "a.test", "id2", &key));
        assert!(!secret.verify("c.test", "a.test", "id1", &key));
        assert!(!Secret::random().verify("b.test", "a.test", "id1", &key));
    }

    #[test]
    fn elements_are_in_the_dialback_namespace() {
        let el = verify_answer("a.test", "b.test", "x", false);
        assert!(el.is("verify", NS_DIALBACK));
        assert_eq!(el.attr("type"), Some("invalid"));
        assert_eq!(result_request("a", "b", "k").text(), "k");
    }
}
