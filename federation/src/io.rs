//! The byte transport under an XML stream (c2s in `tern-server`, s2s
//! here): TCP or TLS behind one boxed type, buffered, with a per-stanza
//! size budget.
//!
//! The XML parser reads through [`LimitedIo`], which counts the bytes it
//! consumes. The session resets the count after each complete stanza
//! ([`StanzaBudget::reset`]); once a single stanza has consumed more than
//! the limit, reads fail with [`StanzaTooLarge`] and the session closes the
//! stream with `policy-violation`, without buffering the rest.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// Anything an XML stream can run over (TCP, TLS, or a test pipe).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A boxed transport.
pub type BoxedTransport = Box<dyn Transport>;

/// The I/O type of every XML stream. Reads are buffered; writes are not,
/// because the XML stream already serialises whole stanzas into its own
/// buffer before writing.
pub type StreamIo<T = BoxedTransport> = LimitedIo<BufReader<T>>;

/// Read buffer per connection.
pub const READ_BUFFER: usize = 4096;

/// Wraps a transport for a new (or restarted after TLS) XML stream.
pub fn stream_io<T: AsyncRead>(
    transport: T,
    max_stanza_bytes: usize,
) -> (StreamIo<T>, StanzaBudget) {
    LimitedIo::new(
        BufReader::with_capacity(READ_BUFFER, transport),
        max_stanza_bytes,
    )
}

/// The error a read returns once a stanza is over the size limit.
#[derive(Debug, thiserror::Error)]
#[error("stanza larger than {limit} bytes")]
pub struct StanzaTooLarge {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// Handle on the byte count of the stanza being read.
#[derive(Debug, Clone)]
pub struct StanzaBudget {
    consumed: Arc<AtomicUsize>,
}

impl StanzaBudget {
    /// Starts counting the next stanza from zero.
    pub fn reset(&self) {
        self.consumed.store(0, Ordering::Relaxed);
    }
}

/// Whether an I/O error is the size limit tripping.
pub fn is_stanza_too_large(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<StanzaTooLarge>())
}

/// A buffered reader/writer that refuses to read past a byte budget.
#[derive(Debug)]
pub struct LimitedIo<T> {
    inner: T,
    consumed: Arc<AtomicUsize>,
    limit: usize,
}

impl<T> LimitedIo<T> {
    /// Wraps `inner`, allowing `limit` bytes between two resets.
    pub fn new(inner: T, limit: usize) -> (Self, StanzaBudget) {
        let consumed = Arc::new(AtomicUsize::new(0));
        let budget = StanzaBudget {
            consumed: consumed.clone(),
        };
        (
            Self {
                inner,
                consumed,
                limit,
            },
            budget,
        )
    }

    /// Returns the wrapped transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncBufRead + Unpin> AsyncBufRead for LimitedIo<T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.consumed.load(Ordering::Relaxed) > this.limit {
            return Poll::Ready(Err(io::Error::other(StanzaTooLarge { limit: this.limit })));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.consumed.fetch_add(amt, Ordering::Relaxed);
        Pin::new(&mut this.inner).consume(amt)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LimitedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.consumed.load(Ordering::Relaxed) > this.limit {
            return Poll::Ready(Err(io::Error::other(StanzaTooLarge { limit: this.limit })));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.consumed
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LimitedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    #[tokio::test]
    async fn refuses_reads_past_the_budget_until_reset() {
        let data: &[u8] = b"0123456789";
        let (mut io, budget) = LimitedIo::new(tokio::io::BufReader::with_capacity(4, data), 5);
        let mut line = Vec::new();
        let err = io.read_until(b'\n', &mut line).await.unwrap_err();
        assert!(is_stanza_too_large(&err));
        budget.reset();
        assert!(io.fill_buf().await.is_ok());
    }
}
