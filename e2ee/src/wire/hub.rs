//! Group hub operations (the MLS delivery service): create a group,
//! submit a commit with its Welcome and GroupInfo, learn the current
//! epoch from a `conflict`, fetch the ordered log, fetch the GroupInfo.

use xso::{text::Base64, AsXml, FromXml};

use super::NS;

/// `<iq type='set'>` to the groups service: create a group from the
/// creator's GroupInfo at epoch 0 (with the ratchet tree extension).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "create")]
pub struct Create {
    /// TLS-serialised `MLSMessage` carrying the GroupInfo.
    #[xml(child)]
    pub group_info: GroupInfoData,
}

/// The answer to [`Create`]: the group's address.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "created")]
pub struct Created {
    /// The group's JID on the hub.
    #[xml(attribute)]
    pub address: jid::BareJid,
}

/// A GroupInfo (TLS-serialised `MLSMessage`), as request payload,
/// answer, or part of a [`Commit`]. In a `get` to a group it asks for the
/// latest GroupInfo (empty text); the answer carries it with its epoch.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "group-info")]
pub struct GroupInfoData {
    /// The epoch of the GroupInfo (in answers).
    #[xml(attribute(default))]
    pub epoch: Option<u64>,
    /// The serialised GroupInfo; empty in a request.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

/// `<iq type='set'>` to a group: a commit (as PublicMessage, so the hub
/// can check it), with the Welcome for added members and the GroupInfo of
/// the new epoch.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "commit")]
pub struct Commit {
    /// The commit.
    #[xml(child)]
    pub message: super::payload::MlsPayload,
    /// The Welcome, when the commit adds members.
    #[xml(child(default))]
    pub welcome: Option<WelcomeData>,
    /// The GroupInfo after the commit.
    #[xml(child)]
    pub group_info: GroupInfoData,
}

/// The Welcome inside a [`Commit`].
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "welcome")]
pub struct WelcomeData {
    /// TLS-serialised `MLSMessage` carrying the Welcome.
    #[xml(text = Base64)]
    pub data: Vec<u8>,
}

/// The answer to an accepted [`Commit`] (or application message sent as
/// an IQ): its position in the log and the epoch it leads to.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "accepted")]
pub struct Accepted {
    /// Position in the group's log.
    #[xml(attribute)]
    pub seq: u64,
    /// The group's epoch after the message.
    #[xml(attribute)]
    pub epoch: u64,
}

/// Application condition of a `conflict` error: the commit was for an
/// epoch that is no longer current. The client processes the log up to
/// `epoch` and commits again.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "stale-epoch")]
pub struct StaleEpoch {
    /// The hub's current epoch.
    #[xml(attribute)]
    pub epoch: u64,
    /// The last position in the log.
    #[xml(attribute)]
    pub seq: u64,
}

/// `<iq type='get'>` to a group: the log from `after` (exclusive); the
/// answer holds the entries in order.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "log")]
pub struct Log {
    /// Return entries after this position (0: from the start).
    #[xml(attribute(default))]
    pub after: Option<u64>,
    /// At most this many entries.
    #[xml(attribute(default))]
    pub max: Option<u32>,
    /// The entries (in answers).
    #[xml(child(n = ..))]
    pub entries: Vec<super::payload::MlsPayload>,
    /// Set in answers when entries beyond `max` remain.
    #[xml(attribute(default))]
    pub more: Option<bool>,
}

/// `<iq type='get'>` to the groups service: the groups the requesting
/// user has a device in (a new device of theirs joins them by external
/// commit); the answer lists them.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq, Default)]
#[xml(namespace = NS, name = "groups")]
pub struct Groups {
    /// The groups (in answers).
    #[xml(child(n = ..))]
    pub groups: Vec<GroupRef>,
}

/// One group of a [`Groups`] answer.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "group")]
pub struct GroupRef {
    /// The group's address.
    #[xml(attribute)]
    pub address: jid::BareJid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{rejects, round_trip};

    #[test]
    fn hub_elements_round_trip() {
        let c: Create =
            round_trip("<create xmlns='urn:tern:mls:0'><group-info>AAEC</group-info></create>");
        assert_eq!(c.group_info.data, vec![0, 1, 2]);
        round_trip::<Created>("<created xmlns='urn:tern:mls:0' address='g@groups.a.test'/>");
        let commit: Commit = round_trip(
            "<commit xmlns='urn:tern:mls:0'><mls>AAEC</mls><welcome>AwQF</welcome>\
             <group-info epoch='4'>BgcI</group-info></commit>",
        );
        assert_eq!(commit.group_info.epoch, Some(4));
        assert!(commit.welcome.is_some());
        round_trip::<Commit>(
            "<commit xmlns='urn:tern:mls:0'><mls>AAEC</mls><group-info>BgcI</group-info></commit>",
        );
        round_trip::<Accepted>("<accepted xmlns='urn:tern:mls:0' seq='12' epoch='4'/>");
        round_trip::<StaleEpoch>("<stale-epoch xmlns='urn:tern:mls:0' epoch='5' seq='30'/>");
        let log: Log = round_trip(
            "<log xmlns='urn:tern:mls:0' after='3' more='true'><mls seq='4'>AAEC</mls><mls seq='5'>AwQF</mls></log>",
        );
        assert_eq!(log.entries[1].seq, Some(5));
        round_trip::<Log>("<log xmlns='urn:tern:mls:0' after='0' max='100'/>");
        round_trip::<GroupInfoData>("<group-info xmlns='urn:tern:mls:0'/>");
        round_trip::<Groups>("<groups xmlns='urn:tern:mls:0'/>");
        let groups: Groups = round_trip(
            "<groups xmlns='urn:tern:mls:0'><group address='a@groups.a.test'/><group address='b@groups.a.test'/></groups>",
        );
        assert_eq!(groups.groups.len(), 2);
    }

    #[test]
    fn hub_rejects_malformed() {
        rejects::<Commit>("<commit xmlns='urn:tern:mls:0'><group-info>AAEC</group-info></commit>");
        rejects::<Commit>("<commit xmlns='urn:tern:mls:0'><mls>AAEC</mls></commit>");
        rejects::<Accepted>("<accepted xmlns='urn:tern:mls:0' seq='1'/>");
        rejects::<StaleEpoch>("<stale-epoch xmlns='urn:tern:mls:0' epoch='x' seq='1'/>");
        rejects::<Created>("<created xmlns='urn:tern:mls:0' address='not a jid@@'/>");
        rejects::<Log>("<log xmlns='urn:tern:mls:0' after='-1'/>");
        rejects::<Groups>("<groups xmlns='urn:tern:mls:0'><group/></groups>");
    }
}
