//! `tern-e2ee`: the client core of Tern's end-to-end encryption.
//!
//! - [`wire`]: the XML elements of Tern's namespace `urn:tern:mls:0` (MLS
//!   payloads, key directory, device lists, hub operations). The server
//!   uses these too; the module holds no client state.

#![forbid(unsafe_code)]

pub mod wire;
