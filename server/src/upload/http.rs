//! The HTTP side of the upload service: `PUT /upload/TOKEN/NAME` stores
//! the file of a slot (exactly the announced size, once), `GET` serves it.
//! Files are streamed to and from `<data_dir>/uploads/`, never held whole
//! in memory. The listener is [`crate::https`].

use std::path::PathBuf;

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::https::Body;
use crate::server::Server;

/// Serves `/upload/...` requests.
pub async fn handle(server: &Server, request: Request<Incoming>) -> Response<Body> {
    let Some(token) = token_of(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let slot = match server.storage.upload_slot(&token).await {
        Ok(Some(slot)) => slot,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => {
            tracing::error!("reading an upload slot failed: {e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure");
        }
    };
    match *request.method() {
        Method::PUT if slot.completed => plain(StatusCode::CONFLICT, "already uploaded"),
        // Past its validity an unused slot no longer counts against the
        // quota: it can no longer be used either.
        Method::PUT if slot.created_at < super::slots_valid_since() => {
            plain(StatusCode::GONE, "the slot expired: ask for a new one")
        }
        Method::PUT => put(server, &token, slot.size, request).await,
        Method::GET | Method::HEAD if !slot.completed => {
            plain(StatusCode::NOT_FOUND, "not uploaded yet")
        }
        Method::GET => get(server, &token, slot.size).await,
        Method::HEAD => sized(StatusCode::OK, slot.size, empty()),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "PUT or GET"),
    }
}

/// Stores the body, which must be exactly `size` bytes.
async fn put(
    server: &Server,
    token: &str,
    size: u64,
    request: Request<Incoming>,
) -> Response<Body> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(length) if length == size => {}
        Some(length) if length > size => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "larger than the slot")
        }
        _ => {
            return plain(
                StatusCode::BAD_REQUEST,
                "Content-Length must be the slot's size",
            )
        }
    }
    let dir = server.config.uploads_dir();
    let part = dir.join(format!("{token}.{:016x}.part", rand::random::<u64>()));
    let idle = std::time::Duration::from_secs(server.config.upload.idle_timeout_secs);
    let written = receive(&dir, &part, request.into_body(), size, idle).await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&part).await;
        return match e {
            Received::Mismatch => plain(StatusCode::BAD_REQUEST, "the body is not the slot's size"),
            Received::Io(e) => {
                tracing::error!("storing an upload failed: {e}");
                plain(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file")
            }
            Received::Body(e) => {
                tracing::debug!("upload interrupted: {e}");
                plain(StatusCode::BAD_REQUEST, "upload interrupted")
            }
            Received::Stalled => plain(StatusCode::REQUEST_TIMEOUT, "the upload stalled"),
        };
    }
    match server.storage.upload_complete(token).await {
        Ok(true) => match tokio::fs::rename(&part, dir.join(token)).await {
            Ok(()) => plain(StatusCode::CREATED, "stored"),
            Err(e) => {
                tracing::error!("storing an upload failed: {e}");
                plain(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file")
            }
        },
        Ok(false) => {
            let _ = tokio::fs::remove_file(&part).await;
            plain(StatusCode::CONFLICT, "already uploaded")
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            tracing::error!("completing an upload failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure")
        }
    }
}

/// Why receiving a body failed.
enum Received {
    /// Its length is not the slot's size.
    Mismatch,
    /// Writing the file failed.
    Io(std::io::Error),
    /// The connection failed.
    Body(hyper::Error),
    /// Nothing arrived for `upload.idle_timeout_secs`.
    Stalled,
}

async fn receive(
    dir: &std::path::Path,
    part: &PathBuf,
    mut body: Incoming,
    size: u64,
    idle: std::time::Duration,
) -> Result<(), Received> {
    tern_xmpp::private::private_dir(dir).map_err(Received::Io)?;
    let mut file = tokio::fs::OpenOptions::from(tern_xmpp::private::private_options())
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)
        .await
        .map_err(Received::Io)?;
    let mut received = 0u64;
    loop {
        let next = tokio::time::timeout(idle, body.frame()).await;
        let Some(frame) = next.map_err(|_| Received::Stalled)? else {
            break;
        };
        let frame = frame.map_err(Received::Body)?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > size {
                return Err(Received::Mismatch);
            }
            file.write_all(&data).await.map_err(Received::Io)?;
        }
    }
    if received != size {
        return Err(Received::Mismatch);
    }
    file.sync_all().await.map_err(Received::Io)?;
    Ok(())
}

/// Streams the stored file.
async fn get(server: &Server, token: &str, size: u64) -> Response<Body> {
    let path = server.config.uploads_dir().join(token);
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let stream = tokio_util::io::ReaderStream::new(file).map_ok(Frame::data);
            sized(
                StatusCode::OK,
                size,
                BodyExt::boxed(StreamBody::new(stream)),
            )
        }
        // Completed a moment ago and not yet moved in place.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            plain(StatusCode::NOT_FOUND, "not uploaded yet")
        }
        Err(e) => {
            tracing::error!("reading an upload failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "storage failure")
        }
    }
}

/// The token of `/upload/TOKEN/NAME`, if well-formed.
fn token_of(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix("/upload/")?.splitn(2, '/');
    let token = parts.next()?;
    parts.next()?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then(|| token.to_owned())
}

fn sized(status: StatusCode, size: u64, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_LENGTH, size.into());
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// A short text response.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(
        Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}),
    ));
    *response.status_mut() = status;
    response
}

/// An empty body.
pub fn empty() -> Body {
    BodyExt::boxed(Full::new(Bytes::new()).map_err(|never| match never {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_paths_name_a_slot() {
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            token_of(&format!("/upload/{token}/x.bin")).as_deref(),
            Some(token)
        );
        assert_eq!(token_of(&format!("/upload/{token}")), None);
        assert_eq!(token_of("/upload/../x/y"), None);
        assert_eq!(token_of(&format!("/other/{token}/x")), None);
    }
}
