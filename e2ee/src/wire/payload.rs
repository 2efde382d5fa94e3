//! MLS messages carried in `<message/>` stanzas: a TLS-serialised
//! `MLSMessage` (RFC 9420 §6), base64 in the element text.

use xso::{text::Base64, AsXml, FromXml};

use super::NS;

/// An MLS message (PublicMessage for handshakes, PrivateMessage for
/// application data) in a `<message/>` to or from a group hub. The hub
/// stamps `seq`, the message's position in the group's log, when it fans
/// the message out.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "mls")]
pub struct MlsPayload {
    /// Position in the group's ordered log, set by the hub.
    #[xml(attribute(default))]
    pub seq: Option<u64>,
    /// The TLS-serialised `MLSMessage`.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

/// A Welcome for a new member, delivered by the hub in a `<message/>`
/// from the group's address.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "welcome")]
pub struct WelcomePayload {
    /// The group's address (its JID on the hub).
    #[xml(attribute)]
    pub group: jid::BareJid,
    /// Log position of the commit that added the member: processing starts
    /// after it.
    #[xml(attribute(default))]
    pub seq: Option<u64>,
    /// The TLS-serialised `MLSMessage` carrying the Welcome.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{rejects, round_trip};

    #[test]
    fn payload_round_trips() {
        let p: MlsPayload = round_trip("<mls xmlns='urn:tern:mls:0' seq='7'>AAEC</mls>");
        assert_eq!((p.seq, p.data), (Some(7), vec![0, 1, 2]));
        let p: MlsPayload = round_trip("<mls xmlns='urn:tern:mls:0'>AAEC</mls>");
        assert_eq!(p.seq, None);
        let w: WelcomePayload = round_trip(
            "<welcome xmlns='urn:tern:mls:0' group='g1@groups.a.test' seq='3'>AAEC</welcome>",
        );
        assert_eq!(w.group.as_str(), "g1@groups.a.test");
    }

    #[test]
    fn payload_rejects_malformed() {
        rejects::<MlsPayload>("<mls xmlns='urn:tern:mls:0'>not base64!</mls>");
        rejects::<MlsPayload>("<mls xmlns='urn:tern:mls:0' seq='minus one'>AAEC</mls>");
        rejects::<MlsPayload>("<mls xmlns='urn:tern:mls:0'>A</mls>");
        rejects::<MlsPayload>("<mls xmlns='urn:example:other'>AAEC</mls>");
        rejects::<WelcomePayload>("<welcome xmlns='urn:tern:mls:0'>AAEC</welcome>");
    }
}
