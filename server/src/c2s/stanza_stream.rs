//! A client's XML stream, from its header to its end, through
//! negotiation and the bound session. Stanzas are read with
//! [`StanzaReader`](tern_federation::xml_reader::StanzaReader), which
//! holds nothing between stanzas and builds each in one pass, and written
//! with [`xml_text`](tern_federation::xml_text). An idle session keeps no
//! parser state and no buffers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use minidom::Element;
use tern_federation::io::WRITE_GATHER;
use tern_federation::xml_reader::{NotWellFormed, Read, StanzaReader, StreamHeader, NS_STREAM};
use tern_federation::xml_text::append_attribute_value;
use tokio::io::{AsyncBufRead, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::io::{c2s_io, is_stanza_too_large, BoxedTransport, C2sIo, StanzaBudget};
use super::negotiation::NegotiationError;
use crate::stanza::NS_CLIENT;

const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// A client's stream: its header, stanzas in, stanzas out.
pub struct StanzaStream {
    io: C2sIo,
    reader: StanzaReader,
    silence: Silence,
}

/// What the client's stream brought next.
#[derive(Debug)]
pub enum Input {
    /// A stanza (or another stream-level element).
    Element(Element),
    /// Nothing for [`Timeouts::read_timeout`]: time to ping the client.
    /// Silence for [`Timeouts::response_timeout`] more is a failure.
    Silent,
    /// The client ended its stream (`</stream:stream>`).
    Ended,
    /// The connection broke or timed out, or the input cannot be read (an
    /// error of kind `InvalidData`, or the stanza size limit).
    Failed(std::io::Error),
}

/// Why a read stopped before an item of the stream.
enum Interrupt {
    Silent,
    Failed(std::io::Error),
}

/// Why a stream header was not read.
#[derive(Debug)]
pub enum HeaderError {
    /// The connection ended first.
    Closed,
    /// Reading failed, or the input is not a stream header.
    Failed(std::io::Error),
}

impl StanzaStream {
    /// A new stream over `transport` (at accept, or after TLS): the
    /// client's header is read first. The budget counts the bytes read
    /// against `max_stanza_bytes` until it is reset.
    pub fn open(
        transport: BoxedTransport,
        max_stanza_bytes: usize,
        timeouts: Timeouts,
    ) -> (Self, StanzaBudget) {
        let (io, budget) = c2s_io(transport, max_stanza_bytes);
        let stream = Self {
            io,
            reader: StanzaReader::new_stream(),
            silence: Silence::new(timeouts),
        };
        (stream, budget)
    }

    /// Reads the client's stream header (within the caller's deadline).
    pub async fn read_header(&mut self) -> Result<StreamHeader, HeaderError> {
        loop {
            match std::future::poll_fn(|cx| self.poll_read(cx)).await {
                Ok(Read::Header(header)) => return Ok(header),
                Ok(_) => {
                    let e =
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "no stream header");
                    return Err(HeaderError::Failed(e));
                }
                Err(Interrupt::Silent) => continue,
                Err(Interrupt::Failed(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(HeaderError::Closed)
                }
                Err(Interrupt::Failed(e)) => return Err(HeaderError::Failed(e)),
            }
        }
    }

    /// Writes our stream header (RFC 6120 §4.7) for `domain`.
    pub fn write_header(&mut self, domain: &str, id: &str) {
        let mut header = String::with_capacity(256);
        header.push_str("<?xml version='1.0'?><stream:stream xmlns='");
        header.push_str(NS_CLIENT);
        header.push_str("' xmlns:stream='");
        header.push_str(NS_STREAM);
        header.push_str("' from='");
        append_attribute_value(&mut header, domain);
        header.push_str("' id='");
        append_attribute_value(&mut header, id);
        header.push_str("' version='1.0' xml:lang='en'>");
        self.io.write_text(&header);
    }

    /// Writes `<stream:features/>` with `features` in it.
    pub fn write_features(&mut self, features: &[Element]) {
        let mut text = String::from("<stream:features>");
        for feature in features {
            tern_federation::xml_text::append_text(&mut text, feature);
        }
        text.push_str("</stream:features>");
        self.io.write_text(&text);
    }

    /// After `<success/>` went out: the client opens a new stream over
    /// the same connection (RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        self.reader.restart();
    }

    /// The transport, for TLS (after `<proceed/>`, when the client sends
    /// nothing more until the handshake).
    pub fn into_transport(self) -> BoxedTransport {
        self.io.into_inner().into_inner()
    }

    /// Writes an element and flushes.
    pub async fn send(&mut self, element: &Element) -> std::io::Result<()> {
        self.io.write_element(element);
        self.flush().await
    }

    /// What the client sent next. Cancel-safe.
    pub async fn next(&mut self) -> Input {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Input> {
        let read = ready!(self.poll_read(cx));
        Poll::Ready(match read {
            Ok(Read::Element(element)) => Input::Element(element),
            Ok(Read::Footer) => Input::Ended,
            Ok(Read::Header(_) | Read::NeedMore) => Input::Failed(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a stream header mid-stream",
            )),
            Err(Interrupt::Silent) => Input::Silent,
            Err(Interrupt::Failed(e)) => Input::Failed(e),
        })
    }

    /// The next item of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read, Interrupt>> {
        loop {
            if self.reader.has_pending() {
                match self.reader.read(&[]).1 {
                    Ok(Read::NeedMore) => {}
                    read => return Poll::Ready(checked(read)),
                }
            }
            let input = match Pin::new(&mut self.io).poll_fill_buf(cx) {
                Poll::Ready(Ok(input)) => input,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Interrupt::Failed(e))),
                Poll::Pending => return self.silence.poll(cx).map(Err),
            };
            if input.is_empty() {
                // The end of the connection without the end of the stream.
                let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Poll::Ready(Err(Interrupt::Failed(e)));
            }
            self.silence.heard();
            let (taken, read) = self.reader.read(input);
            Pin::new(&mut self.io).consume(taken);
            match read {
                Ok(Read::NeedMore) => {}
                read => return Poll::Ready(checked(read)),
            }
        }
    }

    /// Queues an element; it goes out at the next flush, or now if a TLS
    /// record's worth is queued.
    pub async fn write_element(&mut self, element: &Element) -> std::io::Result<()> {
        if self.io.write_element(element) >= WRITE_GATHER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.io.flush().await
    }

    /// Sends the stream's closing tag and closes the connection.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.io.write_text("</stream:stream>");
        self.io.flush().await?;
        self.io.shutdown().await
    }

    /// Sends a stream error, then closes the stream (within 5 s).
    pub async fn refuse(
        &mut self,
        condition: StreamCondition,
        text: &'static str,
    ) -> NegotiationError {
        self.io.write_text(&stream_error(&condition, text));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.close()).await;
        NegotiationError::Refused { condition, text }
    }

    /// Tells the client why a read failed, where a stream error applies.
    pub async fn read_failure(&mut self, e: std::io::Error) -> NegotiationError {
        if is_stanza_too_large(&e) {
            self.refuse(StreamCondition::PolicyViolation, "stanza too large")
                .await
        } else if e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NotWellFormed>())
            .is_some_and(|e| e.undeclared_prefix)
        {
            self.refuse(
                StreamCondition::BadNamespacePrefix,
                "a namespace prefix is not declared",
            )
            .await
        } else if e.kind() == std::io::ErrorKind::InvalidData {
            self.refuse(StreamCondition::NotWellFormed, "XML not well-formed")
                .await
        } else {
            NegotiationError::Io(e)
        }
    }
}

/// A read of the reader, its refusal as an I/O error of invalid data.
fn checked(read: Result<Read, NotWellFormed>) -> Result<Read, Interrupt> {
    read.map_err(|e| {
        tracing::debug!("client input refused: {e}");
        Interrupt::Failed(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })
}

/// `<stream:error/>` with `condition` and `text`.
fn stream_error(condition: &StreamCondition, text: &str) -> String {
    let mut error = String::from("<stream:error>");
    tern_federation::xml_text::append_text(
        &mut error,
        &Element::bare(condition.to_string(), NS_STREAM_ERRORS),
    );
    let explanation = Element::builder("text", NS_STREAM_ERRORS)
        .append(text)
        .build();
    tern_federation::xml_text::append_text(&mut error, &explanation);
    error.push_str("</stream:error>");
    error
}

/// The read deadlines of a stream. The timer is not moved at every read:
/// when it fires, it is set again from the time input was last heard.
struct Silence {
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    last_heard: Instant,
    /// A soft timeout was reported since input was last heard.
    warned: bool,
}

impl Silence {
    fn new(timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.read_timeout)),
            timeouts,
            last_heard: now,
            warned: false,
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.warned = false;
    }

    fn due(&self) -> Instant {
        let soft = self.last_heard + self.timeouts.read_timeout;
        if self.warned {
            soft + self.timeouts.response_timeout
        } else {
            soft
        }
    }

    /// Ready with a soft timeout, then with the hard one.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Interrupt> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let due = self.due();
            if Instant::now() < due {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.warned {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the client fell silent");
                return Poll::Ready(Interrupt::Failed(e));
            }
            self.warned = true;
            let due = self.due();
            self.timer.as_mut().reset(due);
            return Poll::Ready(Interrupt::Silent);
        }
    }
}
