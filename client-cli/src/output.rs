//! What `tern` prints: lines for people, or one JSON object per line
//! (`--json`) for scripts.

use serde_json::{json, Value};
use tern_e2ee::envelope::{Content, Envelope};
use tern_e2ee::store::StoredMessage;
use tern_e2ee::{Device, Event};

/// Where finished lines go when not to standard output (e.g. above the
/// prompt of `tern chat`).
pub type Printer = Box<dyn FnMut(String) + Send>;

/// The output format.
pub struct Output {
    json: bool,
    printer: Option<std::sync::Mutex<Printer>>,
}

impl Output {
    /// Lines for people, or JSON.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            printer: None,
        }
    }

    /// The same format, printed through `printer`.
    pub fn through(json: bool, printer: Printer) -> Self {
        Self {
            json,
            printer: Some(std::sync::Mutex::new(printer)),
        }
    }

    fn print(&self, object: Value, line: impl FnOnce() -> String) {
        let text = if self.json {
            object.to_string()
        } else {
            line()
        };
        match &self.printer {
            Some(printer) => match printer.lock() {
                Ok(mut print) => print(text),
                Err(_) => println!("{text}"),
            },
            None => println!("{text}"),
        }
    }

    /// A line of `tern chat` for people (a notice, an error); JSON output
    /// gets `{"type": kind, "text": …}`.
    pub fn notice(&self, kind: &str, text: &str) {
        self.print(json!({"type": kind, "text": text}), || text.to_owned());
    }

    /// A message in `tern chat`, numbered `n` for `/reply`, `/react`;
    /// `reference` names other messages.
    pub fn chat_message(
        &self,
        n: usize,
        sender: &str,
        seq: Option<u64>,
        envelope: &Envelope,
        reference: &dyn Fn(&str) -> String,
    ) {
        let mut object = message_json("", seq, sender, envelope);
        object["n"] = json!(n);
        if let Some(map) = object.as_object_mut() {
            map.remove("conversation");
        }
        self.print(object, || {
            format!("#{n} [{}] {}", envelope.from, describe(envelope, reference))
        });
    }

    /// After `account login`.
    pub fn logged_in(&self, device: &Device, uploaded: u32, joined: usize) {
        self.print(
            json!({
                "type": "device",
                "jid": device.name().jid.as_str(),
                "device": device.name().device.as_str(),
                "fingerprint": device.fingerprint(),
                "key_packages_uploaded": uploaded,
                "conversations_joined": joined,
            }),
            || {
                let mut line = format!(
                    "logged in as {} (device {}, fingerprint {})",
                    device.name().jid,
                    device.name().device,
                    device.fingerprint()
                );
                if joined > 0 {
                    line.push_str(&format!("; joined your {joined} conversations"));
                }
                line
            },
        );
    }

    /// A device of the account.
    pub fn device(&self, id: &str, fingerprint: &str, label: Option<&str>, this: bool) {
        self.print(
            json!({"type": "device", "device": id, "fingerprint": fingerprint, "label": label, "this_device": this}),
            || {
                format!(
                    "{id}  {fingerprint}  {}{}",
                    label.unwrap_or("-"),
                    if this { "  (this device)" } else { "" }
                )
            },
        );
    }

    /// The safety number shared with `user`.
    pub fn safety_number(&self, user: &jid::BareJid, number: &str) {
        self.print(
            json!({"type": "safety_number", "jid": user.as_str(), "safety_number": number}),
            || format!("safety number with {user}: {number}"),
        );
    }

    /// A device of another user with its verification state.
    pub fn verified_device(
        &self,
        user: &jid::BareJid,
        id: &str,
        fingerprint: &str,
        label: Option<&str>,
        verified: bool,
    ) {
        self.print(
            json!({"type": "device", "jid": user.as_str(), "device": id, "fingerprint": fingerprint, "label": label, "verified": verified}),
            || {
                format!(
                    "{id}  {fingerprint}  {}  {}",
                    label.unwrap_or("-"),
                    if verified { "verified" } else { "not verified" }
                )
            },
        );
    }

    /// A contact, with their presence subscription and whether our
    /// request waits for their answer.
    pub fn contact(&self, jid: &str, name: Option<&str>, subscription: &str, asked: bool) {
        self.print(
            json!({"type": "contact", "jid": jid, "name": name,
                   "subscription": subscription, "asked": asked}),
            || {
                let waiting = if asked { " (asked)" } else { "" };
                format!("{jid}  {}  {subscription}{waiting}", name.unwrap_or("-"))
            },
        );
    }

    /// After `group create`.
    pub fn created(&self, address: &jid::BareJid, name: &str) {
        self.print(
            json!({"type": "group", "address": address.as_str(), "name": name}),
            || address.to_string(),
        );
    }

    /// A conversation.
    pub fn group(
        &self,
        address: &str,
        name: Option<&str>,
        members: &std::collections::BTreeSet<String>,
    ) {
        let members: Vec<&String> = members.iter().collect();
        self.print(
            json!({"type": "group", "address": address, "name": name, "members": members}),
            || {
                format!(
                    "{address}  {}  {}",
                    name.unwrap_or("-"),
                    members
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
    }

    /// After `send`.
    pub fn sent(&self, peer: &jid::BareJid, id: &str) {
        self.print(
            json!({"type": "sent", "to": peer.as_str(), "id": id}),
            || format!("sent to {peer}"),
        );
    }

    /// After `file get`.
    pub fn saved(&self, path: &std::path::Path) {
        self.print(
            json!({"type": "saved", "path": path.display().to_string()}),
            || format!("saved {}", path.display()),
        );
    }

    /// Something that happened in a conversation.
    pub async fn event(&self, device: &Device, event: &Event) {
        match event {
            Event::Message {
                conversation,
                seq,
                sender,
                envelope,
            } => self.print(
                message_json(
                    &hex(&conversation.0),
                    Some(*seq),
                    &sender.to_string(),
                    envelope,
                ),
                || format!("[{}] {}", sender.jid, describe(envelope, &short_id)),
            ),
            Event::Joined { address, .. } => {
                let members = match event {
                    Event::Joined { conversation, .. } => device
                        .members(conversation)
                        .await
                        .map(|m| m.iter().map(|d| d.jid.to_string()).collect::<Vec<_>>())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                self.print(
                    json!({"type": "joined", "group": address.as_str(), "members": members}),
                    || format!("joined a conversation with {}", members.join(", ")),
                )
            }
            Event::MembersChanged {
                added,
                removed,
                epoch,
                ..
            } => self.print(
                json!({
                    "type": "members",
                    "added": added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "removed": removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "epoch": epoch,
                }),
                || {
                    let names = |list: &[tern_e2ee::identity::DeviceName]| {
                        list.iter()
                            .map(|d| d.jid.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    match (added.is_empty(), removed.is_empty()) {
                        (false, _) => format!("new device of {}", names(added)),
                        (_, false) => format!("left: {}", names(removed)),
                        _ => "keys updated".to_owned(),
                    }
                },
            ),
            Event::VerificationReset { device, .. } => self.print(
                json!({"type": "verification_reset", "jid": device.jid.as_str(), "device": device.device.as_str()}),
                || {
                    format!(
                        "warning: device {} of {} has a new key and is no longer verified; check it with `tern verify {}`",
                        device.device, device.jid, device.jid
                    )
                },
            ),
            Event::Stanza(_) => {}
            Event::Removed { .. } => self.print(json!({"type": "removed"}), || {
                "you were removed from a conversation".to_owned()
            }),
            Event::Rejected { seq, reason, .. } => self.print(
                json!({"type": "rejected", "seq": seq, "reason": reason}),
                || format!("a message could not be read: {reason}"),
            ),
            Event::WelcomeRejected { from, reason } => self.print(
                json!({"type": "welcome_rejected", "from": from.as_str(), "reason": reason}),
                || format!("warning: refused an invitation from {from}: {reason}"),
            ),
            Event::CatchUpFailed {
                address, reason, ..
            } => self.print(
                json!({"type": "catch_up_failed", "group": address.as_str(), "reason": reason}),
                || format!("warning: cannot read the conversation at {address}: {reason}"),
            ),
        }
    }

    /// A message of the local history.
    pub fn stored(&self, message: &StoredMessage) {
        let sender = message.sender.split('#').next().unwrap_or_default();
        self.print(
            message_json(
                &hex(&message.group_id),
                message.seq,
                &message.sender,
                &message.envelope,
            ),
            || format!("[{sender}] {}", describe(&message.envelope, &short_id)),
        );
    }
}

fn message_json(conversation: &str, seq: Option<u64>, sender: &str, envelope: &Envelope) -> Value {
    let mut object = json!({
        "type": "message",
        "conversation": conversation,
        "seq": seq,
        "from": envelope.from.as_str(),
        "device": sender,
        "id": envelope.id,
        "time": envelope.time.to_rfc3339(),
        "body": envelope.body(),
    });
    for content in &envelope.contents {
        let (key, value) = match content {
            Content::Body(_) | Content::ReceiptRequest => continue,
            Content::Reply { id, .. } => ("reply_to", json!(id)),
            Content::Correction { id } => ("replaces", json!(id)),
            Content::Retraction { id } => ("retracts", json!(id)),
            Content::Reactions { id, emojis } => ("reaction", json!({"to": id, "emojis": emojis})),
            Content::Receipt { id } => ("received", json!(id)),
            Content::Displayed { id } => ("displayed", json!(id)),
            Content::File(file) => (
                "file",
                json!({"name": file.name, "size": file.size, "media_type": file.media_type}),
            ),
            Content::Location(at) => ("location", json!({"lat": at.lat, "lon": at.lon})),
        };
        object[key] = value;
    }
    object
}

/// One line saying what a message is; `reference` names another message
/// by its envelope id.
pub fn describe(envelope: &Envelope, reference: &dyn Fn(&str) -> String) -> String {
    let mut parts = Vec::new();
    for content in &envelope.contents {
        match content {
            Content::Reply { id, .. } => parts.push(format!("(reply to {})", reference(id))),
            Content::Correction { id } => parts.push(format!("(edit of {})", reference(id))),
            Content::Retraction { id } => parts.push(format!("(retracted {})", reference(id))),
            Content::Reactions { id, emojis } if emojis.is_empty() => {
                parts.push(format!("took back the reactions to {}", reference(id)))
            }
            Content::Reactions { id, emojis } => {
                parts.push(format!("reacted {} to {}", emojis.join(" "), reference(id)))
            }
            Content::Receipt { id } => parts.push(format!("received {}", reference(id))),
            Content::Displayed { id } => parts.push(format!("read up to {}", reference(id))),
            Content::File(file) => parts.push(format!(
                "sent the file {} ({} bytes; `tern file get {}`)",
                file.name, file.size, envelope.id
            )),
            Content::Location(at) => parts.push(format!("is at {}, {}", at.lat, at.lon)),
            Content::Body(_) | Content::ReceiptRequest => {}
        }
    }
    if let Some(body) = envelope.body() {
        parts.push(body.to_owned());
    }
    parts.join(" ")
}

/// A message named by the start of its envelope id.
pub fn short_id(id: &str) -> String {
    format!("message {}", id.get(..8).unwrap_or(id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
