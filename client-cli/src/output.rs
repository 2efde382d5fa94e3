//! What `tern` prints: lines for people, or one JSON object per line
//! (`--json`) for scripts.

use serde_json::{json, Value};
use tern_e2ee::envelope::Envelope;
use tern_e2ee::store::StoredMessage;
use tern_e2ee::{Device, Event};

/// The output format.
pub struct Output {
    json: bool,
}

impl Output {
    /// Lines for people, or JSON.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    fn print(&self, object: Value, line: impl FnOnce() -> String) {
        if self.json {
            println!("{object}");
        } else {
            println!("{}", line());
        }
    }

    /// After `account login`.
    pub fn logged_in(&self, device: &Device, uploaded: u32) {
        self.print(
            json!({
                "type": "device",
                "jid": device.name().jid.as_str(),
                "device": device.name().device.as_str(),
                "fingerprint": device.fingerprint(),
                "key_packages_uploaded": uploaded,
            }),
            || {
                format!(
                    "logged in as {} (device {}, fingerprint {})",
                    device.name().jid,
                    device.name().device,
                    device.fingerprint()
                )
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

    /// A contact.
    pub fn contact(&self, jid: &str, name: Option<&str>) {
        self.print(
            json!({"type": "contact", "jid": jid, "name": name}),
            || match name {
                Some(name) => format!("{jid}  {name}"),
                None => jid.to_owned(),
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
                || format!("[{}] {}", sender.jid, describe(envelope)),
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
            Event::Removed { .. } => self.print(json!({"type": "removed"}), || {
                "you were removed from a conversation".to_owned()
            }),
            Event::Rejected { seq, reason, .. } => self.print(
                json!({"type": "rejected", "seq": seq, "reason": reason}),
                || format!("a message could not be read: {reason}"),
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
            || format!("[{sender}] {}", describe(&message.envelope)),
        );
    }
}

fn message_json(conversation: &str, seq: Option<u64>, sender: &str, envelope: &Envelope) -> Value {
    json!({
        "type": "message",
        "conversation": conversation,
        "seq": seq,
        "from": envelope.from.as_str(),
        "device": sender,
        "id": envelope.id,
        "time": envelope.time.to_rfc3339(),
        "body": envelope.body(),
    })
}

/// One line saying what a message is.
fn describe(envelope: &Envelope) -> String {
    envelope
        .body()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("({} content elements)", envelope.contents.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
