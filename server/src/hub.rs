//! The group hub (spec/mls.md §2.4): the MLS delivery service of the
//! groups hosted here, on the groups domain (`groups.<domain>`), each
//! group at `<hex group id>@<groups domain>`.
//!
//! The hub keeps each group's public MLS state (openmls' `PublicGroup`,
//! stored as the rows of [`tern_e2ee::mls_storage`]), checks every
//! handshake message against it, accepts exactly one commit per epoch,
//! numbers every accepted message, appends it to the group's log and fans
//! it out to the members' bare JIDs. Welcome messages go to the users whose
//! devices a commit adds. Members catch up by fetching the log. It never
//! sees plaintext: application messages are MLS `PrivateMessage`s, and
//! handshakes carry keys, not content.

use std::collections::{BTreeSet, HashMap};

use jid::BareJid;
use minidom::Element;
use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use tern_e2ee::mls_storage::{Journal, MlsStorage};
use tern_e2ee::verify::device_name;
use tern_e2ee::wire::hub::{
    Accepted, Commit, Create, Created, GroupInfoData, GroupRef, Groups, Log, StaleEpoch,
};
use tern_e2ee::wire::payload::{MlsPayload, WelcomePayload};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::modules::disco;
use crate::modules::message;
use crate::server::Server;
use crate::stanza::{self, errors};
use crate::storage::{Appended, CommitUpdate, HubGroup, LogAppend, StateChange};

/// Application messages of up to this many past epochs are accepted (the
/// clients' retention window).
pub const EPOCH_WINDOW: u64 = tern_e2ee::conversation::MAX_PAST_EPOCHS as u64;

/// Most log entries one fetch returns.
const MAX_LOG_PAGE: u32 = 500;

/// Operations on one group run one at a time (and so fan out in log
/// order); groups share these locks by hash.
const LOCK_STRIPES: usize = 64;

/// The hub's shared state.
#[derive(Debug)]
pub struct Hub {
    domain: String,
    locks: Vec<tokio::sync::Mutex<()>>,
    crypto: RustCrypto,
}

/// Why a request to the hub was refused; becomes a stanza error.
#[derive(Debug)]
pub(crate) enum Refusal {
    BadRequest(String),
    NotAcceptable(String),
    Forbidden(&'static str),
    NotFound(&'static str),
    LimitReached(String),
    Stale { epoch: u64, seq: u64 },
    Internal,
}

impl From<crate::storage::StorageError> for Refusal {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!("hub storage failed: {e}");
        Refusal::Internal
    }
}

impl Refusal {
    fn reply(self, request: &Element) -> Option<Element> {
        match self {
            Refusal::BadRequest(text) => errors::bad_request(request, &text),
            Refusal::NotAcceptable(text) => stanza::error_reply(
                request,
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                &text,
            ),
            Refusal::Forbidden(text) => errors::forbidden(request, text),
            Refusal::NotFound(text) => errors::item_not_found(request, text),
            Refusal::LimitReached(text) => stanza::error_reply(
                request,
                ErrorType::Wait,
                DefinedCondition::PolicyViolation,
                &text,
            ),
            Refusal::Stale { epoch, seq } => stanza::with_application_condition(
                stanza::error_reply(
                    request,
                    ErrorType::Cancel,
                    DefinedCondition::Conflict,
                    "the group has moved on: process its log and commit again",
                ),
                StaleEpoch { epoch, seq },
            ),
            Refusal::Internal => errors::internal(request),
        }
    }
}

impl Hub {
    /// The hub for `domain`.
    pub fn new(domain: String) -> Self {
        Self {
            domain,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            crypto: RustCrypto::default(),
        }
    }

    /// The groups domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// A group's address.
    pub fn address(&self, group_id: &[u8]) -> Option<BareJid> {
        BareJid::new(&format!("{}@{}", hex(group_id), self.domain)).ok()
    }

    async fn lock(&self, group_id: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = group_id
            .iter()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize));
        self.locks[stripe % LOCK_STRIPES].lock().await
    }
}

/// Handles an IQ request to the groups domain (`group` = `None`) or to a
/// group's address.
pub async fn iq(
    server: &Server,
    sender: &BareJid,
    iq: &Element,
    group: Option<&str>,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?.clone();
    if group.is_none() && iq.attr("type") == Some("get") && payload.is("query", disco::NS_INFO) {
        return Some(stanza::iq_result(iq, Some(disco_info().into())));
    }
    if payload.ns() != tern_e2ee::wire::NS {
        return None;
    }
    let result = match (group, iq.attr("type"), payload.name()) {
        (None, Some("set"), "create") => create(server, sender, payload).await,
        (None, Some("get"), "groups") => groups_of_user(server, sender).await,
        (Some(group), Some("set"), "commit") => commit(server, sender, group, payload).await,
        (Some(group), Some("get"), "log") => log(server, sender, group, payload).await,
        (Some(group), Some("get"), "group-info") => group_info(server, sender, group).await,
        _ => return None,
    };
    match result {
        Ok(answer) => Some(stanza::iq_result(iq, Some(answer))),
        Err(refusal) => refusal.reply(iq),
    }
}

/// What the hub's domain says of itself in disco#info: a component
/// speaking Tern's group protocol (not a MUC service).
fn disco_info() -> xmpp_parsers::disco::DiscoInfoResult {
    xmpp_parsers::disco::DiscoInfoResult {
        node: None,
        identities: vec![xmpp_parsers::disco::Identity::new(
            "component",
            "generic",
            "en",
            "Tern group hub",
        )],
        features: [disco::NS_INFO.to_owned(), tern_e2ee::wire::NS.to_owned()].into(),
        extensions: Vec::new(),
    }
}

/// Handles a `<message>` to a group's address: an MLS application message
/// or proposal, appended to the log and fanned out.
pub async fn message(
    server: &Server,
    sender: &BareJid,
    message: Element,
    group: &str,
) -> Option<Element> {
    match accept_message(server, sender, &message, group).await {
        Ok(()) => None,
        Err(refusal) => refusal.reply(&message),
    }
}

async fn create(server: &Server, sender: &BareJid, payload: Element) -> Result<Element, Refusal> {
    let hub = &server.hub;
    let request = Create::try_from(payload)
        .map_err(|e| Refusal::BadRequest(format!("malformed create: {e}")))?;
    if sender.domain().as_str() != server.config.domain {
        return Err(Refusal::Forbidden(
            "only this server's users create groups here",
        ));
    }
    let creator = sender.clone();
    let created = server
        .storage
        .hub_groups_created_by(creator.as_str())
        .await?;
    if created >= server.config.groups.max_groups_per_user {
        return Err(Refusal::LimitReached(format!(
            "you have created {created} groups, the most this server allows"
        )));
    }
    let group_info = verifiable_group_info(&request.group_info.data)?;
    if group_info.epoch().as_u64() != 0 {
        return Err(Refusal::NotAcceptable(
            "a new group starts at epoch 0".into(),
        ));
    }
    let tree = group_info
        .extensions()
        .ratchet_tree()
        .ok_or_else(|| Refusal::NotAcceptable("the GroupInfo carries no ratchet tree".into()))?
        .ratchet_tree()
        .clone();
    let rows = HashMap::new();
    let journal = Journal::default();
    let (public, _) = PublicGroup::from_external(
        &hub.crypto,
        &MlsStorage::new(&rows, &journal),
        tree,
        group_info,
        ProposalStore::new(),
    )
    .map_err(|e| Refusal::NotAcceptable(format!("invalid group: {e}")))?;
    let members = member_jids(&public);
    if members.iter().collect::<Vec<_>>() != [creator.as_str()] {
        return Err(Refusal::NotAcceptable(
            "a new group has only the creator's devices".into(),
        ));
    }
    let group_id = public.group_id().as_slice().to_vec();
    let address = hub
        .address(&group_id)
        .ok_or_else(|| Refusal::NotAcceptable("unusable group id".into()))?;
    let group = HubGroup {
        group_id,
        creator: creator.to_string(),
        epoch: 0,
        last_seq: 0,
        group_info: request.group_info.data,
    };
    let members: Vec<String> = members.into_iter().collect();
    if !server
        .storage
        .hub_create(&group, &members, changes(journal))
        .await?
    {
        return Err(Refusal::NotAcceptable("a group with this id exists".into()));
    }
    tracing::info!(group = %address, creator = %creator, "group created");
    Ok(Created { address }.into())
}

async fn commit(
    server: &Server,
    sender: &BareJid,
    group: &str,
    payload: Element,
) -> Result<Element, Refusal> {
    let hub = &server.hub;
    let request = Commit::try_from(payload)
        .map_err(|e| Refusal::BadRequest(format!("malformed commit: {e}")))?;
    let group_id = group_id_of(group)?;
    let _lock = hub.lock(&group_id).await;
    let stored = load_group(server, &group_id).await?;
    require_membership(server, &group_id, sender, "only members commit to a group").await?;
    let message = protocol_message(&request.message.data, &group_id)?;
    let ProtocolMessage::PublicMessage(_) = &message else {
        return Err(Refusal::NotAcceptable(
            "commits are MLS PublicMessages".into(),
        ));
    };
    if message.content_type() != ContentType::Commit {
        return Err(Refusal::NotAcceptable("not a commit".into()));
    }
    let processed = process_handshake(hub, &stored, message, sender, "commit")?;
    // An external commit: a new device of a member user joins by itself
    // (the membership check above makes sure the user is one).
    let external = matches!(processed.sender(), Sender::NewMemberCommit);
    let mut public = stored.public;
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(Refusal::NotAcceptable("not a commit".into()));
    };
    if external {
        check_external_removals(&public, &staged, sender)?;
    }
    let devices_before = member_devices(&public);
    let users_before = member_jids(&public);
    // Every message fans out to every member: a group is bounded.
    let devices_after = staged_device_count(&public, &staged);
    let max = server.config.groups.max_members;
    if devices_after > max as usize {
        return Err(Refusal::LimitReached(format!(
            "a group holds at most {max} devices"
        )));
    }
    let journal = Journal::default();
    public
        .merge_commit(&MlsStorage::new(&stored.rows, &journal), *staged)
        .map_err(|e| Refusal::NotAcceptable(format!("commit does not apply: {e}")))?;
    let epoch = public.group_context().epoch().as_u64();
    check_group_info(&request.group_info, &group_id, epoch)?;
    let users_after = member_jids(&public);
    let welcomed: BTreeSet<String> = member_devices(&public)
        .difference(&devices_before)
        .map(|(jid, _)| jid.clone())
        .collect();
    if !external && !welcomed.is_empty() && request.welcome.is_none() {
        return Err(Refusal::NotAcceptable(
            "a commit that adds devices needs its Welcome".into(),
        ));
    }
    let appended = server
        .storage
        .hub_append(
            &group_id,
            LogAppend {
                epoch: stored.row.epoch,
                message: &request.message.data,
                commit: Some(CommitUpdate {
                    epoch,
                    group_info: &request.group_info.data,
                    members: users_after.iter().cloned().collect(),
                }),
                state: changes(journal),
            },
            EPOCH_WINDOW,
        )
        .await?;
    let seq = appended_seq(appended)?;
    let address = hub.address(&group_id).ok_or(Refusal::Internal)?;
    // New members get their Welcome before the commit that added them.
    if let Some(welcome) = request.welcome {
        for user in &welcomed {
            deliver_welcome(server, &address, seq, &welcome.data, user).await;
        }
    }
    let recipients: BTreeSet<String> = users_before.union(&users_after).cloned().collect();
    fan_out(server, &address, seq, &request.message.data, &recipients).await;
    Ok(Accepted { seq, epoch }.into())
}

async fn accept_message(
    server: &Server,
    sender: &BareJid,
    stanza: &Element,
    group: &str,
) -> Result<(), Refusal> {
    let payload = stanza
        .get_child("mls", tern_e2ee::wire::NS)
        .ok_or_else(|| {
            Refusal::BadRequest("a group takes MLS messages (<mls xmlns='urn:tern:mls:0'/>)".into())
        })?;
    let data = MlsPayload::try_from(payload.clone())
        .map_err(|e| Refusal::BadRequest(format!("malformed MLS payload: {e}")))?
        .data;
    let group_id = group_id_of(group)?;
    let hub = &server.hub;
    let _lock = hub.lock(&group_id).await;
    require_membership(server, &group_id, sender, "only members send to a group").await?;
    let (epoch, submission) = classify(&data, &group_id)?;
    let state = match submission {
        Submission::Application => Vec::new(),
        Submission::Proposal(message) => {
            queue_proposal(server, &group_id, *message, sender).await?
        }
    };
    let appended = server
        .storage
        .hub_append(
            &group_id,
            LogAppend {
                epoch,
                message: &data,
                commit: None,
                state,
            },
            EPOCH_WINDOW,
        )
        .await?;
    let seq = appended_seq(appended)?;
    let address = hub.address(&group_id).ok_or(Refusal::Internal)?;
    let members: BTreeSet<String> = server
        .storage
        .hub_members(&group_id)
        .await?
        .into_iter()
        .collect();
    fan_out(server, &address, seq, &data, &members).await;
    Ok(())
}

/// Checks a proposal against the group's state and queues it there, so
/// that the commit covering it validates; returns the state changes.
async fn queue_proposal(
    server: &Server,
    group_id: &[u8],
    message: ProtocolMessage,
    sender: &BareJid,
) -> Result<Vec<StateChange>, Refusal> {
    let stored = load_group(server, group_id).await?;
    let processed = process_handshake(&server.hub, &stored, message, sender, "proposal")?;
    let mut public = stored.public;
    let ProcessedMessageContent::ProposalMessage(proposal) = processed.into_content() else {
        return Err(Refusal::NotAcceptable("not a proposal".into()));
    };
    let journal = Journal::default();
    public
        .add_proposal(&MlsStorage::new(&stored.rows, &journal), *proposal)
        .map_err(|e| {
            tracing::error!("queueing a proposal failed: {e}");
            Refusal::Internal
        })?;
    Ok(changes(journal))
}

async fn log(
    server: &Server,
    sender: &BareJid,
    group: &str,
    payload: Element,
) -> Result<Element, Refusal> {
    let request = Log::try_from(payload)
        .map_err(|e| Refusal::BadRequest(format!("malformed log request: {e}")))?;
    let group_id = group_id_of(group)?;
    // Members read all of it; a removed member up to its removal.
    let until = match require_member(server, &group_id, sender).await {
        Ok(_) => u64::MAX,
        Err(Refusal::Forbidden(_)) => server
            .storage
            .hub_former_member_until(&group_id, sender.as_str())
            .await?
            .ok_or(Refusal::Forbidden("only members read a group"))?,
        Err(refusal) => return Err(refusal),
    };
    let after = request.after.unwrap_or(0);
    let max = request.max.unwrap_or(MAX_LOG_PAGE).clamp(1, MAX_LOG_PAGE);
    let mut entries = server.storage.hub_log(&group_id, after, max + 1).await?;
    entries.retain(|(seq, _)| *seq <= until);
    let more = entries.len() > max as usize;
    entries.truncate(max as usize);
    Ok(Log {
        after: Some(after),
        max: None,
        entries: entries
            .into_iter()
            .map(|(seq, data)| MlsPayload {
                seq: Some(seq),
                data,
            })
            .collect(),
        more: more.then_some(true),
    }
    .into())
}

/// The groups `sender` is a member of.
async fn groups_of_user(server: &Server, sender: &BareJid) -> Result<Element, Refusal> {
    let groups = server
        .storage
        .hub_groups_of(sender.as_str())
        .await?
        .iter()
        .filter_map(|id| server.hub.address(id))
        .map(|address| GroupRef { address })
        .collect();
    Ok(Groups { groups }.into())
}

async fn group_info(server: &Server, sender: &BareJid, group: &str) -> Result<Element, Refusal> {
    let group_id = group_id_of(group)?;
    let row = require_member(server, &group_id, sender).await?;
    Ok(GroupInfoData {
        epoch: Some(row.epoch),
        data: row.group_info,
    }
    .into())
}

/// The group, if `sender` is one of its members.
async fn require_member(
    server: &Server,
    group_id: &[u8],
    sender: &BareJid,
) -> Result<HubGroup, Refusal> {
    let row = server
        .storage
        .hub_group(group_id)
        .await?
        .ok_or(Refusal::NotFound("no such group"))?;
    require_membership(server, group_id, sender, "only members read a group").await?;
    Ok(row)
}

/// Refuses `jid` unless it has a device in the group's current epoch.
async fn require_membership(
    server: &Server,
    group_id: &[u8],
    jid: &BareJid,
    refusal: &'static str,
) -> Result<(), Refusal> {
    if server.storage.hub_is_member(group_id, jid.as_str()).await? {
        Ok(())
    } else {
        Err(Refusal::Forbidden(refusal))
    }
}

/// Checks a handshake (`what`: "commit", "proposal") against the group:
/// of the current epoch, valid against its public state, signed by a
/// device of the sending user.
fn process_handshake(
    hub: &Hub,
    group: &LoadedGroup,
    message: ProtocolMessage,
    sender: &BareJid,
    what: &str,
) -> Result<ProcessedMessage, Refusal> {
    if message.epoch().as_u64() != group.row.epoch {
        return Err(Refusal::Stale {
            epoch: group.row.epoch,
            seq: group.row.last_seq,
        });
    }
    let processed = group
        .public
        .process_message(&hub.crypto, message)
        .map_err(|e| Refusal::NotAcceptable(format!("invalid {what}: {e}")))?;
    check_sender(processed.credential(), sender)?;
    Ok(processed)
}

/// A group's row, public state and the rows it was loaded from.
struct LoadedGroup {
    row: HubGroup,
    public: PublicGroup,
    rows: HashMap<Vec<u8>, Vec<u8>>,
}

async fn load_group(server: &Server, group_id: &[u8]) -> Result<LoadedGroup, Refusal> {
    let row = server
        .storage
        .hub_group(group_id)
        .await?
        .ok_or(Refusal::NotFound("no such group"))?;
    let rows = server.storage.hub_state(group_id).await?;
    let public = PublicGroup::load(
        &MlsStorage::read_only(&rows),
        &GroupId::from_slice(group_id),
    )
    .map_err(|e| {
        tracing::error!("loading a group's state failed: {e}");
        Refusal::Internal
    })?
    .ok_or_else(|| {
        tracing::error!("a group has no stored state");
        Refusal::Internal
    })?;
    Ok(LoadedGroup { row, public, rows })
}

fn appended_seq(appended: Appended) -> Result<u64, Refusal> {
    match appended {
        Appended::At(seq) => Ok(seq),
        Appended::StaleEpoch { epoch, seq } => Err(Refusal::Stale { epoch, seq }),
        Appended::NoGroup => Err(Refusal::NotFound("no such group")),
    }
}

/// Sends a log entry to every member user's bare JID, live only: members
/// that are offline fetch the log when they come back.
async fn fan_out(
    server: &Server,
    group: &BareJid,
    seq: u64,
    data: &[u8],
    users: &BTreeSet<String>,
) {
    let payload: Element = MlsPayload {
        seq: Some(seq),
        data: data.to_vec(),
    }
    .into();
    for user in users {
        let mut message = stanza::new_stanza("message");
        stanza::set_attr(&mut message, "from", group.to_string());
        stanza::set_attr(&mut message, "to", user.clone());
        stanza::set_attr(&mut message, "type", "headline");
        message.append_child(payload.clone());
        deliver(server, message, user, false).await;
    }
}

/// Sends a Welcome to a new member; kept offline if need be.
async fn deliver_welcome(server: &Server, group: &BareJid, seq: u64, data: &[u8], user: &str) {
    let mut message = stanza::new_stanza("message");
    stanza::set_attr(&mut message, "from", group.to_string());
    stanza::set_attr(&mut message, "to", user.to_owned());
    message.append_child(
        WelcomePayload {
            group: group.clone(),
            seq: Some(seq),
            data: data.to_vec(),
        }
        .into(),
    );
    deliver(server, message, user, true).await;
}

async fn deliver(server: &Server, message: Element, user: &str, storable: bool) {
    let Ok(jid) = BareJid::new(user) else { return };
    if jid.domain().as_str() != server.config.domain {
        // A member on another server: its server delivers (or stores).
        server.send_remote(message).await;
        return;
    }
    let Some(node) = jid.node() else { return };
    if let Err(Some(error)) = message::deliver(server, message, node.as_str(), None, storable).await
    {
        tracing::debug!(%jid, error = ?error.attr("type"), "hub message not delivered");
    }
}

fn group_id_of(node: &str) -> Result<Vec<u8>, Refusal> {
    unhex(node).ok_or(Refusal::NotFound("no such group"))
}

fn verifiable_group_info(data: &[u8]) -> Result<VerifiableGroupInfo, Refusal> {
    let message = MlsMessageIn::tls_deserialize_exact(data)
        .map_err(|e| Refusal::NotAcceptable(format!("not an MLS message: {e}")))?;
    match message.extract() {
        MlsMessageBodyIn::GroupInfo(info) => Ok(info),
        _ => Err(Refusal::NotAcceptable("not a GroupInfo".into())),
    }
}

/// The GroupInfo a commit brings must be of the group and its new epoch.
fn check_group_info(info: &GroupInfoData, group_id: &[u8], epoch: u64) -> Result<(), Refusal> {
    let parsed = verifiable_group_info(&info.data)?;
    if parsed.group_id().as_slice() != group_id || parsed.epoch().as_u64() != epoch {
        return Err(Refusal::NotAcceptable(
            "the GroupInfo is not of this group's new epoch".into(),
        ));
    }
    Ok(())
}

/// What a message sent to a group is, read without decrypting it.
pub(crate) enum Submission {
    /// An application message (a PrivateMessage), logged as it is.
    Application,
    /// A proposal (a PublicMessage), checked against the group's state.
    Proposal(Box<ProtocolMessage>),
}

/// The hub's first decision on a message sent to the group `group_id`,
/// with no state and no I/O: its epoch and what it is, or why it is
/// refused (not MLS, another group, a commit, the wrong wire format).
pub(crate) fn classify(data: &[u8], group_id: &[u8]) -> Result<(u64, Submission), Refusal> {
    let message = protocol_message(data, group_id)?;
    let epoch = message.epoch().as_u64();
    match (&message, message.content_type()) {
        (ProtocolMessage::PrivateMessage(_), ContentType::Application) => {
            Ok((epoch, Submission::Application))
        }
        (ProtocolMessage::PublicMessage(_), ContentType::Proposal) => {
            Ok((epoch, Submission::Proposal(Box::new(message))))
        }
        (_, ContentType::Commit) => Err(Refusal::NotAcceptable(
            "commits go to the group in an <iq type='set'><commit/></iq>".into(),
        )),
        _ => Err(Refusal::NotAcceptable(
            "application messages are PrivateMessages, proposals PublicMessages".into(),
        )),
    }
}

fn protocol_message(data: &[u8], group_id: &[u8]) -> Result<ProtocolMessage, Refusal> {
    let message = MlsMessageIn::tls_deserialize_exact(data)
        .map_err(|e| Refusal::NotAcceptable(format!("not an MLS message: {e}")))?
        .try_into_protocol_message()
        .map_err(|_| Refusal::NotAcceptable("not an MLS group message".into()))?;
    if message.group_id().as_slice() != group_id {
        return Err(Refusal::NotAcceptable(
            "the message is for another group".into(),
        ));
    }
    Ok(message)
}

/// A handshake's signer must be a device of the user who sent it.
/// An external commit may replace devices of its own user only.
fn check_external_removals(
    public: &PublicGroup,
    staged: &StagedCommit,
    sender: &BareJid,
) -> Result<(), Refusal> {
    for remove in staged.remove_proposals() {
        let removed = remove.remove_proposal().removed();
        let credential = public
            .leaf(removed)
            .map(|leaf| leaf.credential())
            .ok_or_else(|| Refusal::NotAcceptable("removes an empty leaf".into()))?;
        check_sender(credential, sender)
            .map_err(|_| Refusal::Forbidden("an external commit removes another user's device"))?;
    }
    Ok(())
}

fn check_sender(credential: &Credential, sender: &BareJid) -> Result<(), Refusal> {
    match device_name(credential) {
        Ok(device) if device.jid == *sender => Ok(()),
        _ => Err(Refusal::Forbidden(
            "the message is signed by another user's device",
        )),
    }
}

/// How many leaves the group has once `staged` is merged.
fn staged_device_count(public: &PublicGroup, staged: &StagedCommit) -> usize {
    let added = staged.add_proposals().count();
    let removed = staged.remove_proposals().count();
    (public.members().count() + added).saturating_sub(removed)
}

fn member_devices(public: &PublicGroup) -> BTreeSet<(String, String)> {
    public
        .members()
        .filter_map(|m| device_name(&m.credential).ok())
        .map(|d| (d.jid.to_string(), d.device.to_string()))
        .collect()
}

fn member_jids(public: &PublicGroup) -> BTreeSet<String> {
    member_devices(public)
        .into_iter()
        .map(|(jid, _)| jid)
        .collect()
}

fn changes(journal: Journal) -> Vec<StateChange> {
    journal.into_changes().collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.is_empty() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
