//! What federation needs from the server that uses it: somewhere to
//! deliver inbound stanzas and bounces ([`Host`]), and a durable queue of
//! outbound stanzas ([`QueueStore`]).

use futures::future::BoxFuture;
use minidom::Element;
use xmpp_parsers::stanza_error::DefinedCondition;

/// A (local domain, remote domain) pair: the unit of authentication and
/// of outbound streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Pair {
    /// A domain served here (the server's, its groups' or upload domain).
    pub local: String,
    /// The peer's domain.
    pub remote: String,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// The server behind federation.
pub trait Host: Send + Sync + 'static {
    /// Handles a stanza from an authenticated peer, in `jabber:client`
    /// with its `from` checked. Returns once it is handled (stored or
    /// delivered), so that acknowledgements to the peer mean something.
    fn deliver(&self, stanza: Element) -> BoxFuture<'_, ()>;

    /// A mark for everything [`Host::deliver`] handled so far, to wait
    /// for with [`Host::durable`].
    fn durable_mark(&self) -> u64;

    /// Returns once every durable record that [`Host::deliver`] created
    /// before `mark` was taken is on disk (an archive written in group
    /// commits may lag): acknowledgements to the peer wait for it.
    fn durable(&self, mark: u64) -> BoxFuture<'_, ()>;

    /// Tells the local sender of `stanza` that it could not be delivered
    /// (the server builds the error reply; errors are never bounced).
    fn bounce(
        &self,
        stanza: Element,
        condition: DefinedCondition,
        text: String,
    ) -> BoxFuture<'_, ()>;
}

/// A queue failure (the server's storage).
#[derive(Debug, thiserror::Error)]
#[error("federation queue: {0}")]
pub struct QueueError(pub String);

/// One stanza waiting for a pair's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Increasing with the order of [`QueueStore::push`].
    pub id: i64,
    /// The stanza, serialised as it goes to the peer (in `jabber:server`;
    /// rows queued by earlier versions are in `jabber:client`).
    pub stanza: String,
    /// When it was queued, seconds since the Unix epoch.
    pub queued_at: i64,
}

/// The durable per-pair queue of outbound stanzas: written before
/// [`crate::Federation::send`] returns, removed once the peer has the
/// stanza (acknowledged, or written when the peer cannot acknowledge).
pub trait QueueStore: Send + Sync + 'static {
    /// Appends a stanza; returns its id.
    fn push(&self, pair: Pair, stanza: String) -> BoxFuture<'_, Result<i64, QueueError>>;

    /// Up to `limit` stanzas of `pair` with an id above `after`, oldest
    /// first.
    fn pending(
        &self,
        pair: Pair,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Queued>, QueueError>>;

    /// Removes stanzas (delivered or bounced).
    fn remove(&self, ids: Vec<i64>) -> BoxFuture<'_, Result<(), QueueError>>;

    /// How many stanzas wait for `pair`.
    fn count(&self, pair: Pair) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// The pairs with stanzas waiting (to resume them after a restart).
    fn pairs(&self) -> BoxFuture<'_, Result<Vec<Pair>, QueueError>>;
}
