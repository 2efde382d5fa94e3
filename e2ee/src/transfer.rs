//! HTTPS transfers of encrypted files to and from an upload service
//! (XEP-0363 slots): one HTTP/1.1 request per connection (hyper), TLS
//! verified like the XMPP connection, progress reported as it goes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::connection::tls_client;

/// Called with the number of bytes moved since the last call.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Bytes per body chunk (and progress step) of an upload.
const CHUNK: usize = 64 * 1024;
/// Time to connect and to get the answer's head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The URL is not an `https://` URL with a host.
    #[error("not an https URL: {0}")]
    Url(String),
    /// The service could not be reached (or its certificate not trusted).
    #[error("cannot reach the upload service: {0}")]
    Connect(String),
    /// The HTTP exchange failed.
    #[error("the transfer broke off: {0}")]
    Http(String),
    /// The service answered with an error status.
    #[error("the upload service answered HTTP {0}")]
    Status(u16),
    /// The download is larger than the file can be.
    #[error("the download is larger than announced")]
    TooLarge,
}

/// Uploads `body` with PUT.
pub async fn put(url: &str, body: Vec<u8>, progress: Progress) -> Result<(), TransferError> {
    let uri = parse(url)?;
    let length = body.len();
    let body = Bytes::from(body);
    let chunks = (0..length).step_by(CHUNK).map(move |start| {
        let chunk = body.slice(start..(start + CHUNK).min(length));
        progress(chunk.len() as u64);
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    let request = Request::builder()
        .method(Method::PUT)
        .uri(uri.path())
        .header(HOST, authority(&uri))
        .header(CONTENT_LENGTH, length)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .map_err(|e| TransferError::Http(e.to_string()))?;
    let response = send(&uri, request).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(TransferError::Status(status.as_u16()));
    }
    Ok(())
}

/// Downloads with GET; refuses more than `max` bytes.
pub async fn get(url: &str, max: u64, progress: Progress) -> Result<Vec<u8>, TransferError> {
    let uri = parse(url)?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri.path())
        .header(HOST, authority(&uri))
        .body(Empty::<Bytes>::new())
        .map_err(|e| TransferError::Http(e.to_string()))?;
    let response = send(&uri, request).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(TransferError::Status(status.as_u16()));
    }
    let mut body = response.into_body().into_data_stream();
    let mut data = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| TransferError::Http(e.to_string()))?;
        if (data.len() + chunk.len()) as u64 > max {
            return Err(TransferError::TooLarge);
        }
        progress(chunk.len() as u64);
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

fn parse(url: &str) -> Result<Uri, TransferError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| TransferError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(TransferError::Url(url.to_owned()));
    }
    Ok(uri)
}

fn authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// Connects, sends one request and returns the answer's head (the body
/// streams from the connection, which runs on its own task).
async fn send<B>(
    uri: &Uri,
    request: Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, TransferError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(443);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tls_client(tcp, host, b"http/1.1").await
    })
    .await
    .map_err(|_| TransferError::Connect(format!("{host}:{port}: timed out")))?
    .map_err(TransferError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(connected))
        .await
        .map_err(|e| TransferError::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("file transfer connection: {e}");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| TransferError::Http(e.to_string()))
}
