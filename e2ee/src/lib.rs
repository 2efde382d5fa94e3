//! `tern-e2ee`: the client core of Tern's end-to-end encryption.
//!
//! - [`wire`]: the XML elements of Tern's namespace `urn:tern:mls:0` (MLS
//!   payloads, key directory, device lists, hub operations). The server
//!   uses these too; the module holds no client state.
//! - [`identity`]: device ids, MLS credentials, fingerprints and safety
//!   numbers.
//! - [`envelope`]: the XEP-0420 envelope that carries every kind of
//!   content, padded to size buckets.
//! - [`device`]: one device's MLS client: signature key, credential, key
//!   packages.
//! - [`conversation`]: MLS groups on a device: create, add, remove, update,
//!   leave, join, send, and processing the hub's log in order.
//! - [`mls_storage`]: openmls' state as key/value rows written in the
//!   caller's transaction (the client store and the server's hub).
//! - [`store`]: the client's SQLite database (MLS state and the client's
//!   records in one transaction per operation).
//! - [`verify`]: checks of key packages and credentials (also the
//!   server's).
//! - [`error`]: typed errors of operations and of incoming messages.
//!
//! - [`connection`]: one client XML stream (direct TLS, SCRAM, bind).
//! - [`contacts`]: presence subscriptions and the server's roster.
//! - [`session`]: the networked client (tokio-xmpp): key directory, hub,
//!   catching up, events.

#![forbid(unsafe_code)]

pub mod connection;
pub mod contacts;
pub mod conversation;
pub mod device;
pub mod discovery;
pub mod envelope;
pub mod error;
pub mod files;
pub mod identity;
pub mod mls_storage;
pub mod session;
pub mod store;
pub mod transfer;
pub mod verify;
pub mod wire;

/// Files readable by their owner only (the bottom crate's helpers).
pub use tern_xmpp::private;

pub use conversation::{CommitOut, ConversationId, Incoming};
pub use device::{Device, CIPHERSUITE};
pub use error::{Error, ProcessError};
pub use session::{Event, Session, SessionError, SessionOptions};
pub use store::ClientStore;
