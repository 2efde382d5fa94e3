//! XMPP over WebSocket (RFC 7395) for browser clients: a byte transport
//! that turns the WebSocket framing into an ordinary XML stream, so the
//! same negotiation and session code serves it.
//!
//! Inbound, each text message is one complete element: `<open/>` becomes
//! a stream header, `<close/>` the stream footer, anything else is parsed
//! and passed on (so one message can never smuggle in more than one
//! element). Outbound, the server's XML stream is cut at its top-level
//! elements: the stream header becomes `<open/>`, each element one text
//! message with its namespaces declared, the footer `<close/>`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::stanza::{set_attr, NS_CLIENT};

/// The framing namespace.
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// The WebSocket subprotocol name.
pub const PROTOCOL: &str = "xmpp";

/// A WebSocket seen as the byte stream of an XML stream.
pub struct WsTransport<S> {
    socket: WebSocketStream<S>,
    /// Bytes of translated inbound messages not yet read.
    inbound: VecDeque<u8>,
    /// The outbound byte stream cut into elements.
    splitter: Splitter,
    /// Messages waiting to be sent.
    outbound: VecDeque<Message>,
    /// The peer closed the WebSocket.
    closed: bool,
}

impl<S> WsTransport<S> {
    /// Wraps an established WebSocket.
    pub fn new(socket: WebSocketStream<S>) -> Self {
        Self {
            socket,
            inbound: VecDeque::new(),
            splitter: Splitter::default(),
            outbound: VecDeque::new(),
            closed: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    /// Sends what is queued, as far as the socket takes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(message) = self.outbound.front() {
            match Pin::new(&mut self.socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Pending => return Poll::Pending,
            }
            let message = message.clone();
            self.outbound.pop_front();
            Pin::new(&mut self.socket)
                .start_send(message)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.inbound.is_empty() && !this.closed {
            match Pin::new(&mut this.socket).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.closed = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(Message::Text(text)))) => {
                    let translated = translate_inbound(text.as_str())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    this.inbound.extend(translated.as_bytes());
                }
                Poll::Ready(Some(Ok(Message::Close(_)))) => this.closed = true,
                Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "XMPP over WebSocket uses text messages",
                    )))
                }
                // Pings are answered by the socket itself.
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
        let (front, _) = this.inbound.as_slices();
        let n = front.len().min(buf.remaining());
        buf.put_slice(&front[..n]);
        this.inbound.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        for piece in this.splitter.push(data) {
            let text = translate_outbound(piece)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            this.outbound.extend(text.into_iter().map(Message::text));
        }
        // Sending is finished by flush; start it without waiting.
        let _ = this.poll_send(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.socket)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        match Pin::new(&mut this.socket).poll_close(cx) {
            Poll::Ready(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                Poll::Ready(Ok(()))
            }
            other => other.map_err(io::Error::other),
        }
    }
}

/// What one piece of the server's XML stream is.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// A stream header (start tag only).
    Header(String),
    /// A complete top-level element.
    Element(String),
    /// The stream footer.
    Footer,
}

/// Cuts the bytes of an XML stream written by the server into header,
/// top-level elements and footer. It relies on well-formed input (the
/// server's own serialiser): text never holds `<`, and `>` only appears
/// unescaped inside quoted attribute values.
#[derive(Debug, Default)]
struct Splitter {
    pending: Vec<u8>,
    /// Where the current top-level element starts in `pending`.
    start: Option<usize>,
    /// Depth below the stream element.
    depth: usize,
    /// Scan position in `pending`.
    at: usize,
}

impl Splitter {
    /// Takes more bytes; returns the pieces they complete.
    fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        self.pending.extend_from_slice(data);
        let mut pieces = Vec::new();
        while let Some(tag_start) = self.pending[self.at..].iter().position(|&b| b == b'<') {
            let tag_start = self.at + tag_start;
            let Some(tag_end) = tag_end(&self.pending[tag_start..]) else {
                break;
            };
            let tag_end = tag_start + tag_end;
            let tag = &self.pending[tag_start..=tag_end];
            self.at = tag_end + 1;
            match tag.get(1) {
                Some(b'?') | Some(b'!') => {}
                Some(b'/') if self.depth == 1 => {
                    self.depth = 0;
                    let start = self.start.take().unwrap_or(tag_start);
                    let element = self.take(start, tag_end);
                    pieces.push(Piece::Element(element));
                }
                Some(b'/') if self.depth == 0 => pieces.push(Piece::Footer),
                Some(b'/') => self.depth -= 1,
                _ if tag.starts_with(b"<stream:stream") => {
                    // A new stream (also after a reset, with no footer).
                    self.depth = 0;
                    self.start = None;
                    pieces.push(Piece::Header(String::from_utf8_lossy(tag).into_owned()));
                }
                _ => {
                    let self_closing = tag.ends_with(b"/>");
                    if self.depth == 0 {
                        if self_closing {
                            pieces.push(Piece::Element(self.take(tag_start, tag_end)));
                        } else {
                            self.start = Some(tag_start);
                            self.depth = 1;
                        }
                    } else if !self_closing {
                        self.depth += 1;
                    }
                }
            }
        }
        if self.start.is_none() {
            self.pending.drain(..self.at);
            self.at = 0;
        }
        pieces
    }

    fn take(&self, from: usize, to: usize) -> String {
        String::from_utf8_lossy(&self.pending[from..=to]).into_owned()
    }
}

/// The index of the `>` that ends the tag starting at `bytes[0]`, quotes
/// respected.
fn tag_end(bytes: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The WebSocket messages for one piece of the server's stream.
fn translate_outbound(piece: Piece) -> Result<Vec<String>, String> {
    match piece {
        Piece::Header(tag) => {
            let header = parse(&format!("{tag}</stream:stream>")).or_else(|_| {
                let declared = tag.replacen(
                    "<stream:stream",
                    &format!("<stream:stream xmlns:stream='{NS_STREAM}'"),
                    1,
                );
                parse(&format!("{declared}</stream:stream>"))
            })?;
            let mut open = Element::bare("open", NS_FRAMING);
            for name in ["from", "id", "version"] {
                if let Some(value) = header.attr(name) {
                    set_attr(&mut open, attr_static(name), value);
                }
            }
            let mut open = String::from(&open);
            // xml:lang is not a plain attribute for minidom.
            open.insert_str(open.len() - 2, " xml:lang='en'");
            Ok(vec![open])
        }
        Piece::Element(text) => {
            let wrapped = format!(
                "<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>{text}</stream:stream>"
            );
            let mut element = parse(&wrapped)?
                .children()
                .next()
                .cloned()
                .ok_or("an empty element")?;
            if element.is("features", NS_STREAM) {
                // The features type always writes <mechanisms/>, even
                // empty after authentication, which browser clients take
                // as a request to authenticate again.
                crate::stanza::remove_children(&mut element, |c| {
                    c.is("mechanisms", NS_SASL) && c.children().next().is_none()
                });
            }
            let mut messages = vec![String::from(&element)];
            if element.is("error", NS_STREAM) {
                // RFC 7395 §3.6: a stream error is followed by <close/>.
                messages.push(String::from(&Element::bare("close", NS_FRAMING)));
            }
            Ok(messages)
        }
        Piece::Footer => Ok(vec![String::from(&Element::bare("close", NS_FRAMING))]),
    }
}

fn attr_static(name: &str) -> &'static str {
    match name {
        "from" => "from",
        "id" => "id",
        _ => "version",
    }
}

/// The XML stream bytes for one inbound WebSocket message.
pub(crate) fn translate_inbound(text: &str) -> Result<String, String> {
    let element = parse(text)?;
    // An element in no namespace would take the stream's on the way.
    if element.ns().is_empty() {
        return Err("an element in no namespace".to_owned());
    }
    if element.is("open", NS_FRAMING) {
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'"
        );
        for name in ["to", "from", "version", "id"] {
            if let Some(value) = element.attr(name) {
                header.push_str(&format!(" {name}='{}'", escape_attr(value)));
            }
        }
        header.push('>');
        return Ok(header);
    }
    if element.is("close", NS_FRAMING) {
        return Ok("</stream:stream>".to_owned());
    }
    Ok(String::from(&element))
}

fn parse(text: &str) -> Result<Element, String> {
    // minidom builds and drops trees recursively: refuse deep nesting
    // before it reads the message.
    tern_xmpp::check_document(text.as_bytes()).map_err(|e| e.to_string())?;
    text.parse::<Element>()
        .map_err(|e| format!("not one XML element: {e}"))
}

fn escape_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_in_no_namespace_is_refused() {
        // It would take the stream's namespace on the way (found by the
        // websocket fuzz target).
        assert!(translate_inbound("<message xmlns=''/>").is_err());
        assert!(translate_inbound("<message xmlns='jabber:client'/>").is_ok());
    }

    #[test]
    fn the_servers_stream_is_cut_into_messages() {
        let mut splitter = Splitter::default();
        let stream = "<?xml version='1.0'?>\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
            xmlns='jabber:client' from='a.test' id='x1' version='1.0'><stream:features><mechanisms \
            xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>\
            </stream:features><message to='b' id='a>b'><body>1 &lt; 2 &gt; 0</body></message><r xmlns='urn:xmpp:sm:3'/>";
        // Fed in awkward pieces.
        let mut pieces = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            pieces.extend(splitter.push(chunk));
        }
        pieces.extend(splitter.push(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' from='a.test' id='x2'>",
        ));
        pieces.extend(splitter.push(b"</stream:stream>"));
        let messages: Vec<String> = pieces
            .into_iter()
            .flat_map(|p| translate_outbound(p).expect("translates"))
            .collect();
        assert_eq!(messages.len(), 6, "{messages:?}");
        assert!(messages[0].starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'"));
        assert!(messages[0].contains("id=\"x1\"") || messages[0].contains("id='x1'"));
        let features: Element = messages[1].parse().expect("standalone");
        assert!(features.is("features", NS_STREAM), "{}", messages[1]);
        let message: Element = messages[2].parse().expect("standalone");
        assert!(message.is("message", NS_CLIENT));
        assert_eq!(message.attr("id"), Some("a>b"));
        assert!(messages[3].contains("urn:xmpp:sm:3"));
        assert!(messages[4].starts_with("<open"), "a reset opens again");
        assert_eq!(
            messages[5],
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );
    }

    #[test]
    fn inbound_messages_become_one_stream() {
        let open = translate_inbound(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='a.test' version='1.0'/>",
        )
        .expect("open");
        assert!(open.contains("<stream:stream") && open.contains("to='a.test'"));
        let stanza =
            translate_inbound("<message xmlns='jabber:client' to='b@a.test'/>").expect("stanza");
        assert!(stanza.starts_with("<message"));
        assert!(
            translate_inbound("<a/><b/>").is_err(),
            "one element per message"
        );
        assert!(translate_inbound("</stream:stream><x/>").is_err());
        assert_eq!(
            translate_inbound("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
                .expect("close"),
            "</stream:stream>"
        );
    }
}
