//! Server-side TLS over a client's transport that holds no buffer while
//! the connection is idle: rustls' unbuffered API, with the received
//! records, the decrypted data and the records to send each kept in a
//! buffer of ours that is released as soon as it is empty. (rustls'
//! buffered `ServerConnection`, under tokio-rustls, keeps a 4 KiB read
//! buffer for the life of the connection: a third of an idle session.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use tern_federation::io::{Outgoing, Unread};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most bytes read from the transport at once (one TLS record with its
/// header is at most 16 KiB plus 261 bytes).
const READ_CHUNK: usize = 4096;

/// Records queued to send beyond which a write waits for the transport.
const MAX_QUEUED: usize = 64 * 1024;

/// A TLS 1.2/1.3 server stream over `T`.
pub struct TlsStream<T> {
    transport: T,
    tls: UnbufferedServerConnection,
    /// Bytes received and not yet taken by rustls.
    received: Unread,
    /// Application data decrypted and not yet read.
    plaintext: Unread,
    /// Records to send.
    queued: Outgoing,
    /// The peer sent close_notify, or closed the transport.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
}

/// Where rustls stands once it has taken every complete record received.
enum Wait {
    /// The handshake waits for the peer's next records.
    ForRecords,
    /// Application data may be sent (and more may come).
    Established,
    /// Nothing more will come from the peer.
    PeerClosed,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<T: AsyncRead + AsyncWrite + Unpin> TlsStream<T> {
    /// Completes a server handshake with `config` over `transport`.
    pub async fn accept(transport: T, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let tls = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = Self {
            transport,
            tls,
            received: Unread::default(),
            plaintext: Unread::default(),
            queued: Outgoing::default(),
            peer_closed: false,
            close_queued: false,
        };
        loop {
            let wait = match stream.process() {
                Ok(wait) => wait,
                Err(e) => {
                    stream.send_alert().await;
                    return Err(e);
                }
            };
            stream.send_queued().await?;
            let more = match wait {
                Wait::Established if !stream.tls.is_handshaking() => return Ok(stream),
                Wait::PeerClosed => false,
                Wait::ForRecords | Wait::Established => {
                    std::future::poll_fn(|cx| stream.poll_receive(cx)).await?
                }
            };
            if !more {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }

    /// Tells the peer why the handshake failed: the alert rustls queued
    /// with its error (sent at best, for at most a second).
    async fn send_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut encoder)) = state {
            let mut alert = [0u8; 64];
            if let Ok(written) = encoder.encode(&mut alert) {
                self.queued.extend_from_slice(&alert[..written]);
                let sent = self.send_queued();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sent).await;
            }
        }
    }

    /// Sends every queued record.
    async fn send_queued(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send_queued(cx)).await?;
        self.transport.flush().await
    }

    /// Lets rustls take the received records: decrypted data goes to
    /// `plaintext`, records to send to `queued`.
    fn process(&mut self) -> io::Result<Wait> {
        self.process_into(None)
    }

    /// As [`TlsStream::process`]; decrypted data goes straight to `out`
    /// while it fits there (and nothing waits in `plaintext` before it).
    fn process_into(&mut self, mut out: Option<&mut ReadBuf<'_>>) -> io::Result<Wait> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.tls.process_tls_records(self.received.as_mut_slice());
            let wait = match state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let payload = record.map_err(tls_error)?.payload;
                        match out.as_deref_mut() {
                            Some(out)
                                if self.plaintext.is_empty()
                                    && payload.len() <= out.remaining() =>
                            {
                                out.put_slice(payload)
                            }
                            _ => self.plaintext.extend_from_slice(payload),
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encoder) => {
                    let encoded = append_growing(
                        self.queued.buffer_mut(),
                        1024,
                        |out| encoder.encode(out),
                        |e| match e {
                            EncodeError::InsufficientSize(size) => Some(size.required_size),
                            EncodeError::AlreadyEncoded => None,
                        },
                    );
                    encoded.map_err(io::Error::other)?;
                    None
                }
                // The records are in `queued`, sent before anything else.
                ConnectionState::TransmitTlsData(sent) => {
                    sent.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Wait::ForRecords),
                ConnectionState::WriteTraffic(_) if self.peer_closed => Some(Wait::PeerClosed),
                ConnectionState::WriteTraffic(_) => Some(Wait::Established),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Wait::PeerClosed)
                }
                // No early data is accepted (max_early_data_size is 0).
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS connection state",
                    ))
                }
            };
            self.received.consume(discard);
            if let Some(wait) = wait {
                return Ok(wait);
            }
        }
    }

    /// Writes queued records to the transport.
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.queued.poll_write_to(&mut self.transport, cx)
    }

    /// Reads more records from the transport into `received`. `Ok(false)`
    /// at the transport's end.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.transport).poll_read(cx, &mut buf))?;
        let filled = buf.filled();
        self.received.extend_from_slice(filled);
        Poll::Ready(Ok(!filled.is_empty()))
    }

    /// Encrypts `data` into `queued`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        // A record per 16 KiB, each with at most 22 bytes of header,
        // content type and tag (TLS 1.3), or 29 (TLS 1.2).
        let room = data.len() + (data.len() / 16384 + 1) * 64;
        self.queue_from_writer(room, |writer, out| writer.encrypt(data, out))
    }

    /// Queues our close_notify, once.
    fn queue_close_notify(&mut self) -> io::Result<()> {
        if !self.close_queued {
            self.close_queued = true;
            self.queue_from_writer(64, |writer, out| writer.queue_close_notify(out))?;
        }
        Ok(())
    }

    /// Queues what `write` puts out with rustls' writer, growing `queued`
    /// from `room` bytes as rustls asks.
    fn queue_from_writer(
        &mut self,
        room: usize,
        mut write: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> io::Result<()> {
        // What rustls still has to take or send comes first; then, with
        // no records given, it only reports whether it may send.
        self.process()?;
        let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut []);
        let ConnectionState::WriteTraffic(mut writer) = state.map_err(tls_error)? else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection cannot send now",
            ));
        };
        let written = append_growing(
            self.queued.buffer_mut(),
            room,
            |out| write(&mut writer, out),
            |e| match e {
                EncryptError::InsufficientSize(size) => Some(size.required_size),
                _ => None,
            },
        );
        written.map_err(io::Error::other)
    }
}

/// Appends to `buffer` what `write` puts in the room it is given: `room`
/// bytes at first, then as many as `needed` says its error asks for.
fn append_growing<E>(
    buffer: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = buffer.len();
    loop {
        buffer.resize(start + room, 0);
        match write(&mut buffer[start..]) {
            Ok(written) => {
                buffer.truncate(start + written);
                return Ok(());
            }
            Err(e) => match needed(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    buffer.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                this.plaintext.read_into(out);
                return Poll::Ready(Ok(()));
            }
            let before = out.filled().len();
            let wait = this.process_into(Some(out))?;
            // Answers rustls owes the peer (a key update, an alert) go out
            // now; they do not hold up reading.
            if let Poll::Ready(Err(e)) = this.poll_send_queued(cx) {
                return Poll::Ready(Err(e));
            }
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if !this.plaintext.is_empty() {
                continue;
            }
            if matches!(wait, Wait::PeerClosed) {
                return Poll::Ready(Ok(()));
            }
            if !ready!(this.poll_receive(cx))? {
                this.peer_closed = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queued.len() >= MAX_QUEUED {
            ready!(this.poll_send_queued(cx))?;
        }
        this.encrypt(data)?;
        // Sent as far as the transport takes it now; the rest by flush.
        if let Poll::Ready(Err(e)) = this.poll_send_queued(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Without a handshake done there is nothing to close.
        if let Err(e) = this.queue_close_notify() {
            tracing::debug!("no TLS close_notify: {e}");
        }
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.transport).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, DuplexStream};

    use super::*;
    use crate::tls::ServerTls;

    type Client = tokio_rustls::client::TlsStream<DuplexStream>;

    /// A server stream and a tokio-rustls client connected to it.
    async fn connected(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (tempfile::TempDir, TlsStream<DuplexStream>, Client) {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls::load_or_generate(None, None, "tls.test", dir.path()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(tls.chain[0].clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        // A small pipe: records go through in several reads and writes.
        let (client_side, server_side) = duplex(1000);
        let name = rustls::pki_types::ServerName::try_from("tls.test").unwrap();
        let (server, client) = tokio::join!(
            TlsStream::accept(server_side, tls.config.clone()),
            connector.connect(name, client_side)
        );
        (dir, server.unwrap(), client.unwrap())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn holds_no_buffer(stream: &TlsStream<DuplexStream>) {
        assert_eq!(stream.received.capacity(), 0, "received");
        assert_eq!(stream.plaintext.capacity(), 0, "plaintext");
        assert_eq!(stream.queued.capacity(), 0, "queued");
    }

    /// What `to` reads of `data` while `from` writes and flushes it.
    async fn cross(
        from: &mut (impl AsyncWrite + Unpin),
        to: &mut (impl AsyncRead + Unpin),
        data: &[u8],
    ) -> Vec<u8> {
        let ((), read) = tokio::join!(
            async {
                from.write_all(data).await.unwrap();
                from.flush().await.unwrap();
            },
            async {
                let mut read = vec![0; data.len()];
                to.read_exact(&mut read).await.unwrap();
                read
            }
        );
        read
    }

    async fn exchange(server: &mut TlsStream<DuplexStream>, client: &mut Client, len: usize) {
        let data = pattern(len);
        assert_eq!(cross(client, server, &data).await, data, "client to server");
        assert_eq!(cross(server, client, &data).await, data, "server to client");
    }

    #[tokio::test]
    async fn data_crosses_both_ways_and_an_idle_stream_holds_no_buffer() {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let (_dir, mut server, mut client) = connected(versions).await;
            holds_no_buffer(&server);
            for len in [1, 600, 16_384, 100_000] {
                exchange(&mut server, &mut client, len).await;
                holds_no_buffer(&server);
            }
        }
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_followed() {
        let (_dir, mut server, mut client) = connected(&[&rustls::version::TLS13]).await;
        exchange(&mut server, &mut client, 600).await;
        client.get_mut().1.refresh_traffic_keys().unwrap();
        exchange(&mut server, &mut client, 600).await;
        exchange(&mut server, &mut client, 600).await;
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_both_ways() {
        let (_dir, mut server, mut client) = connected(&[&rustls::version::TLS13]).await;
        exchange(&mut server, &mut client, 10).await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
        // The client sees a clean end (close_notify), not a truncation.
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_client_that_does_not_speak_tls_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ServerTls::load_or_generate(None, None, "tls.test", dir.path()).unwrap();
        let (mut client, server_side) = duplex(1000);
        client
            .write_all(b"<?xml version='1.0'?><stream:stream>")
            .await
            .unwrap();
        let refused = TlsStream::accept(server_side, tls.config.clone()).await;
        let e = refused.err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // With a TLS alert record (content type 21).
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.first(), Some(&21), "{answer:?}");
        // A client that goes away mid-handshake is an unexpected end.
        let (client, server_side) = duplex(1000);
        drop(client);
        let ended = TlsStream::accept(server_side, tls.config.clone()).await;
        assert!(ended.is_err());
    }
}
