//! A limit on element nesting, enforced on the bytes of a stream before
//! any XML parser reads them.
//!
//! tokio-xmpp's streams build each stanza with a recursive tree builder
//! (and minidom drops trees recursively), so a few thousand nested start
//! tags overflow the reading task's stack and abort the whole process.
//! [`DepthGuard`] is a small resumable lexer that follows element depth
//! through start tags, end tags, empty-element tags, attribute values
//! (which may hold `>` and `/>`), comments, CDATA sections and processing
//! instructions, and fails once an element opens deeper than its limit.
//! [`DepthLimited`] puts it under any transport: every byte read is
//! scanned once, in order, before the parser above can see it, and a read
//! that brings too deep an element fails with [`TooDeep`] (and so does
//! every read after it).
//!
//! The guard only counts; it does not check well-formedness, which stays
//! the parser's job. For well-formed input its depth is exact; malformed
//! input is refused by the parser at the latest where the guard could
//! miscount.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a read returns once an element opens deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("elements nested deeper than {limit}")]
pub struct TooDeep {
    /// The deepest nesting allowed, the stream element included.
    pub limit: u32,
}

/// Whether an I/O error is a [`DepthLimited`] transport refusing input.
pub fn is_too_deep(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooDeep>())
}

/// Checks a whole document (one element, such as a WebSocket message or a
/// decrypted envelope) against [`MAX_DEPTH`](crate::MAX_DEPTH) before a
/// recursive parser reads it.
pub fn check_document(bytes: &[u8]) -> Result<(), TooDeep> {
    DepthGuard::new(crate::MAX_DEPTH).feed(bytes)
}

/// The absolute limit for a stream that carries stanzas nested at most
/// [`MAX_DEPTH`](crate::MAX_DEPTH) deep: the stream element, and the one
/// a restart (after SASL) opens on the same transport without closing the
/// first, come on top.
pub const fn stream_limit() -> u32 {
    crate::MAX_DEPTH + 2
}

/// Where the lexer is between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data (or white space between elements).
    Text,
    /// Just after `<`.
    Open,
    /// Inside a start tag; `quote` is the open attribute value's quote,
    /// `slash` whether the last byte outside quotes was `/`.
    StartTag { quote: Option<u8>, slash: bool },
    /// Inside an end tag, up to its `>`.
    EndTag,
    /// Just after `<!`.
    Bang,
    /// Just after `<!-`.
    BangDash,
    /// Inside a comment; `dashes` counts the `-` just before.
    Comment { dashes: u8 },
    /// Inside a CDATA section (or another `<![` construct); `brackets`
    /// counts the `]` just before.
    CData { brackets: u8 },
    /// Inside `<!…>` that is neither (a document type declaration, which
    /// XMPP forbids and the parser refuses): up to its `>`.
    Declaration,
    /// Inside a processing instruction (or the XML declaration);
    /// `question` whether the last byte was `?`.
    Instruction { question: bool },
}

/// A resumable count of open elements over the bytes of one stream.
#[derive(Debug, Clone)]
pub struct DepthGuard {
    state: State,
    depth: u32,
    limit: u32,
    failed: bool,
}

impl DepthGuard {
    /// A guard allowing elements nested `limit` deep (the stream element
    /// counts as one).
    pub fn new(limit: u32) -> Self {
        Self {
            state: State::Text,
            depth: 0,
            limit,
            failed: false,
        }
    }

    /// Elements open after the bytes fed so far.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Follows `bytes`, the next bytes of the stream. Once it has failed,
    /// it fails for every later call.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), TooDeep> {
        if self.failed {
            return Err(TooDeep { limit: self.limit });
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Text {
                // Skip character data in one step.
                match bytes[i..].iter().position(|&b| b == b'<') {
                    Some(at) => {
                        i += at + 1;
                        self.state = State::Open;
                    }
                    None => return Ok(()),
                }
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
        }
        Ok(())
    }

    fn step(&mut self, byte: u8) -> Result<(), TooDeep> {
        self.state = match self.state {
            State::Text if byte == b'<' => State::Open,
            State::Text => State::Text,
            State::Open => match byte {
                b'/' => State::EndTag,
                b'!' => State::Bang,
                b'?' => State::Instruction { question: false },
                _ => State::StartTag {
                    quote: None,
                    slash: false,
                },
            },
            State::StartTag { quote: Some(q), .. } => State::StartTag {
                quote: (byte != q).then_some(q),
                slash: false,
            },
            State::StartTag { quote: None, slash } => match byte {
                b'\'' | b'"' => State::StartTag {
                    quote: Some(byte),
                    slash: false,
                },
                b'>' if slash => State::Text,
                b'>' => {
                    self.depth += 1;
                    if self.depth > self.limit {
                        self.failed = true;
                        return Err(TooDeep { limit: self.limit });
                    }
                    State::Text
                }
                _ => State::StartTag {
                    quote: None,
                    slash: byte == b'/',
                },
            },
            State::EndTag => {
                if byte == b'>' {
                    self.depth = self.depth.saturating_sub(1);
                    State::Text
                } else {
                    State::EndTag
                }
            }
            State::Bang => match byte {
                b'-' => State::BangDash,
                b'[' => State::CData { brackets: 0 },
                b'>' => State::Text,
                _ => State::Declaration,
            },
            State::BangDash => match byte {
                b'-' => State::Comment { dashes: 0 },
                b'>' => State::Text,
                _ => State::Declaration,
            },
            State::Comment { dashes } => match byte {
                b'>' if dashes >= 2 => State::Text,
                b'-' => State::Comment {
                    dashes: dashes.saturating_add(1),
                },
                _ => State::Comment { dashes: 0 },
            },
            State::CData { brackets } => match byte {
                b'>' if brackets >= 2 => State::Text,
                b']' => State::CData {
                    brackets: brackets.saturating_add(1),
                },
                _ => State::CData { brackets: 0 },
            },
            State::Declaration => {
                if byte == b'>' {
                    State::Text
                } else {
                    State::Declaration
                }
            }
            State::Instruction { question } => match byte {
                b'>' if question => State::Text,
                _ => State::Instruction {
                    question: byte == b'?',
                },
            },
        };
        Ok(())
    }
}

/// A transport whose reads pass through a [`DepthGuard`]; writes pass
/// through untouched.
#[derive(Debug)]
pub struct DepthLimited<T> {
    inner: T,
    guard: DepthGuard,
}

impl<T> DepthLimited<T> {
    /// Wraps `inner` for a new stream, with the absolute nesting `limit`
    /// (see [`stream_limit`]).
    pub fn new(inner: T, limit: u32) -> Self {
        Self {
            inner,
            guard: DepthGuard::new(limit),
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably (to start TLS over it, say).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The wrapped transport, for a new stream over it.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DepthLimited<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.guard.feed(&[]) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if let Err(e) = this.guard.feed(&buf.filled()[before..]) {
                // Nothing of this read reaches the parser.
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DepthLimited<T> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn depth_after(input: &str) -> u32 {
        let mut guard = DepthGuard::new(u32::MAX);
        guard.feed(input.as_bytes()).expect("within the limit");
        guard.depth()
    }

    #[test]
    fn counts_start_end_and_empty_tags() {
        assert_eq!(depth_after("<?xml version='1.0'?><stream:stream a='1'>"), 1);
        assert_eq!(depth_after("<s><a><b/><c x=\"/\"/></a>"), 1);
        assert_eq!(depth_after("<s><a>text > more</a><b >"), 2);
        assert_eq!(depth_after("<s></s>"), 0);
    }

    #[test]
    fn markup_inside_values_comments_and_cdata_does_not_count() {
        assert_eq!(depth_after("<s><a x='/>' y=\"></a>\">"), 2);
        assert_eq!(depth_after("<s><!-- </s></s> <a> --->"), 1);
        assert_eq!(depth_after("<s><![CDATA[</s></s><a>]]]>"), 1);
        assert_eq!(depth_after("<s><? </s> ?>"), 1);
        assert_eq!(depth_after("<s><!DOCTYPE x><a>"), 2);
    }

    #[test]
    fn fails_past_the_limit_and_stays_failed() {
        let mut guard = DepthGuard::new(3);
        assert!(guard.feed(b"<a><b><c></c><c/>").is_ok());
        assert_eq!(guard.feed(b"<d><e>"), Err(TooDeep { limit: 3 }));
        assert_eq!(guard.feed(b""), Err(TooDeep { limit: 3 }));
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_depth() {
        let input = "<?xml version='1.0'?><s x='>'><a><!-- -- > --><![CDATA[ ]] ]]><b y=\"/>\"/>\
                     <?pi ? ?></a><c>";
        let whole = depth_after(input);
        assert_eq!(whole, 2);
        for size in 1..input.len() {
            let mut guard = DepthGuard::new(u32::MAX);
            for piece in input.as_bytes().chunks(size) {
                guard.feed(piece).expect("within the limit");
            }
            assert_eq!(guard.depth(), whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn a_document_may_nest_as_deep_as_a_stanza() {
        let depth = crate::MAX_DEPTH as usize;
        let fits = "<a>".repeat(depth) + &"</a>".repeat(depth);
        assert!(check_document(fits.as_bytes()).is_ok());
        let deeper = "<a>".repeat(depth + 1);
        assert!(check_document(deeper.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn a_transport_refuses_the_read_that_nests_too_deep() {
        let deep = "<stream>".to_owned() + &"<a>".repeat(10_000);
        let mut io = DepthLimited::new(deep.as_bytes(), stream_limit());
        let mut buf = Vec::new();
        let err = io.read_to_end(&mut buf).await.expect_err("too deep");
        assert!(is_too_deep(&err), "{err}");
        assert!(buf.len() < deep.len());

        let fits = "<stream>".to_owned() + &"<a>".repeat(crate::MAX_DEPTH as usize);
        let mut io = DepthLimited::new(fits.as_bytes(), stream_limit());
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await.expect("fits");
        assert_eq!(buf, fits.as_bytes());
    }
}
