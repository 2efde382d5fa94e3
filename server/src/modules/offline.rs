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
    message.append_child(delay.into());
    let xml = tern_federation::xml_text::to_text(&message);
    let max = server.config.limits.max_offline_messages;
    if server.storage.store_offline(username, &xml, max).await? {
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
