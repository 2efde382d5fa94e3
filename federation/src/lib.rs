//! `tern-federation`: XMPP server-to-server streams for `tern-server`.
//!
//! - [`discovery`](tern_e2ee::discovery): peers are found through
//!   `_xmpps-server._tcp` / `_xmpp-server._tcp` SRV records (one resolver
//!   kept for the life of the server, so answers are cached for their TTL).
//! - [`outbound`]: one authenticated stream per (local domain, remote
//!   domain) pair, STARTTLS or direct TLS, the peer's certificate verified
//!   for its domain; authenticated by SASL EXTERNAL (XEP-0178) when the
//!   peer offers it, otherwise by dialback (XEP-0220).
//! - [`link`]: each pair's worker drains a durable queue ([`QueueStore`])
//!   in order, with XEP-0198 acknowledgements when the peer offers them,
//!   retries with exponential backoff, bounces what waited too long and
//!   closes idle streams.
//! - [`inbound`]: accepted streams require TLS, authenticate the peer by
//!   certificate or by dialback verification against its authoritative
//!   server, and hand the stanzas whose `from` is the authenticated domain
//!   to the [`Host`] (`jabber:server` rewritten to `jabber:client`).
//!
//! The server crate implements [`Host`] and [`QueueStore`]; this crate
//! never depends on it.

#![forbid(unsafe_code)]

pub mod dialback;
pub mod host;
pub mod inbound;
pub mod io;
pub mod link;
pub mod outbound;
pub mod s2s_io;
pub mod settings;
pub mod status;
pub mod tls;
pub mod xml;
pub mod xml_reader;
pub mod xml_text;

mod federation;

pub use federation::{Federation, SendError};
pub use host::{Host, Pair, QueueError, QueueStore, Queued};
pub use settings::{Policy, Settings};
pub use status::{AuthMethod, LinkState, LinkStatus, Status};
pub use tern_e2ee::discovery::TlsMode;
pub use tls::{TlsConfigs, TlsError};
