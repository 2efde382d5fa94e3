//! Client-to-server streams: the transport, negotiation (a library API
//! shared with the bridge), per-IP limits, and the session loop.

pub mod io;
pub mod limits;
pub mod negotiation;
pub(crate) mod session;
pub mod stanza_stream;
pub mod stream_management;
pub mod tls_stream;
pub mod websocket;
