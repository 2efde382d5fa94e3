//! The stream of a bound session. Negotiation runs on tokio-xmpp's XML
//! streams; once a resource is bound, the session takes the transport
//! from under it and reads stanzas with
//! [`StanzaReader`](tern_federation::xml_reader::StanzaReader), which
//! holds nothing between stanzas and builds each in one pass, and writes
//! them with [`xml_text`](tern_federation::xml_text). An idle session
//! keeps no parser state and no buffers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use minidom::Element;
use tern_federation::io::WRITE_GATHER;
use tern_federation::xml_reader::{NotWellFormed, Read, StanzaReader};
use tokio::io::{AsyncBufRead, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_xmpp::xmlstream::{ReadError, Timeouts};
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use super::io::{is_stanza_too_large, C2sIo};
use super::negotiation::{C2sXmlStream, NegotiationError};
use crate::stanza::NS_CLIENT;

const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// A bound session's stream: stanzas in, stanzas out.
pub struct StanzaStream {
    io: C2sIo,
    reader: StanzaReader,
    silence: Silence,
}

impl StanzaStream {
    /// Takes over the transport of a negotiated stream (at a stanza
    /// boundary, with nothing left to write: negotiation flushes its
    /// last answer). Bytes the client sent ahead stay in the transport's
    /// read buffer and are read here.
    pub fn new(stream: C2sXmlStream, timeouts: Timeouts) -> Self {
        Self {
            io: stream.into_inner(),
            reader: StanzaReader::new(NS_CLIENT),
            silence: Silence::new(timeouts),
        }
    }

    /// The next element from the client: `None` once the connection
    /// closed cleanly after the stream's end; a soft timeout after
    /// [`Timeouts::read_timeout`] of silence, then a hard error if the
    /// silence lasts [`Timeouts::response_timeout`] longer. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Element, ReadError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Element, ReadError>>> {
        loop {
            if self.reader.has_pending() {
                match self.reader.read(&[]).1 {
                    Ok(Read::NeedMore) => {}
                    read => return Poll::Ready(outcome(read)),
                }
            }
            let input = match Pin::new(&mut self.io).poll_fill_buf(cx) {
                Poll::Ready(Ok(input)) => input,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(ReadError::HardError(e)))),
                Poll::Pending => return self.silence.poll(cx),
            };
            if input.is_empty() {
                // The end of the connection without the end of the stream.
                let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Poll::Ready(Some(Err(ReadError::HardError(e))));
            }
            self.silence.heard();
            let (taken, read) = self.reader.read(input);
            Pin::new(&mut self.io).consume(taken);
            match read {
                Ok(Read::NeedMore) => {}
                read => return Poll::Ready(outcome(read)),
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

/// What a read of the reader means to the session.
fn outcome(read: Result<Read, NotWellFormed>) -> Option<Result<Element, ReadError>> {
    match read {
        Ok(Read::Element(element)) => Some(Ok(element)),
        Ok(Read::Footer) => Some(Err(ReadError::StreamFooterReceived)),
        Ok(Read::NeedMore) => None,
        Err(e) => {
            tracing::debug!("client input refused: {e}");
            let e = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            Some(Err(ReadError::HardError(e)))
        }
    }
}

/// `<stream:error/>` with `condition` and `text`, and the stream's end.
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

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Element, ReadError>>> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let due = self.due();
            if Instant::now() < due {
                self.timer.as_mut().reset(due);
                continue;
            }
            if self.warned {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the client fell silent");
                return Poll::Ready(Some(Err(ReadError::HardError(e))));
            }
            self.warned = true;
            let due = self.due();
            self.timer.as_mut().reset(due);
            return Poll::Ready(Some(Err(ReadError::SoftTimeout)));
        }
    }
}
