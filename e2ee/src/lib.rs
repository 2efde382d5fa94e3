//! `tern-e2ee`: the client core of Tern's end-to-end encryption.
//!
//! - [`wire`]: the XML elements of Tern's namespace `urn:tern:mls:0` (MLS
//!   payloads, key directory, device lists, hub operations). The server
//!   uses these too; the module holds no client state.
//! - [`identity`]: device ids, MLS credentials, fingerprints and safety
//!   numbers.
//! - [`envelope`]: the XEP-0420 envelope that carries every kind of
//!   content, padded to size buckets.

#![forbid(unsafe_code)]

pub mod conversation;
pub mod device;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod store;
pub mod wire;

pub use conversation::{CommitOut, ConversationId, Incoming};
pub use device::{Device, CIPHERSUITE};
pub use error::{Error, ProcessError};
pub use store::ClientStore;
