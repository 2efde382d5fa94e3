//! `tern-xmpp`: the XMPP stream layer under every Tern crate.
//!
//! It starts with what must hold for every XML stream Tern reads, whoever
//! parses it: [`depth`] refuses nesting deeper than [`MAX_DEPTH`] in the
//! bytes, before a recursive parser or tree builder sees them. The stream
//! readers, writers and SASL of the other crates move here as the stream
//! layer is unified; the crate depends on nothing of Tern's. [`private`]
//! keeps what every Tern program stores (keys, secrets, history) readable
//! by its owner only.

#![forbid(unsafe_code)]

pub mod depth;
pub mod private;
pub mod sm;

pub use depth::{check_document, is_too_deep, DepthGuard, DepthLimited, TooDeep};

/// Deepest nesting of elements accepted inside one stanza (the stream
/// element not counted).
pub const MAX_DEPTH: u32 = 128;
