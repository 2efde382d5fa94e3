//! Stream Management (XEP-0198, `urn:xmpp:sm:3`): acknowledgements both
//! ways and resumption of a session whose connection dropped.
//!
//! A session that enabled resumption outlives its connection for
//! `limits.resumption_timeout_secs`: it stays bound and available, keeps
//! what was sent to it, and a new connection that authenticates as the
//! same user and sends `<resume previd h/>` takes it over ([`Resumptions`]
//! finds the session; the negotiation hands its stream over). The stanzas
//! the client had not acknowledged are sent again. A session that is not
//! resumed in time ends as any other, and what it never had acknowledged
//! goes to offline storage or back to its sender.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use minidom::Element;
use rand::Rng;
use tokio::sync::mpsc;

use super::io::StanzaBudget;
use super::stanza_stream::StanzaStream;
use crate::stanza::set_attr;

/// The Stream Management namespace.
pub const NS: &str = "urn:xmpp:sm:3";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// A new connection's request to take over a session (`<resume/>`).
pub struct ResumeRequest {
    /// The authenticated user.
    pub username: String,
    /// The stream management id it names.
    pub previd: String,
    /// How many stanzas from the session the client says it handled.
    pub h: u32,
    /// The new, authenticated stream.
    pub stream: StanzaStream,
    /// Its stanza size budget.
    pub budget: StanzaBudget,
    /// The new connection's address.
    pub peer: SocketAddr,
}

impl std::fmt::Debug for ResumeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeRequest")
            .field("username", &self.username)
            .field("previd", &self.previd)
            .field("h", &self.h)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The resumable sessions, by stream management id.
#[derive(Debug, Default)]
pub struct Resumptions {
    sessions: Mutex<HashMap<String, (String, mpsc::Sender<ResumeRequest>)>>,
}

impl Resumptions {
    /// Registers a resumable session of `username`; its id and the
    /// receiver of takeover requests.
    pub fn register(&self, username: &str) -> (String, mpsc::Receiver<ResumeRequest>) {
        let id = new_id();
        let (tx, rx) = mpsc::channel(1);
        self.lock().insert(id.clone(), (username.to_owned(), tx));
        (id, rx)
    }

    /// Forgets a session (it ended).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Hands `request` to its session. When there is no such session of
    /// that user, or it just ended, the request comes back.
    pub async fn take_over(&self, request: ResumeRequest) -> Result<(), ResumeRequest> {
        let session = self
            .lock()
            .get(&request.previd)
            .and_then(|(user, tx)| (*user == request.username).then(|| tx.clone()));
        match session {
            Some(tx) => tx.send(request).await.map_err(|e| e.0),
            None => Err(request),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, mpsc::Sender<ResumeRequest>)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The acknowledgement state of one session once the client enabled
/// stream management.
#[derive(Debug)]
pub struct Acks {
    /// The id to resume with, if resumption was enabled.
    pub resume_id: Option<String>,
    /// Stanzas received from the client (its `h`).
    pub handled: u32,
    /// Stanzas sent and not yet acknowledged, oldest first, with their
    /// approximate sizes.
    unacked: VecDeque<(Element, usize)>,
    /// The bytes of `unacked`.
    unacked_bytes: usize,
    /// How many stanzas the client acknowledged so far.
    acked: u32,
    /// Whether an `<r/>` is outstanding.
    requested: bool,
    /// Since when the outstanding `<r/>` has waited.
    requested_at: Option<std::time::Instant>,
}

/// What the client's `<a h/>` said.
#[derive(Debug, PartialEq, Eq)]
pub enum AckError {
    /// It acknowledged stanzas never sent (XEP-0198 §4: `undefined-condition`).
    TooMany,
}

impl Acks {
    /// Fresh state; `resume_id` when the session may be resumed.
    pub fn new(resume_id: Option<String>) -> Self {
        Self {
            resume_id,
            handled: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            acked: 0,
            requested: false,
            requested_at: None,
        }
    }

    /// Counts a stanza received from the client.
    pub fn received(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// Keeps a copy of a stanza sent to the client until it is
    /// acknowledged.
    pub fn sent(&mut self, stanza: &Element) {
        let bytes = crate::stanza::approx_len(stanza);
        self.unacked_bytes += bytes;
        self.unacked.push_back((stanza.clone(), bytes));
    }

    /// How many sent stanzas wait for an acknowledgement.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }

    /// About how many bytes the sent stanzas waiting for an
    /// acknowledgement take.
    pub fn pending_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Whether to ask the client for an acknowledgement now (once per
    /// burst: not while a request is outstanding).
    pub fn should_request(&mut self) -> bool {
        if self.requested || self.unacked.is_empty() {
            return false;
        }
        self.requested = true;
        self.requested_at = Some(std::time::Instant::now());
        true
    }

    /// How long the outstanding `<r/>` has waited for its answer.
    pub fn unanswered_for(&self) -> Option<std::time::Duration> {
        self.requested_at.map(|at| at.elapsed())
    }

    /// Applies the client's count `h` of stanzas it handled.
    pub fn acknowledge(&mut self, h: u32) -> Result<(), AckError> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(AckError::TooMany);
        }
        for (_, bytes) in self.unacked.drain(..newly) {
            self.unacked_bytes -= bytes;
        }
        self.acked = h;
        self.requested = false;
        self.requested_at = None;
        Ok(())
    }

    /// The stanzas to send again after a resumption.
    pub fn unacked(&self) -> impl Iterator<Item = &Element> {
        self.unacked.iter().map(|(stanza, _)| stanza)
    }

    /// Takes the stanzas never acknowledged (the session ends).
    pub fn take_unacked(&mut self) -> Vec<Element> {
        self.unacked_bytes = 0;
        self.unacked.drain(..).map(|(stanza, _)| stanza).collect()
    }

    /// Forgets the outstanding request (a new connection took over).
    pub fn reset_request(&mut self) {
        self.requested = false;
        self.requested_at = None;
    }
}

/// `<enabled/>`, with the resumption id and the longest wait in seconds.
pub fn enabled(resume: Option<(&str, u64)>) -> Element {
    let mut enabled = Element::bare("enabled", NS);
    if let Some((id, max)) = resume {
        set_attr(&mut enabled, "id", id);
        set_attr(&mut enabled, "resume", "true");
        set_attr(&mut enabled, "max", max.to_string());
    }
    enabled
}

/// `<resumed/>` with our count of stanzas handled.
pub fn resumed(previd: &str, h: u32) -> Element {
    let mut resumed = Element::bare("resumed", NS);
    set_attr(&mut resumed, "previd", previd);
    set_attr(&mut resumed, "h", h.to_string());
    resumed
}

/// `<a h/>`.
pub fn ack(h: u32) -> Element {
    let mut ack = Element::bare("a", NS);
    set_attr(&mut ack, "h", h.to_string());
    ack
}

/// `<r/>`.
pub fn request() -> Element {
    Element::bare("r", NS)
}

/// `<failed/>` with a stanza error condition and, after a failed
/// resumption, our count `h` so the client knows what arrived.
pub fn failed(condition: &str, h: Option<u32>) -> Element {
    let mut failed = Element::builder("failed", NS)
        .append(Element::bare(condition, NS_STANZAS))
        .build();
    if let Some(h) = h {
        set_attr(&mut failed, "h", h.to_string());
    }
    failed
}

/// The `h` attribute of `<a/>` or `<resume/>`.
pub fn h_of(element: &Element) -> Option<u32> {
    element.attr("h")?.parse().ok()
}

/// Whether a top-level element counts as a stanza for `h`.
pub fn is_stanza(element: &Element) -> bool {
    element.ns() == crate::stanza::NS_CLIENT
        && matches!(element.name(), "message" | "presence" | "iq")
}

/// 128 random bits, hex.
fn new_id() -> String {
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_release_sent_stanzas() {
        let mut acks = Acks::new(None);
        let stanza: Element = "<message xmlns='jabber:client'/>".parse().expect("xml");
        for _ in 0..3 {
            acks.sent(&stanza);
        }
        assert!(acks.should_request());
        assert!(!acks.should_request(), "one request per burst");
        assert_eq!(acks.acknowledge(2), Ok(()));
        assert_eq!(acks.pending(), 1);
        assert_eq!(acks.acknowledge(2), Ok(()), "a repeated h is harmless");
        assert_eq!(acks.acknowledge(4), Err(AckError::TooMany));
        assert_eq!(acks.acknowledge(3), Ok(()));
        assert_eq!(acks.pending(), 0);
    }

    #[test]
    fn counters_wrap_around() {
        let mut acks = Acks::new(None);
        acks.acked = u32::MAX;
        let stanza: Element = "<iq xmlns='jabber:client'/>".parse().expect("xml");
        acks.sent(&stanza);
        acks.sent(&stanza);
        assert_eq!(acks.acknowledge(1), Ok(()));
        assert_eq!(acks.pending(), 0);
    }
}
