//! Conversations: every conversation, one-to-one included, is an MLS
//! group whose hub orders all of its messages. A device
//!
//! - creates groups, adds users (every device, from claimed key packages),
//!   removes users (every device), updates its own leaf, leaves;
//! - joins from a Welcome;
//! - sends application messages (PrivateMessage) and handshakes
//!   (PublicMessage, so the hub can check them);
//! - processes the hub's log strictly in order, keeping a cursor (`seq`) in
//!   the same transaction as the MLS state and the decrypted history;
//! - on a stale commit (the hub ordered another one first) discards its
//!   own, processes what it missed, and commits afresh.
//!
//! Every operation collects its writes in a [`Batch`] written in one
//! transaction at its end; a rejected incoming message drops its batch and
//! the in-memory group: the group is exactly as before.

use jid::BareJid;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use sha2::{Digest, Sha256};

use crate::device::{Device, CIPHERSUITE};
use crate::envelope::{Content, Envelope, EnvelopeError};
use crate::error::{mls, Error, ProcessError};
use crate::identity::DeviceName;
use crate::store::records::{self, Position};
use crate::store::{Batch, TernProvider};
use crate::verify::{device_name, verify_key_package};

/// Epochs whose application messages can still be decrypted after the
/// group moved on (for messages that were in flight during a commit).
pub const MAX_PAST_EPOCHS: usize = 5;

/// The id of a conversation: its MLS group id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(pub Vec<u8>);

impl ConversationId {
    fn group_id(&self) -> GroupId {
        GroupId::from_slice(&self.0)
    }

    /// The group id in lowercase hex: the local part of the group's
    /// address at its hub.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// A commit to submit to the hub.
#[derive(Debug, Clone)]
pub struct CommitOut {
    /// The commit (a PublicMessage).
    pub commit: Vec<u8>,
    /// The Welcome for added members.
    pub welcome: Option<Vec<u8>>,
    /// The GroupInfo of the new epoch (with the ratchet tree).
    pub group_info: Vec<u8>,
    /// The epoch the commit was made in (the hub accepts it only then).
    pub epoch: u64,
}

impl CommitOut {
    /// Serialises what openmls built for a commit made in `epoch`.
    fn from_bundle(bundle: CommitMessageBundle, epoch: u64) -> Result<Self, Error> {
        let (commit, welcome, group_info) = bundle.into_messages();
        Ok(Self {
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: welcome
                .map(|w| w.tls_serialize_detached())
                .transpose()
                .map_err(mls)?,
            group_info: group_info
                .ok_or(Error::Malformed("commit without group info"))?
                .tls_serialize_detached()
                .map_err(mls)?,
            epoch,
        })
    }

    /// The hub request that submits this commit (spec/mls.md §2.4).
    pub fn to_wire(&self) -> crate::wire::hub::Commit {
        use crate::wire::hub::{Commit, GroupInfoData, WelcomeData};
        Commit {
            message: crate::wire::payload::MlsPayload {
                seq: None,
                data: self.commit.clone(),
            },
            welcome: self.welcome.clone().map(|data| WelcomeData { data }),
            group_info: GroupInfoData {
                epoch: None,
                data: self.group_info.clone(),
            },
        }
    }
}

/// What processing one log entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A message from another member (or another device of ours).
    Message {
        /// The sending device.
        sender: DeviceName,
        /// What it says.
        envelope: Envelope,
    },
    /// A commit was applied.
    Commit {
        /// Devices added.
        added: Vec<DeviceName>,
        /// Devices removed.
        removed: Vec<DeviceName>,
        /// The new epoch.
        epoch: u64,
        /// This device was removed.
        evicted: bool,
        /// Devices added again with another key than the one known: their
        /// verification was reset.
        key_changed: Vec<DeviceName>,
    },
    /// A proposal was queued for the next commit.
    Proposal,
    /// Our own message or commit, back from the hub.
    OwnEcho,
    /// Already processed (its position is behind the cursor).
    Duplicate,
}

/// A join by external commit, prepared by [`Device::join_external`]: the
/// commit to submit, and the group state kept until the hub accepts it.
pub struct ExternalJoin {
    group: MlsGroup,
    batch: Batch,
    out: CommitOut,
}

impl ExternalJoin {
    /// The commit (with the GroupInfo of the new epoch) for the hub.
    pub fn commit(&self) -> &CommitOut {
        &self.out
    }
}

impl std::fmt::Debug for ExternalJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalJoin")
            .field("epoch", &self.out.epoch)
            .finish_non_exhaustive()
    }
}

/// The configuration of the MLS groups this crate creates (also for
/// benchmarks that compare raw openmls on the same groups).
pub fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
        .build()
}

/// The configuration of the MLS groups this crate joins.
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(64, 1000))
        .build()
}

/// A group kept in memory between operations, with its log cursor.
pub(crate) struct Loaded {
    group: MlsGroup,
    last_seq: u64,
}

impl std::ops::Deref for Loaded {
    type Target = MlsGroup;
    fn deref(&self) -> &MlsGroup {
        &self.group
    }
}

impl std::ops::DerefMut for Loaded {
    fn deref_mut(&mut self) -> &mut MlsGroup {
        &mut self.group
    }
}

/// Groups kept in memory between operations, by group id.
pub(crate) type GroupCache = std::collections::HashMap<Vec<u8>, Loaded>;

/// What a commit does.
enum Change {
    Add(Vec<KeyPackage>),
    Remove(Vec<LeafNodeIndex>),
    Update,
    PendingProposals,
}

impl Device {
    /// Creates a conversation with this device as its only member; returns
    /// its id and the GroupInfo the hub needs to create the group.
    pub async fn create_conversation(&self) -> Result<(ConversationId, Vec<u8>), Error> {
        let mut batch = Batch::default();
        let (id, group_info) = {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                let group =
                    MlsGroup::new(&provider, &self.signer, &create_config(), self.credential())
                        .map_err(mls)?;
                let info = group
                    .export_group_info(provider.crypto(), &self.signer, true)
                    .map_err(mls)?;
                Ok((
                    ConversationId(group.group_id().as_slice().to_vec()),
                    info.tls_serialize_detached().map_err(mls)?,
                ))
            })?
        };
        records::upsert_conversation(&mut batch, &id.0, 0);
        self.store.apply(batch)?;
        Ok((id, group_info))
    }

    /// Commits adding the devices of these (claimed, TLS-serialised) key
    /// packages.
    pub async fn add_members(
        &self,
        id: &ConversationId,
        key_packages: &[Vec<u8>],
    ) -> Result<CommitOut, Error> {
        let packages = key_packages
            .iter()
            .map(|bytes| {
                verify_key_package(bytes)
                    .map(|verified| verified.package)
                    .map_err(|e| Error::InvalidKeyPackage(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(id, Change::Add(packages)).await
    }

    /// Commits removing every device of `user`.
    pub async fn remove_user(
        &self,
        id: &ConversationId,
        user: &BareJid,
    ) -> Result<CommitOut, Error> {
        let leaves = self
            .members_with_leaves(id)
            .await?
            .into_iter()
            .filter(|(name, _)| name.jid == *user)
            .map(|(_, leaf)| leaf)
            .collect::<Vec<_>>();
        if leaves.is_empty() {
            return Err(Error::NotAMember(user.to_string()));
        }
        self.commit(id, Change::Remove(leaves)).await
    }

    /// Commits a fresh leaf key for post-compromise security.
    pub async fn self_update(&self, id: &ConversationId) -> Result<CommitOut, Error> {
        self.commit(id, Change::Update).await
    }

    /// Commits the proposals queued from the log (e.g. someone leaving).
    pub async fn commit_pending_proposals(&self, id: &ConversationId) -> Result<CommitOut, Error> {
        self.commit(id, Change::PendingProposals).await
    }

    /// Leaves the conversation: proposes the removal of this device (and
    /// of this user's other devices in it) and stops following it; another
    /// member commits the proposals. Returns them, to be sent to the hub.
    pub async fn leave(&self, id: &ConversationId) -> Result<Vec<Vec<u8>>, Error> {
        let own_other_devices: Vec<LeafNodeIndex> = self
            .members_with_leaves(id)
            .await?
            .into_iter()
            .filter(|(name, _)| name.jid == self.name.jid && *name != self.name)
            .map(|(_, leaf)| leaf)
            .collect();
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        let mut batch = Batch::default();
        let proposals = {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                let mut proposals = Vec::new();
                for leaf in own_other_devices {
                    let (message, _) = group
                        .propose_remove_member(&provider, &self.signer, leaf)
                        .map_err(mls)?;
                    proposals.push(message.tls_serialize_detached().map_err(mls)?);
                }
                let message = group.leave_group(&provider, &self.signer).map_err(mls)?;
                proposals.push(message.tls_serialize_detached().map_err(mls)?);
                Ok(proposals)
            })?
        };
        for proposal in &proposals {
            remember_sent(&mut batch, id, proposal, "proposal");
        }
        records::mark_left(&mut batch, &id.0);
        self.store.apply(batch)?;
        for proposal in &proposals {
            self.remember_sent_in_memory(message_hash(proposal), "proposal");
        }
        groups.insert(id.0.clone(), group);
        Ok(proposals)
    }

    /// The hub accepted our commit at log position `seq`: apply it.
    pub async fn commit_accepted(&self, id: &ConversationId, seq: u64) -> Result<(), Error> {
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        let mut batch = Batch::default();
        {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                if group.pending_commit().is_some() {
                    group.merge_pending_commit(&provider).map_err(mls)?;
                }
                Ok(())
            })?;
        }
        records::set_cursor(&mut batch, &id.0, seq);
        group.last_seq = group.last_seq.max(seq);
        self.store.apply(batch)?;
        groups.insert(id.0.clone(), group);
        Ok(())
    }

    /// The hub refused our commit as stale: drop it. Process the log, then
    /// commit again.
    pub async fn commit_refused(&self, id: &ConversationId) -> Result<(), Error> {
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        let batch = Batch::default();
        {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                group.clear_pending_commit(provider.storage()).map_err(mls)
            })?;
        }
        self.store.apply(batch)?;
        groups.insert(id.0.clone(), group);
        Ok(())
    }

    /// Joins the conversation at `address` from a Welcome; `seq` is the
    /// log position of the commit that added us (processing continues
    /// after it). The group must be the one the address names, and no
    /// group this device is a member of is ever replaced (a group it was
    /// removed from is: it was added again). Returns the conversation and
    /// the devices whose key differs from the one seen before.
    pub async fn join(
        &self,
        welcome: &[u8],
        seq: u64,
        address: &BareJid,
    ) -> Result<(ConversationId, Vec<DeviceName>), Error> {
        let message = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|_| Error::Malformed("welcome"))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(Error::Malformed("not a welcome"));
        };
        let mut batch = Batch::default();
        let (id, used_package, members) = {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                let builder = StagedWelcome::build_from_welcome(&provider, &join_config(), welcome)
                    .map_err(|e| match e {
                        WelcomeError::NoMatchingKeyPackage => Error::WelcomeNotForUs,
                        e => mls(e),
                    })?;
                let group_id = builder
                    .processed_welcome()
                    .unverified_group_info()
                    .group_id();
                if address.node().map(|n| n.as_str()) != Some(hex(group_id.as_slice()).as_str()) {
                    return Err(Error::WelcomeForAnotherGroup(address.to_string()));
                }
                let existing = MlsGroup::load(provider.storage(), group_id).map_err(mls)?;
                if existing.is_some_and(|group| group.is_active()) {
                    return Err(Error::WelcomeForActiveGroup);
                }
                let used = match builder.processed_welcome().own_key_package() {
                    Some(kp) if !kp.last_resort() => Some(
                        kp.hash_ref(provider.crypto())
                            .map_err(mls)?
                            .as_slice()
                            .to_vec(),
                    ),
                    _ => None,
                };
                // Re-added after a removal: the old, inactive state goes
                // (an active one was refused above).
                let group = builder
                    .replace_old_group()
                    .build()
                    .map_err(mls)?
                    .into_group(&provider)
                    .map_err(mls)?;
                let members = member_keys(&group);
                Ok((
                    ConversationId(group.group_id().as_slice().to_vec()),
                    used,
                    members,
                ))
            })?
        };
        records::upsert_conversation(&mut batch, &id.0, seq);
        if let Some(hash_ref) = used_package {
            records::consume_key_package(&mut batch, hash_ref);
        }
        let mut key_changed = Vec::new();
        for (name, key) in &members {
            let sighting = records::observe_device(&self.store, &mut batch, name, key)?;
            if sighting == records::DeviceSighting::KeyChanged {
                key_changed.push(name.clone());
            }
        }
        self.store.apply(batch)?;
        // A cached state of an earlier membership is stale now.
        self.groups.lock().await.remove(&id.0);
        Ok((id, key_changed))
    }

    /// Prepares joining a conversation of this device's user by an
    /// external commit on its latest GroupInfo (as the hub serves it).
    /// Nothing is stored until [`Self::external_join_accepted`]; a
    /// refused join is just dropped.
    pub async fn join_external(&self, group_info: &[u8]) -> Result<ExternalJoin, Error> {
        let message = MlsMessageIn::tls_deserialize_exact(group_info)
            .map_err(|_| Error::Malformed("group info"))?;
        let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
            return Err(Error::Malformed("not a group info"));
        };
        let batch = Batch::default();
        let (group, out) = {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                let epoch = info.epoch().as_u64();
                let (group, bundle) = MlsGroup::external_commit_builder()
                    .with_config(join_config())
                    .build_group(&provider, info, self.credential())
                    .map_err(mls)?
                    .load_psks(provider.storage())
                    .map_err(mls)?
                    .create_group_info(true)
                    .use_ratchet_tree_extension(true)
                    .build(provider.rand(), provider.crypto(), &self.signer, |_| true)
                    .map_err(mls)?
                    .finalize(&provider)
                    .map_err(mls)?;
                Ok((group, CommitOut::from_bundle(bundle, epoch)?))
            })?
        };
        Ok(ExternalJoin { group, batch, out })
    }

    /// The hub accepted an external join at log position `seq`: the
    /// conversation is stored, following the log after `seq`.
    pub async fn external_join_accepted(
        &self,
        join: ExternalJoin,
        address: &BareJid,
        seq: u64,
    ) -> Result<ConversationId, Error> {
        let ExternalJoin {
            group,
            mut batch,
            out,
        } = join;
        let id = ConversationId(group.group_id().as_slice().to_vec());
        records::upsert_conversation(&mut batch, &id.0, seq);
        records::set_address(&mut batch, &id.0, address.as_str());
        remember_sent(&mut batch, &id, &out.commit, "commit");
        for (name, key) in &member_keys(&group) {
            records::observe_device(&self.store, &mut batch, name, key)?;
        }
        self.store.apply(batch)?;
        self.groups.lock().await.insert(
            id.0.clone(),
            Loaded {
                group,
                last_seq: seq,
            },
        );
        Ok(id)
    }

    /// Encrypts a message; returns the MLS message for the hub and the
    /// envelope (also kept in the local history).
    pub async fn send(
        &self,
        id: &ConversationId,
        contents: Vec<Content>,
    ) -> Result<(Vec<u8>, Envelope), Error> {
        let envelope = Envelope::new(self.name.jid.clone(), contents);
        let message = self.send_envelope(id, &envelope).await?;
        Ok((message, envelope))
    }

    /// Encrypts a prepared envelope (its `from` must be this device's
    /// user, or recipients reject it).
    pub async fn send_envelope(
        &self,
        id: &ConversationId,
        envelope: &Envelope,
    ) -> Result<Vec<u8>, Error> {
        let plaintext = envelope.to_padded_bytes();
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        let mut batch = Batch::default();
        if !group.is_active() {
            return Err(Error::Evicted);
        }
        // Tens of microseconds of work: no `block_in_place` (see
        // `run_maybe_blocking`).
        let message = group
            .create_message(
                &TernProvider::new(&self.crypto, &self.store, &batch),
                &self.signer,
                &plaintext,
            )
            .map_err(mls)?
            .tls_serialize_detached()
            .map_err(mls)?;
        let hash = message_hash(&message);
        records::record_message(
            &mut batch,
            &id.0,
            Position::Sent { mls_hash: &hash },
            &self.name,
            envelope,
            &plaintext,
        );
        self.store.apply(batch)?;
        self.remember_sent_in_memory(hash, "application");
        groups.insert(id.0.clone(), group);
        Ok(message)
    }

    /// Processes the log entry at position `seq`. Entries must come in log
    /// order; one at or behind the cursor is a [`Incoming::Duplicate`].
    pub async fn process(
        &self,
        id: &ConversationId,
        seq: u64,
        data: &[u8],
    ) -> Result<Incoming, ProcessError> {
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        if seq <= group.last_seq {
            groups.insert(id.0.clone(), group);
            return Ok(Incoming::Duplicate);
        }
        let hash = message_hash(data);
        let mut batch = Batch::default();
        if let Some(kind) = self.sent_kind(&hash, data).await? {
            let incoming = self.own_echo(&batch, &mut group, kind)?;
            records::place_sent_message(&mut batch, &hash, seq);
            records::set_cursor(&mut batch, &id.0, seq);
            self.store.apply(batch)?;
            group.last_seq = seq;
            groups.insert(id.0.clone(), group);
            return Ok(incoming);
        }
        match self.process_in(&mut batch, &mut group, id, seq, data).await {
            Ok(incoming) => {
                match &incoming {
                    // The history insert's trigger moved the cursor.
                    Incoming::Message { .. } => {}
                    // Ours, sent before a restart.
                    Incoming::OwnEcho => {
                        records::place_sent_message(&mut batch, &hash, seq);
                        records::set_cursor(&mut batch, &id.0, seq);
                    }
                    _ => records::set_cursor(&mut batch, &id.0, seq),
                }
                self.store.apply(batch)?;
                group.last_seq = seq;
                groups.insert(id.0.clone(), group);
                Ok(incoming)
            }
            Err(e) => {
                // Undo whatever MLS processing wrote (the batch and the
                // in-memory group are dropped; the group reloads); skip the
                // entry unless it only means we are behind.
                drop((batch, group));
                if !matches!(e, ProcessError::FutureEpoch(_) | ProcessError::Client(_)) {
                    let mut batch = Batch::default();
                    records::set_cursor(&mut batch, &id.0, seq);
                    self.store.apply(batch)?;
                }
                Err(e)
            }
        }
    }

    /// The kind of an MLS message this device sent: from memory, or for
    /// handshakes (PublicMessage, rare) from the store, as they must be
    /// recognised across restarts.
    async fn sent_kind(&self, hash: &[u8], data: &[u8]) -> Result<Option<&'static str>, Error> {
        if let Some(kind) = self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash)
        {
            return Ok(Some(kind));
        }
        // MLSMessage: version (2 bytes), then wire format 0x0001 = PublicMessage.
        if data.get(2..4) != Some(&[0, 1]) {
            return Ok(None);
        }
        Ok(
            match self.store.with(|c| records::sent_kind(c, hash))?.as_deref() {
                Some("commit") => Some("commit"),
                Some("proposal") => Some("proposal"),
                Some(_) => Some("application"),
                None => None,
            },
        )
    }

    fn remember_sent_in_memory(&self, hash: Vec<u8>, kind: &'static str) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash, kind);
    }

    /// The conversation's current epoch.
    pub async fn epoch(&self, id: &ConversationId) -> Result<u64, Error> {
        self.read_group(id, |group| Ok(group.epoch().as_u64()))
            .await
    }

    /// Whether proposals wait for a commit (no application message can be
    /// sent until one includes them).
    pub async fn has_pending_proposals(&self, id: &ConversationId) -> Result<bool, Error> {
        self.read_group(id, |group| Ok(group.pending_proposals().next().is_some()))
            .await
    }

    /// Whether this device is still a member.
    pub async fn is_member(&self, id: &ConversationId) -> Result<bool, Error> {
        self.read_group(id, |group| Ok(group.is_active())).await
    }

    /// The member devices.
    pub async fn members(&self, id: &ConversationId) -> Result<Vec<DeviceName>, Error> {
        Ok(self
            .members_with_leaves(id)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// The users with a device in the conversation; `None` when this
    /// device is no longer in it.
    pub async fn member_users(
        &self,
        id: &ConversationId,
    ) -> Result<Option<std::collections::BTreeSet<BareJid>>, Error> {
        if !self.is_member(id).await.unwrap_or(false) {
            return Ok(None);
        }
        let members = self.members(id).await?;
        Ok(Some(members.into_iter().map(|member| member.jid).collect()))
    }

    /// The one-to-one conversation of this user and `peer` (exactly the
    /// two of them), if there is one.
    pub async fn direct_conversation(
        &self,
        peer: &BareJid,
    ) -> Result<Option<ConversationId>, Error> {
        let wanted: std::collections::BTreeSet<BareJid> =
            [self.name().jid.clone(), peer.clone()].into();
        for (id, _) in self.conversations()? {
            if self.member_users(&id).await?.as_ref() == Some(&wanted) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Records the address of the conversation's hub.
    pub async fn set_address(&self, id: &ConversationId, address: &BareJid) -> Result<(), Error> {
        let mut batch = Batch::default();
        records::set_address(&mut batch, &id.0, address.as_str());
        Ok(self.store.apply(batch)?)
    }

    /// The address of the conversation's hub, if known.
    pub fn address(&self, id: &ConversationId) -> Result<Option<BareJid>, Error> {
        Ok(self
            .store
            .with(|c| records::address(c, &id.0))?
            .and_then(|a| BareJid::new(&a).ok()))
    }

    /// The conversation whose hub is at `address`.
    pub fn conversation_at(&self, address: &BareJid) -> Result<Option<ConversationId>, Error> {
        Ok(self
            .store
            .with(|c| records::conversation_at(c, address.as_str()))?
            .map(ConversationId))
    }

    /// Whether this device has (or had) the conversation at `address`.
    pub fn knows_address(&self, address: &BareJid) -> Result<bool, Error> {
        Ok(self
            .store
            .with(|c| records::knows_address(c, address.as_str()))?)
    }

    /// Every conversation of this device, with its hub's address if known.
    pub fn conversations(&self) -> Result<Vec<(ConversationId, Option<BareJid>)>, Error> {
        Ok(self
            .store
            .with(records::conversations)?
            .into_iter()
            .map(|(id, address)| {
                (
                    ConversationId(id),
                    address.and_then(|a| BareJid::new(&a).ok()),
                )
            })
            .collect())
    }

    /// The log position up to which everything was processed.
    pub async fn last_seq(&self, id: &ConversationId) -> Result<u64, Error> {
        if let Some(loaded) = self.groups.lock().await.get(&id.0) {
            return Ok(loaded.last_seq);
        }
        self.store
            .with(|c| records::last_seq(c, &id.0))?
            .ok_or(Error::UnknownGroup)
    }

    async fn members_with_leaves(
        &self,
        id: &ConversationId,
    ) -> Result<Vec<(DeviceName, LeafNodeIndex)>, Error> {
        self.read_group(id, |group| {
            group
                .members()
                .map(|m| {
                    Ok((
                        device_name(&m.credential)
                            .map_err(|_| Error::Malformed("member credential"))?,
                        m.index,
                    ))
                })
                .collect()
        })
        .await
    }

    async fn read_group<T>(
        &self,
        id: &ConversationId,
        read: impl FnOnce(&MlsGroup) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut groups = self.groups.lock().await;
        let loaded = self.take_group(&mut groups, id).await?;
        let result = read(&loaded.group);
        groups.insert(id.0.clone(), loaded);
        result
    }

    /// The conversation's group, from memory or loaded from the store. The
    /// caller puts it back once its transaction committed; after a failure
    /// it is dropped, so the next use reloads the rolled-back state.
    async fn take_group(
        &self,
        groups: &mut GroupCache,
        id: &ConversationId,
    ) -> Result<Loaded, Error> {
        if let Some(loaded) = groups.remove(&id.0) {
            return Ok(loaded);
        }
        let last_seq = self
            .store
            .with(|c| records::last_seq(c, &id.0))?
            .ok_or(Error::UnknownGroup)?;
        let provider = TernProvider::read_only(&self.crypto, &self.store);
        let group = tokio::task::block_in_place(|| load(&provider, id))?;
        Ok(Loaded { group, last_seq })
    }

    async fn commit(&self, id: &ConversationId, change: Change) -> Result<CommitOut, Error> {
        let mut groups = self.groups.lock().await;
        let mut group = self.take_group(&mut groups, id).await?;
        let mut batch = Batch::default();
        let out = {
            let provider = TernProvider::new(&self.crypto, &self.store, &batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                if !group.is_active() {
                    return Err(Error::Evicted);
                }
                if group.pending_commit().is_some() {
                    return Err(Error::CommitPending);
                }
                let epoch = group.epoch().as_u64();
                let builder = group.commit_builder();
                let builder = match change {
                    Change::Add(packages) => builder.propose_adds(packages),
                    Change::Remove(leaves) => builder.propose_removals(leaves),
                    Change::Update => builder.force_self_update(true),
                    Change::PendingProposals => builder.consume_proposal_store(true),
                };
                let bundle = builder
                    .load_psks(provider.storage())
                    .map_err(mls)?
                    .create_group_info(true)
                    .use_ratchet_tree_extension(true)
                    .build(provider.rand(), provider.crypto(), &self.signer, |_| true)
                    .map_err(mls)?
                    .stage_commit(&provider)
                    .map_err(mls)?;
                CommitOut::from_bundle(bundle, epoch)
            })?
        };
        remember_sent(&mut batch, id, &out.commit, "commit");
        self.remember_sent_in_memory(message_hash(&out.commit), "commit");
        self.store.apply(batch)?;
        groups.insert(id.0.clone(), group);
        Ok(out)
    }

    /// Our own message came back through the hub: a commit of ours is
    /// thereby accepted and applied; anything else needs nothing.
    fn own_echo(
        &self,
        batch: &Batch,
        group: &mut MlsGroup,
        kind: &'static str,
    ) -> Result<Incoming, Error> {
        if kind == "commit" {
            let provider = TernProvider::new(&self.crypto, &self.store, batch);
            tokio::task::block_in_place(|| -> Result<_, Error> {
                if group.pending_commit().is_some() {
                    group.merge_pending_commit(&provider).map_err(mls)?;
                }
                Ok(())
            })?;
        }
        Ok(Incoming::OwnEcho)
    }

    async fn process_in(
        &self,
        batch: &mut Batch,
        group: &mut MlsGroup,
        id: &ConversationId,
        seq: u64,
        data: &[u8],
    ) -> Result<Incoming, ProcessError> {
        let message =
            MlsMessageIn::tls_deserialize_exact(data).map_err(|_| ProcessError::Tampered)?;
        let protocol = message
            .try_into_protocol_message()
            .map_err(|_| ProcessError::Tampered)?;
        let message_epoch = protocol.epoch().as_u64();
        let outcome = {
            let provider = TernProvider::new(&self.crypto, &self.store, batch);
            // Application messages cost tens of microseconds; handing the
            // thread over (`block_in_place`) costs about as much. Commits
            // of large groups take milliseconds.
            let heavy = protocol.content_type() != ContentType::Application;
            run_maybe_blocking(heavy, || -> Result<Processed, ProcessError> {
                let current = group.epoch().as_u64();
                let processed = group
                    .process_message(&provider, protocol)
                    .map_err(|e| classify(e, message_epoch, current))?;
                let sender =
                    device_name(processed.credential()).map_err(|_| ProcessError::NonMember)?;
                Ok(match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(app) => {
                        Processed::Application(sender, app.into_bytes())
                    }
                    ProcessedMessageContent::ProposalMessage(proposal) => {
                        group
                            .store_pending_proposal(provider.storage(), *proposal)
                            .map_err(mls)?;
                        Processed::Done(Incoming::Proposal)
                    }
                    ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                        Processed::Done(Incoming::Proposal)
                    }
                    ProcessedMessageContent::OwnPendingCommit => {
                        group.merge_pending_commit(&provider).map_err(mls)?;
                        Processed::Done(Incoming::OwnEcho)
                    }
                    ProcessedMessageContent::OwnPrivateMessage => {
                        Processed::Done(Incoming::OwnEcho)
                    }
                    ProcessedMessageContent::StagedCommitMessage(staged) => {
                        let device_of = |leaf: &LeafNode| {
                            Some((
                                device_name(leaf.credential()).ok()?,
                                leaf.signature_key().as_slice().to_vec(),
                            ))
                        };
                        let mut added: Vec<(DeviceName, Vec<u8>)> = staged
                            .add_proposals()
                            .filter_map(|p| device_of(p.add_proposal().key_package().leaf_node()))
                            .collect();
                        // A join by external commit: the committer is new.
                        let external = staged
                            .queued_proposals()
                            .any(|p| p.proposal().proposal_type() == ProposalType::ExternalInit);
                        if external {
                            added.extend(staged.update_path_leaf_node().and_then(device_of));
                        }
                        let removed = staged
                            .remove_proposals()
                            .filter_map(|p| group.member_at(p.remove_proposal().removed()))
                            .filter_map(|m| device_name(&m.credential).ok())
                            .collect();
                        let evicted = staged.self_removed();
                        group
                            .merge_staged_commit(&provider, *staged)
                            .map_err(|e| ProcessError::InvalidCommit(e.to_string()))?;
                        Processed::Commit {
                            added,
                            removed,
                            epoch: group.epoch().as_u64(),
                            evicted,
                        }
                    }
                })
            })?
        };
        match outcome {
            Processed::Done(incoming) => Ok(incoming),
            Processed::Commit {
                added,
                removed,
                epoch,
                evicted,
            } => {
                let mut key_changed = Vec::new();
                for (name, key) in &added {
                    let sighting = records::observe_device(&self.store, batch, name, key)?;
                    if sighting == records::DeviceSighting::KeyChanged {
                        key_changed.push(name.clone());
                    }
                }
                let added = added.into_iter().map(|(name, _)| name).collect();
                Ok(Incoming::Commit {
                    added,
                    removed,
                    epoch,
                    evicted,
                    key_changed,
                })
            }
            Processed::Application(sender, plaintext) => {
                let envelope = Envelope::parse(&plaintext)?;
                if envelope.from != sender.jid {
                    return Err(EnvelopeError::SenderMismatch {
                        claimed: envelope.from.to_string(),
                        actual: sender.jid.to_string(),
                    }
                    .into());
                }
                records::record_message(
                    batch,
                    &id.0,
                    Position::Seq(seq),
                    &sender,
                    &envelope,
                    &plaintext,
                );
                Ok(Incoming::Message { sender, envelope })
            }
        }
    }
}

enum Processed {
    Application(DeviceName, Vec<u8>),
    Commit {
        added: Vec<(DeviceName, Vec<u8>)>,
        removed: Vec<DeviceName>,
        epoch: u64,
        evicted: bool,
    },
    Done(Incoming),
}

/// Every member's name and signature key.
fn member_keys(group: &MlsGroup) -> Vec<(DeviceName, Vec<u8>)> {
    group
        .members()
        .filter_map(|m| Some((device_name(&m.credential).ok()?, m.signature_key.clone())))
        .collect()
}

/// Maps openmls' processing errors to the causes callers act on.
fn classify(
    error: ProcessMessageError<crate::mls_storage::StorageError>,
    epoch: u64,
    current: u64,
) -> ProcessError {
    use openmls::framing::errors::{MessageDecryptionError as Decrypt, SecretTreeError as Secret};
    if current.saturating_sub(epoch) > MAX_PAST_EPOCHS as u64 {
        // Whatever openmls calls it, the keys of that epoch are gone.
        return ProcessError::TooOld(epoch);
    }
    match error {
        ProcessMessageError::ValidationError(v) => match v {
            ValidationError::WrongEpoch | ValidationError::NoPastEpochData if epoch < current => {
                ProcessError::TooOld(epoch)
            }
            ValidationError::WrongEpoch => ProcessError::FutureEpoch(epoch),
            ValidationError::UnableToDecrypt(Decrypt::SecretTreeError(
                Secret::SecretReuseError | Secret::TooDistantInThePast,
            )) => ProcessError::Replay,
            ValidationError::UnknownMember | ValidationError::NonMemberApplicationMessage => {
                ProcessError::NonMember
            }
            _ => ProcessError::Tampered,
        },
        ProcessMessageError::InvalidCommit(e) => ProcessError::InvalidCommit(e.to_string()),
        ProcessMessageError::GroupStateError(MlsGroupStateError::UseAfterEviction) => {
            ProcessError::Client(Error::Evicted)
        }
        other => ProcessError::Client(Error::Mls(other.to_string())),
    }
}

fn load(provider: &TernProvider<'_>, id: &ConversationId) -> Result<MlsGroup, Error> {
    MlsGroup::load(provider.storage(), &id.group_id())
        .map_err(mls)?
        .ok_or(Error::UnknownGroup)
}

/// Runs `work` on this thread; if it is `heavy`, tells tokio first so
/// other tasks move to another worker meanwhile.
fn run_maybe_blocking<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    if heavy {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

fn message_hash(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn remember_sent(batch: &mut Batch, id: &ConversationId, data: &[u8], kind: &str) {
    records::remember_sent(batch, &id.0, message_hash(data), kind);
}
/// Lowercase hex, as group addresses spell group ids.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
