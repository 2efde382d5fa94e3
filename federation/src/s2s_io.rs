//! The transport of s2s streams: [`crate::io`]'s, writing dialback the
//! way every server reads it.
//!
//! XEP-0220 §2.1 has a server that supports dialback declare
//! `xmlns:db='jabber:server:dialback'` on its stream header and send
//! `<db:result/>` / `<db:verify/>` with that prefix; ejabberd ignores
//! dialback elements otherwise (Prosody takes either form). tokio-xmpp
//! writes stream headers itself and lets its XML writer pick namespace
//! prefixes, so [`DialbackPrefix`] edits the bytes on their way out: it
//! adds the declaration to each `<stream:stream` header and turns
//! `<result xmlns='jabber:server:dialback' …>…</result>` (and `verify`)
//! into `<db:result …>…</db:result>`. These byte sequences can only be
//! markup: in text and attribute values `<` is always escaped. Dialback
//! elements hold nothing but a key, and are written whole in one write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tern_xmpp::{depth, DepthLimited};

use crate::io::{stream_io, BoxedTransport, StanzaBudget, StreamIo};

/// The I/O type of every s2s XML stream. Reads pass a depth guard before
/// tokio-xmpp's recursive tree builder sees them: a peer nesting elements
/// thousands deep would otherwise overflow the stack and abort the server.
pub type S2sIo = StreamIo<DepthLimited<DialbackPrefix>>;

/// Wraps a transport for a new (or restarted) s2s XML stream.
pub fn s2s_io(transport: BoxedTransport, max_stanza_bytes: usize) -> (S2sIo, StanzaBudget) {
    let guarded = DepthLimited::new(DialbackPrefix::new(transport), depth::stream_limit());
    stream_io(guarded, max_stanza_bytes)
}

/// The transport under an s2s stream's I/O (to start TLS on it).
pub fn into_transport(io: S2sIo) -> BoxedTransport {
    io.into_inner().into_inner().into_inner().inner
}

const STREAM_TAG: &[u8] = b"<stream:stream";
const DECLARATION: &[u8] = b" xmlns:db='jabber:server:dialback'";
/// A dialback element as the XML writer writes it, and with the prefix.
struct Prefixed {
    open: &'static [u8],
    prefixed_open: &'static [u8],
    close: &'static [u8],
    prefixed_close: &'static [u8],
}

const DIALBACK_ELEMENTS: [Prefixed; 2] = [
    Prefixed {
        open: b"<result xmlns='jabber:server:dialback'",
        prefixed_open: b"<db:result",
        close: b"</result>",
        prefixed_close: b"</db:result>",
    },
    Prefixed {
        open: b"<verify xmlns='jabber:server:dialback'",
        prefixed_open: b"<db:verify",
        close: b"</verify>",
        prefixed_close: b"</db:verify>",
    },
];

/// A transport that writes stream headers and dialback elements with the
/// `db` prefix (see the module documentation).
pub struct DialbackPrefix {
    inner: BoxedTransport,
    /// Rewritten bytes the transport has not taken yet.
    pending: Vec<u8>,
}

impl DialbackPrefix {
    /// Wraps `inner`.
    pub fn new(inner: BoxedTransport) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `bytes` with the dialback prefix applied, or `None` when they hold no
/// stream header and no dialback element.
fn with_dialback_prefix(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = find(bytes, STREAM_TAG);
    let element = DIALBACK_ELEMENTS
        .iter()
        .any(|element| find(bytes, element.open).is_some());
    if header.is_none() && !element {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + DECLARATION.len());
    let mut rest = bytes;
    if let Some(at) = header {
        let end = at + STREAM_TAG.len();
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(DECLARATION);
        rest = &rest[end..];
    }
    loop {
        let next = DIALBACK_ELEMENTS
            .iter()
            .filter_map(|element| find(rest, element.open).map(|at| (at, element)))
            .min_by_key(|(at, _)| *at);
        let Some((at, element)) = next else {
            out.extend_from_slice(rest);
            return Some(out);
        };
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(element.prefixed_open);
        rest = &rest[at + element.open.len()..];
        // Attributes, then either `/>` or the content (a key, or an
        // `<error/>`, which holds no dialback element) and the end tag.
        let tag_end = rest.iter().position(|&b| b == b'>').unwrap_or(rest.len());
        let empty = tag_end > 0 && rest[tag_end - 1] == b'/';
        if let (false, Some(close)) = (empty, find(rest, element.close)) {
            out.extend_from_slice(&rest[..close]);
            out.extend_from_slice(element.prefixed_close);
            rest = &rest[close + element.close.len()..];
        }
    }
}

impl AsyncWrite for DialbackPrefix {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let Some(rewritten) = with_dialback_prefix(buf) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        this.pending = rewritten;
        // All of `buf` is taken: what the transport does not take now goes
        // out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for DialbackPrefix {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_xmpp::xmlstream::{initiate_stream, StreamHeader};

    #[test]
    fn dialback_elements_get_the_prefix_and_nothing_else_changes() {
        let written = b"<message xmlns='jabber:server' to='x'><body>&lt;verify</body></message>\
            <verify xmlns='jabber:server:dialback' from='a' id='1' to='b'>ab12</verify>\
            <result xmlns='jabber:server:dialback' from='a' to='b' type='valid'/>\
            <result xmlns='jabber:server:dialback' from='a' to='b' type='error'><error type='wait'>\
            <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></result>\
            <iq><verify xmlns='urn:other'>x</verify></iq>";
        let rewritten = with_dialback_prefix(written).expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            "<message xmlns='jabber:server' to='x'><body>&lt;verify</body></message>\
             <db:verify from='a' id='1' to='b'>ab12</db:verify>\
             <db:result from='a' to='b' type='valid'/>\
             <db:result from='a' to='b' type='error'><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>\
             <iq><verify xmlns='urn:other'>x</verify></iq>"
        );
        assert!(with_dialback_prefix(b"<message><body>hi</body></message>").is_none());
    }

    #[tokio::test]
    async fn headers_declare_the_prefix_and_dialback_elements_use_it() {
        let (ours, mut theirs) = tokio::io::duplex(65536);
        let (io, _budget) = s2s_io(Box::new(ours), 10_000);
        let header = StreamHeader {
            from: Some("a.test".into()),
            to: Some("b.test".into()),
            id: None,
        };
        let peer = tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            let n = theirs.read(&mut buf).await.expect("header");
            let header = String::from_utf8_lossy(&buf[..n]).into_owned();
            theirs
                .write_all(
                    b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>\
                      <stream:features/>",
                )
                .await
                .expect("answer");
            let n = theirs.read(&mut buf).await.expect("element");
            (header, String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        let timeouts = crate::xml::timeouts(std::time::Duration::from_secs(5));
        let pending = initiate_stream(io, crate::xml::NS_SERVER, header, timeouts)
            .await
            .expect("stream");
        let (_, mut stream) = pending
            .recv_features::<minidom::Element>()
            .await
            .expect("features");
        let request = crate::dialback::verify_request("a.test", "b.test", "s1", "ab12");
        stream.send(&request).await.expect("send");
        let (header, element) = peer.await.expect("peer");
        assert!(
            header.contains("<stream:stream xmlns:db='jabber:server:dialback'"),
            "{header}"
        );
        assert!(element.starts_with("<db:verify "), "{element}");
        assert!(element.ends_with(">ab12</db:verify>"), "{element}");
    }
}
