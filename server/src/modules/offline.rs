//! Offline messages (XEP-0160): messages for a user with no available
//! resource are stored, durably, with a XEP-0203 delay stamp, and handed
//! to the first resource that sends initial presence with a non-negative
//! priority. Only end-to-end encrypted messages are ever stored.

use minidom::Element;
use xmpp_parsers::date::DateTime;
use xmpp_parsers::delay::Delay;

use crate::server::Server;
use crate::storage::{OfflineMessage, StorageError};

/// Disco features of this module.
pub const FEATURES: &[&str] = &["msgoffline"];

/// Why a message could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The user's offline queue is full.
    #[error("offline storage of the recipient is full")]
    QueueFull,
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Stores `message` for `username`, stamped with when the server got it.
/// Returns once it is on disk.
pub async fn store(
    server: &Server,
    username: &str,
    mut message: Element,
) -> Result<(), OfflineError> {
    let delay = Delay {
        from: Some(jid::Jid::from(server.domain_jid())),
        stamp: DateTime(chrono::Utc::now().fixed_offset()),
        data: Some("Offline storage".to_owned()),
    };
    // Strangers (senders not in the roster) share part of the queue, and
    // no sender takes more than its share: friends are never crowded out.
    let sender = message
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|f| f.to_bare().to_string())
        .unwrap_or_default();
    // A contact is one the user put in the roster: a subscription request
    // alone leaves an unlisted row.
    let from_contact = sender.is_empty()
        || sender == server.config.domain
        || server
            .storage
            .roster_item(username, &sender)
            .await?
            .is_some_and(|item| item.listed);
    message.append_child(delay.into());
    let xml = tern_federation::xml_text::to_text(&message);
    let limits = &server.config.limits;
    let quota = crate::storage::OfflineQuota {
        total: limits.max_offline_messages,
        per_sender: limits.max_offline_per_sender,
        strangers: limits.max_offline_from_strangers,
    };
    if server
        .storage
        .store_offline(username, &sender, from_contact, &xml, quota)
        .await?
    {
        Ok(())
    } else {
        Err(OfflineError::QueueFull)
    }
}

/// Parses stored offline messages back into stanzas, skipping (and
/// logging) any that no longer parse.
pub fn parse_stored(messages: &[OfflineMessage]) -> Vec<Element> {
    messages
        .iter()
        .filter_map(|m| match m.stanza.parse::<Element>() {
            Ok(el) => Some(el),
            Err(e) => {
                tracing::error!(id = m.id, "dropping unparsable offline message: {e}");
                None
            }
        })
        .collect()
}
