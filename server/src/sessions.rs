//! The registry of connected client sessions: who is online under which
//! resource, with what presence, and the channel to reach each session.
//!
//! Locks are held only for map operations, never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use minidom::Element;
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use crate::session_queue::{queue, QueueReceiver, QueueSender, TrySendError};
use crate::stanza::approx_len;

/// Stanzas a session may have queued before it counts as stuck.
pub const SESSION_QUEUE: usize = 4096;

/// Bytes a session may have queued (and, separately, written and not
/// acknowledged) before it counts as stuck, by default
/// (`limits.session_buffer_bytes`).
pub const DEFAULT_SESSION_BUFFER: usize = 256 * 1024;

/// What other parts of the server send to a session.
#[derive(Debug)]
pub enum Outbound {
    /// Write this stanza to the client. (Boxed: every session's queue
    /// allocates its first block of slots up front.)
    Stanza(Box<Element>),
    /// Write this answer of the server to the client's own request (not
    /// subject to the client's blocklist).
    Reply(Box<Element>),
    /// Close the stream with this stream error. (Boxed too: the rare
    /// case should not size every slot.)
    Close(Box<(StreamCondition, &'static str)>),
}

impl Outbound {
    /// The stanza to write, if it is one.
    pub fn into_stanza(self) -> Option<Element> {
        match self {
            Outbound::Stanza(stanza) | Outbound::Reply(stanza) => Some(*stanza),
            Outbound::Close(..) => None,
        }
    }
}

/// The sending half to one session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Unique id, to tell a session from its replacement.
    pub id: u64,
    tx: QueueSender<Outbound>,
}

impl SessionHandle {
    /// Queues a stanza for the client, as far as it goes: when the
    /// session's queue is full the stanza is dropped (false). For what
    /// may be lost that way (presence, pushes, copies kept elsewhere); a
    /// message uses [`SessionHandle::deliver`].
    pub fn send(&self, stanza: Element) -> bool {
        self.deliver(stanza).is_ok()
    }

    /// Queues a stanza for the client, or gives it back when the
    /// session's queue is full (its client reads slower than stanzas
    /// come) or the session is gone, for the caller to keep it elsewhere
    /// (offline storage, which the session delivers once its queue has
    /// drained) or refuse it. A client that stops reading altogether is
    /// closed by the write deadline (`limits.write_timeout_secs`).
    pub fn deliver(&self, stanza: Element) -> Result<(), Element> {
        self.queue(stanza)
    }

    /// Queues the server's answer to the client's own request, past the
    /// queue's bounds: the session writes what is queued before it reads
    /// the client's next request, so what one request brings is all that
    /// can wait this way (a page of the archive, say).
    pub fn reply(&self, stanza: Element) -> bool {
        self.tx
            .force_send(Outbound::Reply(Box::new(stanza)))
            .is_ok()
    }

    /// As [`SessionHandle::reply`], for stanzas that answer the client's
    /// request but are not replies (archive results), subject to its
    /// blocklist like any stanza.
    pub fn answer(&self, stanza: Element) -> bool {
        self.tx
            .force_send(Outbound::Stanza(Box::new(stanza)))
            .is_ok()
    }

    fn queue(&self, stanza: Element) -> Result<(), Element> {
        let bytes = approx_len(&stanza);
        let refused = match self.tx.try_send(Outbound::Stanza(Box::new(stanza)), bytes) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(outbound)) => {
                tracing::debug!(session = self.id, "session queue full");
                outbound
            }
            Err(TrySendError::Closed(outbound)) => outbound,
        };
        match refused {
            Outbound::Stanza(stanza) | Outbound::Reply(stanza) => Err(*stanza),
            Outbound::Close(_) => unreachable!("queue() sends stanzas only"),
        }
    }

    /// Asks the session to close its stream with a stream error (queued
    /// even when the queue is full).
    pub fn close(&self, condition: StreamCondition, text: &'static str) {
        let _ = self
            .tx
            .force_send(Outbound::Close(Box::new((condition, text))));
        // A session stuck writing reads its queue no more: wake it.
        self.tx.request_close();
    }
}

/// One connected resource of a user, as others see it.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource part of the full JID.
    pub resource: String,
    /// How to reach it.
    pub handle: SessionHandle,
    /// Its current available presence (stamped with its full JID), if it
    /// sent one; `None` while it has not or after it went unavailable.
    /// Shared, so that snapshots of the registry stay cheap.
    pub presence: Option<Arc<Element>>,
    /// Its presence priority.
    pub priority: i8,
    /// Whether it asked for the roster (and so gets roster pushes).
    pub roster_interested: bool,
    /// Whether it enabled message carbons (XEP-0280).
    pub carbons: bool,
}

impl Resource {
    /// Whether it is available (sent available presence).
    pub fn available(&self) -> bool {
        self.presence.is_some()
    }
}

/// All sessions, by user name.
#[derive(Debug)]
pub struct Sessions {
    users: RwLock<HashMap<String, Vec<Resource>>>,
    next_id: AtomicU64,
    /// Bytes each session's queue holds at most.
    queue_bytes: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_SESSION_BUFFER)
    }
}

impl Sessions {
    /// No sessions yet; each session's queue holds at most `queue_bytes`.
    pub fn new(queue_bytes: usize) -> Self {
        Self {
            users: RwLock::default(),
            next_id: AtomicU64::new(0),
            queue_bytes,
        }
    }

    /// Registers a new session for `username/resource`. Returns its handle,
    /// its receiving channel, and the session it replaces (a resource
    /// conflict: the older session is to be closed).
    pub fn bind(
        &self,
        username: &str,
        resource: &str,
    ) -> (
        SessionHandle,
        QueueReceiver<Outbound>,
        Option<SessionHandle>,
    ) {
        let (tx, rx) = queue(SESSION_QUEUE, self.queue_bytes);
        let handle = SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
        };
        let entry = Resource {
            resource: resource.to_owned(),
            handle: handle.clone(),
            presence: None,
            priority: 0,
            roster_interested: false,
            carbons: false,
        };
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let list = users.entry(username.to_owned()).or_default();
        let replaced = match list.iter_mut().find(|r| r.resource == resource) {
            Some(old) => Some(std::mem::replace(old, entry).handle),
            None => {
                list.push(entry);
                None
            }
        };
        (handle, rx, replaced)
    }

    /// Removes a session if it is still the one registered (it may have
    /// been replaced). Returns whether it was.
    pub fn unbind(&self, username: &str, resource: &str, id: u64) -> bool {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let Some(list) = users.get_mut(username) else {
            return false;
        };
        let before = list.len();
        list.retain(|r| !(r.resource == resource && r.handle.id == id));
        let removed = list.len() != before;
        if list.is_empty() {
            users.remove(username);
        }
        removed
    }

    /// A snapshot of a user's connected resources.
    pub fn resources(&self, username: &str) -> Vec<Resource> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.get(username).cloned().unwrap_or_default()
    }

    /// One connected resource.
    pub fn resource(&self, username: &str, resource: &str) -> Option<Resource> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(username)?
            .iter()
            .find(|r| r.resource == resource)
            .cloned()
    }

    /// Records a session's presence (`None`: unavailable) and priority.
    pub fn set_presence(&self, username: &str, id: u64, presence: Option<Element>, priority: i8) {
        self.update(username, id, |r| {
            r.presence = presence.map(Arc::new);
            r.priority = priority;
        });
    }

    /// Marks a session as interested in roster pushes.
    pub fn set_roster_interested(&self, username: &str, id: u64) {
        self.update(username, id, |r| r.roster_interested = true);
    }

    /// Turns message carbons on or off for a session.
    pub fn set_carbons(&self, username: &str, id: u64, enabled: bool) {
        self.update(username, id, |r| r.carbons = enabled);
    }

    /// Whether any session of `username` enabled message carbons.
    pub fn any_carbons(&self, username: &str) -> bool {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users
            .get(username)
            .is_some_and(|list| list.iter().any(|r| r.carbons))
    }

    /// Every session of every user.
    pub fn all(&self) -> Vec<SessionHandle> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.values().flatten().map(|r| r.handle.clone()).collect()
    }

    /// How many sessions are connected.
    pub fn count(&self) -> usize {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.values().map(Vec::len).sum()
    }

    fn update(&self, username: &str, id: u64, change: impl FnOnce(&mut Resource)) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = users
            .get_mut(username)
            .and_then(|l| l.iter_mut().find(|r| r.handle.id == id))
        {
            change(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conflicting_resource_replaces_the_old_session() {
        let sessions = Sessions::default();
        let (a, _rx_a, replaced) = sessions.bind("alice", "phone");
        assert!(replaced.is_none());
        let (b, _rx_b, replaced) = sessions.bind("alice", "phone");
        assert_eq!(replaced.unwrap().id, a.id);
        assert!(!sessions.unbind("alice", "phone", a.id));
        assert_eq!(sessions.resources("alice").len(), 1);
        assert!(sessions.unbind("alice", "phone", b.id));
        assert_eq!(sessions.count(), 0);
    }
}

#[cfg(test)]
mod size {
    /// Every session's queue allocates its first block of 32 slots up
    /// front: a slot is two words.
    #[test]
    fn an_outbound_slot_is_two_words() {
        assert_eq!(
            std::mem::size_of::<super::Outbound>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
