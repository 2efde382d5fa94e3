//! The byte transport under a c2s XML stream: the buffered, size-limited
//! I/O shared with federation's s2s streams ([`tern_federation::io`]).

pub use tern_federation::io::{
    is_stanza_too_large, stream_io as c2s_io, BoxedTransport, StanzaBudget, StreamIo as C2sIo,
};
