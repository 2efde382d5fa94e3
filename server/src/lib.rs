//! `tern-server`, the Tern home server: XMPP client-to-server streams with
//! TLS and SASL, accounts, rosters, presence, message routing, PEP, the
//! MLS key directory and group hub, and storage that only ever holds
//! ciphertext.
//!
//! The crate is a library too: the c2s negotiation ([`c2s::negotiation`])
//! is shared with `tern-bridge`, and the integration tests start the
//! binary built from [`RunningServer`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod c2s;
pub mod config;
pub mod expiry;
#[doc(hidden)]
pub mod fuzzing;
pub mod https;
pub mod hub;
pub mod modules;
pub mod muc;
pub mod router;
pub mod s2s;
pub mod sasl;
pub mod server;
pub mod session_queue;
pub mod sessions;
pub mod stanza;
pub mod storage;
pub mod tls;
pub mod upload;

pub use c2s::negotiation::{
    negotiate, AccountBackend, C2sSettings, C2sStream, NegotiationError, TlsMode,
};
pub use config::{Config, ConfigError, PlaintextPolicy, Registration};
pub use server::{RunningServer, Server, StartError};
pub use storage::{Storage, StorageError};
