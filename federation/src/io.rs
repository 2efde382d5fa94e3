//! The byte transport under an XML stream (c2s in `tern-server`, s2s
//! here): TCP or TLS behind one boxed type, buffered, with a per-stanza
//! size budget.
//!
//! Writes are gathered until the stream is flushed: the XML stream hands
//! each stanza to the transport as soon as the next one is queued, and
//! without this every stanza would become its own TLS record and system
//! call. A session flushes when its queue is empty, so a burst leaves in
//! one write.
//!
//! A session may also write stanzas around the XML stream's encoder
//! ([`LimitedIo::write_element`]): our serialiser is several times faster
//! than the event encoder the stream uses.
//!
//! The XML parser reads through [`LimitedIo`], which counts the bytes it
//! consumes. The session resets the count after each complete stanza
//! ([`StanzaBudget::reset`]); once a single stanza has consumed more than
//! the limit, reads fail with [`StanzaTooLarge`] and the session closes the
//! stream with `policy-violation`, without buffering the rest.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use minidom::Element;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// Anything an XML stream can run over (TCP, TLS, or a test pipe).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A boxed transport.
pub type BoxedTransport = Box<dyn Transport>;

/// The I/O type of every XML stream: reads buffered, writes gathered
/// until a flush.
pub type StreamIo<T = BoxedTransport> = LimitedIo<ReadBuffer<T>>;

/// Size of a stream's read buffer while it has data to parse.
pub const READ_BUFFER: usize = 4096;

/// Most bytes gathered before writes go through to the transport without
/// waiting for a flush (a TLS record holds 16 KiB).
pub const WRITE_GATHER: usize = 16 * 1024;

/// Wraps a transport for a new (or restarted after TLS) XML stream.
pub fn stream_io<T: AsyncRead>(
    transport: T,
    max_stanza_bytes: usize,
) -> (StreamIo<T>, StanzaBudget) {
    LimitedIo::new(ReadBuffer::new(transport), max_stanza_bytes)
}

/// A read buffer that exists only while it holds unparsed bytes: it is
/// allocated for a read and released once the parser has consumed
/// everything (or the read found nothing), so an idle stream holds none.
/// With thousands of idle connections that is [`READ_BUFFER`] bytes each.
#[derive(Debug)]
pub struct ReadBuffer<T> {
    inner: T,
    buffer: Unread,
}

impl<T> ReadBuffer<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buffer: Unread::default(),
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Returns the wrapped transport; bytes read but not consumed are
    /// lost (there are none where a stream switches to TLS: the peer waits
    /// for `<proceed/>`).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncBufRead for ReadBuffer<T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.buffer.is_empty() {
            // Read into spare capacity: nothing to zero first.
            let mut buffer = Vec::with_capacity(READ_BUFFER);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut buffer) {
                // Nothing read is the end of the stream: no buffer kept.
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(&[])),
                Poll::Ready(Ok(_)) => this.buffer = Unread::new(buffer),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(this.buffer.as_slice()))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        self.get_mut().buffer.consume(amount);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadBuffer<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffer.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        this.buffer.read_into(out);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadBuffer<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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

/// A buffered reader/writer that refuses to read past a byte budget and
/// gathers writes until a flush.
#[derive(Debug)]
pub struct LimitedIo<T> {
    inner: T,
    consumed: Arc<AtomicUsize>,
    limit: usize,
    /// Written, not yet passed to `inner`.
    gathered: Outgoing,
    /// Elements written around the XML stream ([`LimitedIo::write_element`]),
    /// taken into `gathered` before anything written after them.
    direct: Mutex<String>,
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
                gathered: Outgoing::default(),
                direct: Mutex::new(String::new()),
            },
            budget,
        )
    }

    /// Returns the wrapped transport. Call it after a flush: gathered
    /// writes are not passed on.
    pub fn into_inner(self) -> T {
        debug_assert!(self.gathered.is_empty(), "unflushed writes");
        debug_assert!(
            self.direct.lock().map_or(true, |d| d.is_empty()),
            "unflushed elements"
        );
        self.inner
    }

    /// Queues `element`, serialised by [`xml_text`](crate::xml_text), to
    /// go out before whatever is written next; returns how many bytes are
    /// queued this way. The XML stream over this transport must have
    /// nothing of its own waiting (it has none after a flush): as long as
    /// its owner writes every element this way, only the stream's own
    /// header and footer go through its encoder. The stream's default
    /// namespace is declared again on each element, which is equivalent.
    pub fn write_element(&self, element: &Element) -> usize {
        let mut direct = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
        crate::xml_text::append_text(&mut direct, element);
        direct.len()
    }

    /// As [`LimitedIo::write_element`], for an element serialised already
    /// (by [`xml_text`](crate::xml_text), so known to be well-formed).
    pub fn write_text(&self, text: &str) -> usize {
        let mut direct = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
        direct.push_str(text);
        direct.len()
    }

    /// Moves what [`LimitedIo::write_element`] queued to the end of
    /// `gathered`.
    fn take_direct(&mut self) {
        let direct = self
            .direct
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if direct.is_empty() {
            return;
        }
        self.gathered.append(std::mem::take(direct).into_bytes());
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

impl<T: AsyncWrite + Unpin> LimitedIo<T> {
    /// Passes everything gathered to the transport.
    fn poll_pass_on(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.gathered.poll_write_to(&mut self.inner, cx)
    }
}

/// Bytes received and not yet read: released once all are read, so an
/// idle stream holds none.
#[derive(Debug, Default)]
pub struct Unread {
    bytes: Vec<u8>,
    /// Start of the unread bytes in `bytes`.
    position: usize,
}

impl Unread {
    /// `bytes`, none read yet.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, position: 0 }
    }

    /// Whether every byte is read.
    pub fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }

    /// The buffer's capacity (0 once everything is read).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The bytes not yet read.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.position..]
    }

    /// The bytes not yet read, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.position..]
    }

    /// Appends `bytes` (dropping those read first, so that the buffer only
    /// ever holds what is unread).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.position > 0 {
            self.bytes.drain(..self.position);
            self.position = 0;
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Marks `amount` bytes read.
    pub fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.bytes.len());
        if self.is_empty() {
            *self = Self::default();
        }
    }

    /// Moves as many bytes as fit to `out`.
    pub fn read_into(&mut self, out: &mut ReadBuf<'_>) {
        let available = self.as_slice();
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
    }
}

/// Bytes on their way to a transport: appended to, then written out by
/// [`Outgoing::poll_write_to`], which releases the buffer once the
/// transport has taken everything, so an idle stream holds none.
#[derive(Debug, Default)]
pub struct Outgoing {
    bytes: Vec<u8>,
    /// How much of `bytes` the transport has taken.
    written: usize,
}

impl Outgoing {
    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Whether every byte is written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's capacity (0 once everything is written).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends `bytes`, taking the vector itself when nothing waits.
    pub fn append(&mut self, bytes: Vec<u8>) {
        if self.bytes.is_empty() {
            self.bytes = bytes;
        } else {
            self.bytes.extend_from_slice(&bytes);
        }
    }

    /// The buffer, to write into at its end (bytes already written may
    /// still be at its start).
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Writes to `transport` until everything is taken, then releases the
    /// buffer.
    pub fn poll_write_to<T: AsyncWrite + Unpin>(
        &mut self,
        transport: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.bytes.len() {
            let taken = std::task::ready!(
                Pin::new(&mut *transport).poll_write(cx, &self.bytes[self.written..])
            )?;
            if taken == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += taken;
        }
        *self = Self::default();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LimitedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.take_direct();
        if this.gathered.len() + buf.len() > WRITE_GATHER {
            std::task::ready!(this.poll_pass_on(cx))?;
            if buf.len() >= WRITE_GATHER {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.gathered.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_direct();
        std::task::ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_direct();
        std::task::ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
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

    #[tokio::test]
    async fn the_read_buffer_exists_only_while_it_holds_unparsed_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut reader = ReadBuffer::new(ours);
        theirs.write_all(b"<a/><b/>").await.unwrap();
        assert_eq!(reader.fill_buf().await.unwrap(), b"<a/><b/>");
        Pin::new(&mut reader).consume(4);
        assert_eq!(reader.fill_buf().await.unwrap(), b"<b/>");
        let mut rest = [0u8; 2];
        reader.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"<b");
        Pin::new(&mut reader).consume(2);
        assert_eq!(reader.buffer.capacity(), 0, "released once consumed");
        // A read that finds nothing keeps no buffer either.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut reader).poll_fill_buf(&mut cx).is_pending());
        assert_eq!(reader.buffer.capacity(), 0);
        drop(theirs);
        assert!(reader.fill_buf().await.unwrap().is_empty(), "end of stream");
    }

    #[tokio::test]
    async fn gathers_writes_until_a_flush() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(WRITE_GATHER * 4);
        let (mut io, _) = LimitedIo::new(ours, usize::MAX);
        io.write_all(b"<a/>").await.unwrap();
        io.write_all(b"<b/>").await.unwrap();
        let mut got = [0u8; 8];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), theirs.read(&mut got)).await;
        assert!(early.is_err(), "nothing passes before the flush");
        io.flush().await.unwrap();
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<a/><b/>");
        assert_eq!(io.gathered.capacity(), 0, "no buffer kept once flushed");
        // Past the gathering limit, writes go through without a flush.
        let big = vec![b'x'; WRITE_GATHER + 1];
        io.write_all(&big).await.unwrap();
        let mut received = vec![0u8; big.len()];
        theirs.read_exact(&mut received).await.unwrap();
        assert_eq!(received, big);
    }

    #[tokio::test]
    async fn elements_written_around_the_stream_keep_their_place() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(WRITE_GATHER * 4);
        let (mut io, _) = LimitedIo::new(ours, usize::MAX);
        let element = |xml: &str| xml.parse::<Element>().expect("test XML");
        io.write_all(b"<a/>").await.unwrap();
        assert_eq!(io.write_element(&element("<b xmlns='urn:t'/>")), 18);
        io.write_all(b"<c/>").await.unwrap();
        io.write_element(&element("<d xmlns='urn:t'>&lt;</d>"));
        io.flush().await.unwrap();
        let expected = "<a/><b xmlns='urn:t'/><c/><d xmlns='urn:t'>&lt;</d>";
        let mut got = vec![0u8; expected.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got), expected);
        io.write_element(&element("<e xmlns='urn:t'/>"));
        io.shutdown().await.unwrap();
        let mut rest = String::new();
        theirs.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "<e xmlns='urn:t'/>", "passed on at shutdown");
    }

    #[tokio::test]
    async fn a_transport_that_takes_little_at_a_time_gets_everything_in_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(3);
        let (mut io, _) = LimitedIo::new(ours, usize::MAX);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            all
        });
        for i in 0..100u8 {
            io.write_all(&[i; 7]).await.unwrap();
        }
        io.shutdown().await.unwrap();
        let all = reader.await.unwrap();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 7]).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn unread_bytes_keep_only_what_is_unread_and_are_released_once_read() {
        let mut unread = Unread::default();
        unread.extend_from_slice(b"abcdef");
        unread.consume(4);
        assert_eq!(unread.as_slice(), b"ef");
        // Appending drops what was read: the buffer never grows with it.
        unread.extend_from_slice(b"gh");
        assert_eq!(unread.as_mut_slice(), b"efgh");
        let mut out = [0u8; 3];
        let mut out = ReadBuf::new(&mut out);
        unread.read_into(&mut out);
        assert_eq!(out.filled(), b"efg");
        unread.consume(10);
        assert!(unread.is_empty());
        assert_eq!(unread.capacity(), 0);
    }

    #[tokio::test]
    async fn outgoing_bytes_are_written_in_order_then_released() {
        let mut outgoing = Outgoing::default();
        outgoing.extend_from_slice(b"<a/>");
        outgoing.append(b"<b/>".to_vec());
        assert_eq!(outgoing.len(), 8);
        let (mut transport, mut peer) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut all)
                .await
                .map(|_| all)
        });
        std::future::poll_fn(|cx| outgoing.poll_write_to(&mut transport, cx))
            .await
            .unwrap();
        assert!(outgoing.is_empty());
        assert_eq!(outgoing.capacity(), 0);
        drop(transport);
        assert_eq!(reader.await.unwrap().unwrap(), b"<a/><b/>");
    }
}
