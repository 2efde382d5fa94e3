//! The networked client: one [`Device`] logged in to its home server over
//! XMPP (tokio-xmpp), speaking `spec/mls.md`: it publishes its device and
//! key packages, claims other users' packages, creates conversations on
//! the hub, sends through it, follows its log in order (catching up from
//! the log when it missed entries), retries commits the hub refused as
//! stale, and yields typed [`Event`]s.

use std::collections::VecDeque;
use std::time::Duration;

use jid::BareJid;
use minidom::Element;
use tokio_xmpp::parsers::http_upload::{SlotRequest, SlotResult};
use tokio_xmpp::IqRequest;

use crate::connection::{attr, Connection, Target};

use crate::conversation::{CommitOut, ConversationId, Incoming};
use crate::device::Device;
use crate::envelope::{Content, Envelope, FileRef};
use crate::error::{Error, ProcessError};
use crate::files;
use crate::identity::DeviceName;
use crate::transfer::{self, Progress};
use crate::wire::devices::{Device as ListedDevice, DeviceList};
use crate::wire::hub::{Accepted, Create, Created, GroupInfoData, GroupRef, Groups, Log};
use crate::wire::keys::{Claim, Count, KeyPackages, Upload};
use crate::wire::payload::{MlsPayload, WelcomePayload};
use crate::wire::{DEVICES_NODE, NS};

const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// How long an answer from the server may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A refused commit is rebuilt at most this many times.
const COMMIT_ATTEMPTS: usize = 5;
/// Log entries fetched per request.
const LOG_PAGE: u32 = 200;

/// Where and how to log in (see [`Connection`]).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The account.
    pub jid: BareJid,
    /// Its password.
    pub password: String,
    /// `host:port` of the server's direct-TLS port; `None`: found through
    /// the domain's DNS SRV records.
    pub server: Option<String>,
    /// The DNS server for that (`None`: the system's).
    pub nameserver: Option<std::net::SocketAddr>,
}

impl SessionOptions {
    fn target(&self) -> Target {
        match &self.server {
            Some(address) => Target::Address(address.clone()),
            None => Target::Dns {
                nameserver: self.nameserver,
            },
        }
    }
}

/// Something that happened in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message (text, reply, edit, reaction, receipt, file, …).
    Message {
        /// The conversation.
        conversation: ConversationId,
        /// Its position in the hub's log.
        seq: u64,
        /// Who sent it.
        sender: DeviceName,
        /// What it says.
        envelope: Envelope,
    },
    /// This device joined a conversation (it was added).
    Joined {
        /// The conversation.
        conversation: ConversationId,
        /// Its hub's address.
        address: BareJid,
    },
    /// Devices joined or left, or a member updated its keys.
    MembersChanged {
        /// The conversation.
        conversation: ConversationId,
        /// Devices added.
        added: Vec<DeviceName>,
        /// Devices removed.
        removed: Vec<DeviceName>,
        /// The new epoch.
        epoch: u64,
    },
    /// A device came back with another key than the one seen before: it
    /// is no longer verified (verify it again, e.g. `tern verify`).
    VerificationReset {
        /// The conversation.
        conversation: ConversationId,
        /// The device.
        device: DeviceName,
    },
    /// This device was removed from the conversation.
    Removed {
        /// The conversation.
        conversation: ConversationId,
    },
    /// A stanza that is not part of end-to-end encryption (presence,
    /// roster pushes, other messages, requests), handed on as it came
    /// when [`Session::pass_through`] is on (a gateway forwards them).
    Stanza(Element),
    /// A Welcome that was not taken: not sent by the hub of the group it
    /// names, for another group than its address, for a conversation this
    /// device is already in, or invalid. Nothing changed.
    WelcomeRejected {
        /// Who sent it.
        from: BareJid,
        /// Why it was refused.
        reason: String,
    },
    /// A conversation's log could not be fetched (its hub did not answer
    /// or refused); the others went on, and the next catch-up tries again.
    CatchUpFailed {
        /// The conversation.
        conversation: ConversationId,
        /// Its hub.
        address: BareJid,
        /// What went wrong.
        reason: String,
    },
    /// An entry of the log that could not be read (tampered, from a
    /// non-member, …); the conversation goes on.
    Rejected {
        /// The conversation.
        conversation: ConversationId,
        /// The entry.
        seq: u64,
        /// Why.
        reason: String,
    },
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Logging in failed (unreachable, certificate, password).
    #[error("cannot log in: {0}")]
    Connect(String),
    /// The connection ended.
    #[error("disconnected from the server")]
    Disconnected,
    /// The server took too long to answer.
    #[error("the server did not answer in time")]
    Timeout,
    /// The server refused a request.
    #[error("the server refused: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        /// The stanza error condition.
        condition: String,
        /// Its text, if any.
        text: Option<String>,
    },
    /// There is no such user.
    #[error("{0} does not exist (the server says so)")]
    NoSuchUser(String),
    /// The user has no key packages left (no device, or all used).
    #[error("{0} has no key packages: they need to log in once with a Tern client")]
    NoKeyPackages(String),
    /// An answer that does not parse.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The conversation has no known hub.
    #[error("no hub known for this conversation")]
    NoHub,
    /// The hub kept refusing our commit as stale.
    #[error("the group changed too often while committing; try again")]
    TooManyConflicts,
    /// The server offers no file upload service.
    #[error("your server offers no file upload (XEP-0363)")]
    NoUploadService,
    /// The file is larger than the upload service takes.
    #[error("the file is too large: your server takes files up to {max} bytes")]
    FileTooLarge {
        /// The largest file, in bytes (encrypted size).
        max: u64,
    },
    /// Uploading or downloading a file failed.
    #[error(transparent)]
    Transfer(#[from] crate::transfer::TransferError),
    /// A downloaded file was refused.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The client core failed.
    #[error(transparent)]
    Client(#[from] Error),
}

/// A logged-in device.
pub struct Session {
    client: Connection,
    device: Device,
    groups_domain: String,
    /// Stanzas that arrived while an answer was awaited.
    inbox: VecDeque<Element>,
    /// Events produced while doing something else (e.g. catching up).
    events: VecDeque<Event>,
    /// Conversations where the log brought proposals to commit.
    proposed: std::collections::BTreeSet<ConversationId>,
    /// The upload service, once discovered.
    upload_service: Option<BareJid>,
    /// Other stanzas become [`Event::Stanza`] instead of being dropped.
    pass_through: bool,
    /// How it logged in, to log in again.
    options: SessionOptions,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Logs in (direct TLS, SCRAM) and sends initial presence.
    pub async fn connect(device: Device, options: SessionOptions) -> Result<Self, SessionError> {
        let client = Connection::open(&options.jid, &options.password, &options.target()).await?;
        let mut session = Self {
            client,
            groups_domain: format!("groups.{}", options.jid.domain()),
            device,
            inbox: VecDeque::new(),
            events: VecDeque::new(),
            proposed: Default::default(),
            upload_service: None,
            pass_through: false,
            options,
        };
        session.announce().await?;
        Ok(session)
    }

    /// Logs in again after the connection was lost, and catches up on
    /// what was missed meanwhile (the events come from
    /// [`Self::next_event`]).
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        let options = &self.options;
        self.client = Connection::open(&options.jid, &options.password, &options.target()).await?;
        self.inbox.clear();
        self.announce().await?;
        self.catch_up().await
    }

    /// Initial presence; then waits until the server wrote what it kept
    /// for us (Welcomes among it), which it does right after the
    /// presence: the answer to a ping comes after all of it, so it is in
    /// the inbox for `catch_up`.
    async fn announce(&mut self) -> Result<(), SessionError> {
        self.send_stanza(Element::builder("presence", "jabber:client").build())
            .await?;
        self.get(None, Element::bare("ping", "urn:xmpp:ping"))
            .await?;
        Ok(())
    }

    /// Creates the account of `options` by in-band registration
    /// (XEP-0077); log in with [`Self::connect`] afterwards.
    pub async fn register(options: &SessionOptions) -> Result<(), SessionError> {
        Connection::register(&options.jid, &options.password, &options.target()).await
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Ends the session cleanly and gives the device back.
    pub async fn close(self) -> Device {
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, self.client.close()).await;
        self.device
    }

    // ----- device list and key packages -----------------------------------

    /// Adds this device to the user's public device list (PEP), keeping
    /// the other devices listed.
    pub async fn publish_device(&mut self, label: Option<&str>) -> Result<(), SessionError> {
        let mut list = self.device_list(&self.device.name().jid.clone()).await?;
        let me = ListedDevice {
            id: self.device.name().device.to_string(),
            key: self.device.signature_key().to_vec(),
            label: label.map(str::to_owned),
        };
        list.devices.retain(|d| d.id != me.id);
        list.devices.push(me);
        let publish: Element = format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='{DEVICES_NODE}'><item id='current'/></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>open</value></field>\
             </x></publish-options></pubsub>"
        )
        .parse()
        .map_err(|e| SessionError::Protocol(format!("{e}")))?;
        let mut publish = publish;
        if let Some(item) = publish
            .get_child_mut("publish", "http://jabber.org/protocol/pubsub")
            .and_then(|p| p.get_child_mut("item", "http://jabber.org/protocol/pubsub"))
        {
            item.append_child(list.into());
        }
        self.set(None, publish).await.map(drop)
    }

    /// A user's public device list (empty if they published none).
    pub async fn device_list(&mut self, user: &BareJid) -> Result<DeviceList, SessionError> {
        let request: Element = format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{DEVICES_NODE}'/></pubsub>"
        )
        .parse()
        .map_err(|e| SessionError::Protocol(format!("{e}")))?;
        let answer = match self.get(Some(user.as_str()), request).await {
            Ok(answer) => answer,
            Err(SessionError::Refused { condition, .. }) if condition == "item-not-found" => {
                return Ok(DeviceList::default())
            }
            Err(e) => return Err(e),
        };
        let list = answer
            .get_child("items", "http://jabber.org/protocol/pubsub")
            .and_then(|items| items.get_child("item", "http://jabber.org/protocol/pubsub"))
            .and_then(|item| item.get_child("devices", NS))
            .map(|devices| DeviceList::try_from(devices.clone()))
            .transpose()
            .map_err(|e| SessionError::Protocol(format!("device list: {e}")))?;
        Ok(list.unwrap_or_default())
    }

    /// Makes sure the server holds at least `target` single-use key
    /// packages of this device (and a last-resort one); returns how many
    /// it uploaded.
    pub async fn replenish_key_packages(&mut self, target: u32) -> Result<u32, SessionError> {
        let device = self.device.name().device.to_string();
        let count = Count::try_from(
            self.get(
                None,
                Count {
                    device: device.clone(),
                    remaining: None,
                    low: None,
                },
            )
            .await?,
        )
        .map_err(|e| SessionError::Protocol(format!("count: {e}")))?;
        let held = count.remaining.unwrap_or(0);
        if held >= target {
            return Ok(0);
        }
        let missing = target - held;
        let packages = self.device.generate_key_packages(missing as usize).await?;
        let last_resort = if held == 0 {
            Some(self.device.generate_last_resort_key_package().await?)
        } else {
            None
        };
        self.set(None, Upload::new(device, packages, last_resort))
            .await?;
        Ok(missing)
    }

    /// Claims one key package per device of `user`, keeping only those
    /// of devices in the user's published device list (with the key
    /// published there).
    pub async fn claim(&mut self, user: &BareJid) -> Result<Vec<Vec<u8>>, SessionError> {
        match self.set(Some(user.as_str()), Claim {}).await {
            Ok(answer) => {
                let claimed = KeyPackages::try_from(answer)
                    .map_err(|e| SessionError::Protocol(format!("key packages: {e}")))?
                    .key_packages
                    .into_iter()
                    .map(|p| p.data)
                    .collect();
                // Only the user's published devices are added.
                let devices = self.device_list(user).await?;
                let (kept, refused) = crate::verify::published_packages(user, &devices, claimed);
                for reason in &refused {
                    tracing::warn!(%user, "set a claimed key package aside: {reason}");
                }
                if kept.is_empty() && !refused.is_empty() {
                    return Err(SessionError::Protocol(format!(
                        "no key package of {user} matches a published device: {}",
                        refused.join("; ")
                    )));
                }
                Ok(kept)
            }
            Err(SessionError::Refused { condition, .. }) if condition == "item-not-found" => {
                Err(SessionError::NoKeyPackages(user.to_string()))
            }
            Err(SessionError::Refused { condition, .. }) if condition == "service-unavailable" => {
                Err(SessionError::NoSuchUser(user.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    // ----- conversations ----------------------------------------------------

    /// Creates a conversation on our hub with every device of `members`
    /// (and this user's other devices); returns it and its address.
    pub async fn create_conversation(
        &mut self,
        members: &[BareJid],
    ) -> Result<(ConversationId, BareJid), SessionError> {
        let (id, group_info) = self.device.create_conversation().await?;
        let created = Created::try_from(
            self.set(
                Some(&self.groups_domain.clone()),
                Create {
                    group_info: GroupInfoData {
                        epoch: None,
                        data: group_info,
                    },
                },
            )
            .await?,
        )
        .map_err(|e| SessionError::Protocol(format!("created: {e}")))?;
        self.device.set_address(&id, &created.address).await?;
        let mut users: Vec<BareJid> = members.to_vec();
        let own = self.device.name().jid.clone();
        if !users.contains(&own) {
            users.push(own);
        }
        self.add_users(&id, &users).await?;
        Ok((id, created.address))
    }

    /// Adds every device of these users (our own other devices are
    /// skipped when they have no key packages).
    pub async fn add_users(
        &mut self,
        id: &ConversationId,
        users: &[BareJid],
    ) -> Result<(), SessionError> {
        let mut packages = Vec::new();
        let own = self.device.name().jid.clone();
        for user in users {
            match self.claim(user).await {
                Ok(claimed) => packages.extend(claimed),
                Err(SessionError::NoKeyPackages(_)) if *user == own => {}
                Err(e) => return Err(e),
            }
        }
        // This device is in the group already: its own package is not
        // added (claiming it used it up, which replenishing makes good).
        let me = self.device.name().clone();
        packages.retain(|p| {
            crate::verify::verify_key_package(p).map_or(true, |verified| verified.device != me)
        });
        if packages.is_empty() {
            return Ok(());
        }
        let packages = std::sync::Arc::new(packages);
        self.commit_with_retry(id, move |device, id| {
            let packages = packages.clone();
            let id = id.clone();
            Box::pin(async move { device.add_members(&id, &packages).await.map(Some) })
        })
        .await
    }

    /// Joins, by external commit, the conversations on this user's hub
    /// that the user has other devices in and this device never had (a
    /// new device's first login); returns how many it joined.
    pub async fn join_existing_conversations(&mut self) -> Result<usize, SessionError> {
        let answer = self
            .get(Some(&self.groups_domain.clone()), Groups::default())
            .await?;
        let groups =
            Groups::try_from(answer).map_err(|e| SessionError::Protocol(format!("groups: {e}")))?;
        let mut joined = 0;
        for GroupRef { address } in groups.groups {
            if self.device.knows_address(&address)? {
                continue;
            }
            match self.join_by_external_commit(&address).await {
                Ok(id) => {
                    joined += 1;
                    self.events.push_back(Event::Joined {
                        conversation: id,
                        address,
                    });
                }
                Err(e) => tracing::warn!(%address, "cannot join the conversation: {e}"),
            }
        }
        Ok(joined)
    }

    async fn join_by_external_commit(
        &mut self,
        address: &BareJid,
    ) -> Result<ConversationId, SessionError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let request = GroupInfoData {
                epoch: None,
                data: Vec::new(),
            };
            let info = GroupInfoData::try_from(self.get(Some(address.as_str()), request).await?)
                .map_err(|e| SessionError::Protocol(format!("group info: {e}")))?;
            let join = self.device.join_external(&info.data).await?;
            match self.submit(address, join.commit()).await {
                Ok(accepted) => {
                    return Ok(self
                        .device
                        .external_join_accepted(join, address, accepted.seq)
                        .await?)
                }
                Err(Submitted::Stale) => continue,
                Err(Submitted::Failed(e)) => return Err(e),
            }
        }
        Err(SessionError::TooManyConflicts)
    }

    /// Removes every device of `user`.
    pub async fn remove_user(
        &mut self,
        id: &ConversationId,
        user: &BareJid,
    ) -> Result<(), SessionError> {
        let user = user.clone();
        self.commit_with_retry(id, move |device, id| {
            let user = user.clone();
            let id = id.clone();
            Box::pin(async move { device.remove_user(&id, &user).await.map(Some) })
        })
        .await
    }

    /// Leaves the conversation (every device of this user): sends the
    /// removal proposals, which the next member online commits; this
    /// device stops following the conversation at once.
    pub async fn leave(&mut self, id: &ConversationId) -> Result<(), SessionError> {
        let address = self.address(id)?;
        for proposal in self.device.leave(id).await? {
            self.send_to_hub(&address, proposal).await?;
        }
        Ok(())
    }

    /// Sends a message; returns its envelope.
    pub async fn send(
        &mut self,
        id: &ConversationId,
        contents: Vec<Content>,
    ) -> Result<Envelope, SessionError> {
        let address = self.address(id)?;
        // Proposals block application messages until committed.
        if self.device.has_pending_proposals(id).await? {
            self.commit_pending(id).await?;
        }
        let (message, envelope) = self.device.send(id, contents).await?;
        self.send_to_hub(&address, message).await?;
        Ok(envelope)
    }

    /// Sends an MLS message (application message or proposal) to the hub.
    async fn send_to_hub(&mut self, address: &BareJid, data: Vec<u8>) -> Result<(), SessionError> {
        let mut stanza = Element::builder("message", "jabber:client")
            .attr(attr("to"), address.as_str())
            .attr(attr("type"), "groupchat")
            .build();
        stanza.append_child(MlsPayload { seq: None, data }.into());
        self.send_stanza(stanza).await
    }

    /// Commits the proposals waiting in the conversation (unless another
    /// member's commit includes them first).
    async fn commit_pending(&mut self, id: &ConversationId) -> Result<(), SessionError> {
        self.commit_with_retry(id, |device, id| {
            let id = id.clone();
            Box::pin(async move {
                if !device.has_pending_proposals(&id).await? {
                    return Ok(None);
                }
                device.commit_pending_proposals(&id).await.map(Some)
            })
        })
        .await
    }

    /// Commits what proposals the log brought (someone left), now that
    /// the log was read up to its end.
    async fn settle_proposals(&mut self) -> Result<(), SessionError> {
        while let Some(id) = self.proposed.pop_first() {
            match self.commit_pending(&id).await {
                Ok(()) => {}
                // E.g. a proposal to remove this device: not ours to commit.
                Err(SessionError::Client(e)) => {
                    tracing::warn!("cannot commit the pending proposals: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Encrypts a file, uploads it to the server's upload service under a
    /// meaningless name, and sends its reference (URL, key, hash, name)
    /// in the conversation; `progress` counts uploaded bytes.
    pub async fn send_file(
        &mut self,
        id: &ConversationId,
        name: &str,
        data: &[u8],
        progress: Progress,
    ) -> Result<Envelope, SessionError> {
        let encrypted = files::encrypt(data, name, files::media_type_of(name));
        let (put, get) = self.upload_slot(encrypted.ciphertext.len() as u64).await?;
        transfer::put(&put, encrypted.ciphertext, progress).await?;
        let mut reference = encrypted.reference;
        reference.url = get;
        self.send(id, vec![Content::File(reference)]).await
    }

    /// A slot for `size` bytes: the PUT and GET URLs.
    async fn upload_slot(&mut self, size: u64) -> Result<(String, String), SessionError> {
        let service = self.upload_service().await?;
        let request = SlotRequest {
            // The real name travels encrypted, in the envelope.
            filename: format!("{:016x}.bin", rand::random::<u64>()),
            size,
            content_type: Some("application/octet-stream".into()),
        };
        match self
            .iq(Some(service.as_str()), IqRequest::Get(request.into()))
            .await
        {
            Ok(answer) => {
                let slot = SlotResult::try_from(answer)
                    .map_err(|e| SessionError::Protocol(format!("upload slot: {e}")))?;
                Ok((slot.put.url, slot.get.url))
            }
            Err(IqFailure::Error(error)) => {
                let max = error
                    .get_child("file-too-large", NS_UPLOAD)
                    .and_then(|c| c.get_child("max-file-size", NS_UPLOAD))
                    .and_then(|m| m.text().trim().parse().ok());
                match max {
                    Some(max) => Err(SessionError::FileTooLarge { max }),
                    None => Err(stanza_error(&error)),
                }
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// The server's upload service, found by service discovery (the
    /// server's items, the one with the XEP-0363 feature).
    async fn upload_service(&mut self) -> Result<BareJid, SessionError> {
        if let Some(service) = &self.upload_service {
            return Ok(service.clone());
        }
        let domain = self.device.name().jid.domain().to_string();
        let items = self
            .get(Some(&domain), Element::bare("query", NS_DISCO_ITEMS))
            .await?;
        for item in items.children().filter(|c| c.is("item", NS_DISCO_ITEMS)) {
            let Some(jid) = item.attr("jid").and_then(|j| BareJid::new(j).ok()) else {
                continue;
            };
            let info = self
                .get(Some(jid.as_str()), Element::bare("query", NS_DISCO_INFO))
                .await;
            let offers_upload = info.is_ok_and(|info| {
                info.children()
                    .any(|f| f.is("feature", NS_DISCO_INFO) && f.attr("var") == Some(NS_UPLOAD))
            });
            if offers_upload {
                self.upload_service = Some(jid.clone());
                return Ok(jid);
            }
        }
        Err(SessionError::NoUploadService)
    }

    /// Fetches what every conversation's log holds beyond
    /// this device's cursor; the events are returned by [`Self::next_event`].
    pub async fn catch_up(&mut self) -> Result<(), SessionError> {
        // First what arrived while we were away (Welcomes).
        while let Some(stanza) = self.inbox.pop_front() {
            self.handle_stanza(stanza).await?;
        }
        for (id, address) in self.device.conversations()? {
            let Some(address) = address else { continue };
            if !self.device.is_member(&id).await.unwrap_or(false) {
                continue;
            }
            self.catch_up_or_report(&id, &address).await?;
        }
        self.settle_proposals().await
    }

    /// The next event, waiting up to `wait`; `None` when nothing happened.
    pub async fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, SessionError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let stanza = match self.inbox.pop_front() {
                Some(stanza) => stanza,
                None => match tokio::time::timeout_at(deadline, self.client.next()).await {
                    Err(_) => return Ok(None),
                    Ok(Some(stanza)) => stanza,
                    Ok(None) => return Err(SessionError::Disconnected),
                },
            };
            self.handle_stanza(stanza).await?;
            self.settle_proposals().await?;
        }
    }

    /// Waits until something arrived, without processing it; cancel-safe
    /// (dropping the future loses nothing), so it can race other inputs
    /// in a `select!`. [`Self::next_event`] then processes what came.
    pub async fn readable(&mut self) -> Result<(), SessionError> {
        if !self.events.is_empty() || !self.inbox.is_empty() {
            return Ok(());
        }
        match self.client.next().await {
            Some(stanza) => {
                self.inbox.push_back(stanza);
                Ok(())
            }
            None => Err(SessionError::Disconnected),
        }
    }

    // ----- internals --------------------------------------------------------

    fn address(&self, id: &ConversationId) -> Result<BareJid, SessionError> {
        self.device.address(id)?.ok_or(SessionError::NoHub)
    }

    async fn handle_stanza(&mut self, stanza: Element) -> Result<(), SessionError> {
        let encrypted = stanza.name() == "message"
            && (stanza.get_child("welcome", NS).is_some() || stanza.get_child("mls", NS).is_some());
        if !encrypted {
            if self.pass_through {
                self.events.push_back(Event::Stanza(stanza));
            }
            return Ok(());
        }
        let Some(from) = stanza
            .attr("from")
            .and_then(|f| jid::Jid::new(f).ok())
            .map(jid::Jid::into_bare)
        else {
            return Ok(());
        };
        if let Some(welcome) = stanza.get_child("welcome", NS) {
            let welcome = match WelcomePayload::try_from(welcome.clone()) {
                Ok(welcome) => welcome,
                Err(e) => {
                    self.reject_welcome(from, format!("malformed: {e}"));
                    return Ok(());
                }
            };
            // Only the hub a group's address names sends its Welcomes
            // (servers stamp `from`, and another domain's cannot claim
            // ours).
            if welcome.group != from {
                self.reject_welcome(from, format!("not sent by the hub of {}", welcome.group));
                return Ok(());
            }
            return self.join(welcome).await;
        }
        if let Some(payload) = stanza.get_child("mls", NS) {
            let entry = MlsPayload::try_from(payload.clone())
                .map_err(|e| SessionError::Protocol(format!("log entry: {e}")))?;
            if let Some(id) = self.conversation_at(&from)? {
                self.receive(&id, &from, entry).await?;
            }
        }
        Ok(())
    }

    async fn join(&mut self, welcome: WelcomePayload) -> Result<(), SessionError> {
        let seq = welcome.seq.unwrap_or(0);
        let (id, key_changed) = match self.device.join(&welcome.data, seq, &welcome.group).await {
            Ok(joined) => joined,
            // For another device (of ours, when one was added).
            Err(Error::WelcomeNotForUs) => return Ok(()),
            Err(
                e @ (Error::WelcomeForAnotherGroup(_)
                | Error::WelcomeForActiveGroup
                | Error::Malformed(_)
                | Error::Mls(_)),
            ) => {
                self.reject_welcome(welcome.group, e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.device.set_address(&id, &welcome.group).await?;
        self.events.push_back(Event::Joined {
            conversation: id.clone(),
            address: welcome.group.clone(),
        });
        self.events.extend(
            key_changed
                .into_iter()
                .map(|device| Event::VerificationReset {
                    conversation: id.clone(),
                    device,
                }),
        );
        self.catch_up_or_report(&id, &welcome.group).await
    }

    /// Reports a Welcome that was not taken.
    fn reject_welcome(&mut self, from: BareJid, reason: String) {
        tracing::warn!(%from, reason, "refused a welcome");
        self.events
            .push_back(Event::WelcomeRejected { from, reason });
    }

    /// Catches up with one conversation; a hub that fails or does not
    /// answer is reported as an event and does not stop the others.
    async fn catch_up_or_report(
        &mut self,
        id: &ConversationId,
        address: &BareJid,
    ) -> Result<(), SessionError> {
        match self.catch_up_one(id, address).await {
            Ok(()) => Ok(()),
            Err(e @ (SessionError::Disconnected | SessionError::Client(_))) => Err(e),
            // The hub no longer counts us in (e.g. removed while this
            // device was away, beyond what it may still read).
            Err(SessionError::Refused { condition, .. }) if condition == "forbidden" => {
                tracing::warn!(%address, "the hub refuses this device its log");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(%address, "cannot catch up: {e}");
                self.events.push_back(Event::CatchUpFailed {
                    conversation: id.clone(),
                    address: address.clone(),
                    reason: e.to_string(),
                });
                Ok(())
            }
        }
    }

    /// The conversation with `peer`: the group at that address, or the
    /// one-to-one conversation with that user (created when there is
    /// none).
    pub async fn conversation_with(
        &mut self,
        peer: &BareJid,
    ) -> Result<ConversationId, SessionError> {
        if let Some(group) = self.conversation_at(peer)? {
            return Ok(group);
        }
        if let Some(id) = self.device.direct_conversation(peer).await? {
            return Ok(id);
        }
        Ok(self
            .create_conversation(std::slice::from_ref(peer))
            .await?
            .0)
    }

    /// Answers a message that asks for a delivery receipt (XEP-0184)
    /// with one, unless it is this account's own.
    pub async fn acknowledge(&mut self, event: &Event) -> Result<(), SessionError> {
        let Event::Message {
            conversation,
            sender,
            envelope,
            ..
        } = event
        else {
            return Ok(());
        };
        let asked = envelope
            .contents
            .iter()
            .any(|c| matches!(c, Content::ReceiptRequest));
        if asked && sender.jid != self.device.name().jid {
            let receipt = Content::Receipt {
                id: envelope.id.clone(),
            };
            self.send(conversation, vec![receipt]).await?;
        }
        Ok(())
    }

    /// The conversation whose hub is at `address`.
    pub fn conversation_at(
        &self,
        address: &BareJid,
    ) -> Result<Option<ConversationId>, SessionError> {
        Ok(self.device.conversation_at(address)?)
    }

    /// A pushed log entry: processed if it is the next one; a gap means
    /// entries were missed, so the log is fetched.
    async fn receive(
        &mut self,
        id: &ConversationId,
        address: &BareJid,
        entry: MlsPayload,
    ) -> Result<(), SessionError> {
        let Some(seq) = entry.seq else { return Ok(()) };
        let cursor = self.device.last_seq(id).await?;
        if seq <= cursor {
            return Ok(());
        }
        if seq > cursor + 1 {
            return self.catch_up_one(id, address).await;
        }
        self.process(id, seq, &entry.data).await
    }

    async fn catch_up_one(
        &mut self,
        id: &ConversationId,
        address: &BareJid,
    ) -> Result<(), SessionError> {
        loop {
            let after = self.device.last_seq(id).await?;
            let log = Log::try_from(
                self.get(
                    Some(address.as_str()),
                    Log {
                        after: Some(after),
                        max: Some(LOG_PAGE),
                        entries: Vec::new(),
                        more: None,
                    },
                )
                .await?,
            )
            .map_err(|e| SessionError::Protocol(format!("log: {e}")))?;
            for entry in &log.entries {
                if let Some(seq) = entry.seq {
                    self.process(id, seq, &entry.data).await?;
                }
            }
            if log.more != Some(true) || log.entries.is_empty() {
                return Ok(());
            }
        }
    }

    async fn process(
        &mut self,
        id: &ConversationId,
        seq: u64,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let event = match self.device.process(id, seq, data).await {
            Ok(Incoming::Message { sender, envelope }) => Some(Event::Message {
                conversation: id.clone(),
                seq,
                sender,
                envelope,
            }),
            Ok(Incoming::Commit { evicted: true, .. }) => Some(Event::Removed {
                conversation: id.clone(),
            }),
            Ok(Incoming::Commit {
                added,
                removed,
                epoch,
                key_changed,
                ..
            }) => {
                self.events.extend(key_changed.into_iter().map(|device| {
                    Event::VerificationReset {
                        conversation: id.clone(),
                        device,
                    }
                }));
                Some(Event::MembersChanged {
                    conversation: id.clone(),
                    added,
                    removed,
                    epoch,
                })
            }
            Ok(Incoming::Proposal) => {
                self.proposed.insert(id.clone());
                None
            }
            Ok(_) => None,
            Err(ProcessError::Client(e)) => return Err(e.into()),
            Err(ProcessError::FutureEpoch(_)) => return Ok(()),
            Err(e) => Some(Event::Rejected {
                conversation: id.clone(),
                seq,
                reason: e.to_string(),
            }),
        };
        self.events.extend(event);
        Ok(())
    }

    /// Builds a commit with `make` (`None`: nothing to commit), submits
    /// it, and on a stale-epoch refusal drops it, catches up, and builds it
    /// again.
    async fn commit_with_retry<F>(
        &mut self,
        id: &ConversationId,
        make: F,
    ) -> Result<(), SessionError>
    where
        F: for<'a> Fn(
            &'a Device,
            &'a ConversationId,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Option<CommitOut>, Error>> + Send + 'a>,
        >,
    {
        let address = self.address(id)?;
        for _ in 0..COMMIT_ATTEMPTS {
            // Nothing (left) to commit: someone else's commit did it.
            let Some(out) = make(&self.device, id).await? else {
                return Ok(());
            };
            match self.submit(&address, &out).await {
                Ok(accepted) => {
                    self.device.commit_accepted(id, accepted.seq).await?;
                    return Ok(());
                }
                Err(Submitted::Stale) => {
                    self.device.commit_refused(id).await?;
                    self.catch_up_one(id, &address).await?;
                }
                Err(Submitted::Failed(e)) => {
                    self.device.commit_refused(id).await?;
                    return Err(e);
                }
            }
        }
        Err(SessionError::TooManyConflicts)
    }

    async fn submit(&mut self, address: &BareJid, out: &CommitOut) -> Result<Accepted, Submitted> {
        let commit = out.to_wire();
        match self
            .iq(Some(address.as_str()), IqRequest::Set(commit.into()))
            .await
        {
            Ok(answer) => Accepted::try_from(answer)
                .map_err(|e| Submitted::Failed(SessionError::Protocol(format!("accepted: {e}")))),
            Err(IqFailure::Error(error)) if error.get_child("stale-epoch", NS).is_some() => {
                Err(Submitted::Stale)
            }
            Err(failure) => Err(Submitted::Failed(failure.into())),
        }
    }

    async fn set(
        &mut self,
        to: Option<&str>,
        payload: impl Into<Element>,
    ) -> Result<Element, SessionError> {
        self.iq(to, IqRequest::Set(payload.into()))
            .await
            .map_err(Into::into)
    }

    pub(crate) async fn get(
        &mut self,
        to: Option<&str>,
        payload: impl Into<Element>,
    ) -> Result<Element, SessionError> {
        self.iq(to, IqRequest::Get(payload.into()))
            .await
            .map_err(Into::into)
    }

    /// Sends an IQ and waits for its answer, keeping other stanzas for
    /// later.
    async fn iq(&mut self, to: Option<&str>, request: IqRequest) -> Result<Element, IqFailure> {
        let id = format!("tern-{:016x}", rand::random::<u64>());
        let (kind, payload) = match request {
            IqRequest::Get(payload) => ("get", payload),
            IqRequest::Set(payload) => ("set", payload),
        };
        let mut builder = Element::builder("iq", "jabber:client")
            .attr(attr("type"), kind)
            .attr(attr("id"), id.as_str());
        if let Some(to) = to {
            builder = builder.attr(attr("to"), to);
        }
        let iq = builder.append(payload).build();
        self.send_stanza(iq).await.map_err(IqFailure::Session)?;
        let client = &mut self.client;
        let inbox = &mut self.inbox;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match client.next().await {
                    Some(element) if is_answer(&element, &id) => return Ok(element),
                    Some(element) => inbox.push_back(element),
                    None => return Err(SessionError::Disconnected),
                }
            }
        })
        .await
        .map_err(|_| IqFailure::Session(SessionError::Timeout))?
        .map_err(IqFailure::Session)?;
        if answer.attr("type") == Some("error") {
            return Err(IqFailure::Error(
                answer
                    .get_child("error", "jabber:client")
                    .cloned()
                    .unwrap_or(answer),
            ));
        }
        Ok(answer
            .children()
            .next()
            .cloned()
            .unwrap_or_else(|| Element::bare("empty", NS)))
    }

    /// Hands stanzas that are not end-to-end encryption's on as
    /// [`Event::Stanza`] (on) or drops them (off, the default).
    pub fn pass_through(&mut self, on: bool) {
        self.pass_through = on;
    }

    /// Sends a stanza as it is (a gateway forwarding its client's).
    pub async fn send_stanza(&mut self, stanza: Element) -> Result<(), SessionError> {
        self.client.send(&stanza).await
    }
}

/// Downloads and decrypts a file sent in a conversation, checking its
/// hash; `progress` counts downloaded bytes.
pub async fn fetch_file(reference: &FileRef, progress: Progress) -> Result<Vec<u8>, SessionError> {
    let ciphertext =
        transfer::get(&reference.url, reference.size + files::TAG_BYTES, progress).await?;
    Ok(files::decrypt(&ciphertext, reference)?)
}

/// How an IQ failed.
enum IqFailure {
    /// The server answered with this error element.
    Error(Element),
    /// No answer.
    Session(SessionError),
}

impl From<IqFailure> for SessionError {
    fn from(failure: IqFailure) -> Self {
        match failure {
            IqFailure::Session(e) => e,
            IqFailure::Error(error) => stanza_error(&error),
        }
    }
}

/// The refusal an error stanza (or its `<error/>` child) carries.
pub(crate) fn stanza_error(stanza: &Element) -> SessionError {
    let error = stanza.get_child("error", "jabber:client").unwrap_or(stanza);
    SessionError::Refused {
        condition: error
            .children()
            .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "undefined-condition".into()),
        text: error
            .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
            .map(Element::text),
    }
}

/// How submitting a commit ended, when it was not accepted.
enum Submitted {
    /// Another commit won this epoch.
    Stale,
    /// Anything else.
    Failed(SessionError),
}

/// Whether `stanza` answers the IQ `id`.
fn is_answer(stanza: &Element, id: &str) -> bool {
    stanza.name() == "iq"
        && stanza.attr("id") == Some(id)
        && matches!(stanza.attr("type"), Some("result" | "error"))
}
