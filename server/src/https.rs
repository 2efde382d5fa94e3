//! The HTTPS listener (HTTP/1.1, hyper, the server's certificate):
//! the upload service's files under `/upload/`, XMPP over WebSocket
//! (RFC 7395) at `/xmpp-websocket`, and its discovery (XEP-0156) at
//! `/.well-known/host-meta` and `host-meta.json`. Every response allows
//! cross-origin use, so browser clients served from elsewhere work.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use crate::c2s::limits::ConnectionSlot;
use crate::c2s::negotiation::TlsMode;
use crate::c2s::websocket::{self, WsTransport};
use crate::server::Server;
use crate::upload::http::{empty, plain};

/// Time for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The path of XMPP over WebSocket.
pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

/// The body of every response.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Accepts HTTPS connections until the server shuts down.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    tracker: TaskTracker,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Some(slot) = server.connections.admit(peer.ip()) else {
                    tracing::info!(%peer, "too many connections from this address; refused");
                    continue;
                };
                let server = server.clone();
                let acceptor = acceptor.clone();
                let sessions = tracker.clone();
                // Shared with a WebSocket session the connection becomes:
                // the slot is free once both are gone.
                let slot = Arc::new(slot);
                tracker.spawn(async move {
                    connection(server, acceptor, tcp, peer, sessions, slot).await;
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    server: Arc<Server>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    sessions: TaskTracker,
    slot: Arc<ConnectionSlot>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "HTTPS TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let shutdown = server.shutdown.clone();
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        let sessions = sessions.clone();
        let slot = slot.clone();
        async move {
            let mut response = route(server, request, peer, &sessions, slot).await;
            allow_cross_origin(&mut response);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "HTTPS connection ended: {e}");
            }
        }
        _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
}

async fn route(
    server: Arc<Server>,
    request: Request<Incoming>,
    peer: SocketAddr,
    sessions: &TaskTracker,
    slot: Arc<ConnectionSlot>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::OPTIONS, _) => preflight(),
        (_, WEBSOCKET_PATH) => upgrade(server, request, peer, sessions, slot),
        (&Method::GET, "/.well-known/host-meta") => host_meta(&server, false),
        (&Method::GET, "/.well-known/host-meta.json") => host_meta(&server, true),
        (_, p) if p.starts_with("/upload/") => crate::upload::http::handle(&server, request).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Upgrades to XMPP over WebSocket and runs the client's session, which
/// keeps the connection's per-IP slot until it ends.
fn upgrade(
    server: Arc<Server>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    sessions: &TaskTracker,
    slot: Arc<ConnectionSlot>,
) -> Response<Body> {
    let headers = request.headers();
    let has = |name: header::HeaderName, wanted: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(wanted))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return plain(StatusCode::UPGRADE_REQUIRED, "connect with a WebSocket");
    }
    if !has(header::SEC_WEBSOCKET_PROTOCOL, websocket::PROTOCOL) {
        return plain(
            StatusCode::BAD_REQUEST,
            "the WebSocket protocol must be 'xmpp'",
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrading = hyper::upgrade::on(&mut request);
    let limit = server.config.limits.max_stanza_bytes;
    sessions.spawn(async move {
        let _slot = slot;
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(%peer, "WebSocket upgrade failed: {e}");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        tracing::debug!(%peer, "XMPP over WebSocket");
        let transport = Box::new(WsTransport::new(socket));
        crate::c2s::session::serve_connection(server, transport, peer, TlsMode::Secured).await;
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(websocket::PROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// XEP-0156: where the WebSocket endpoint is.
fn host_meta(server: &Server, json: bool) -> Response<Body> {
    let url = format!(
        "{}{WEBSOCKET_PATH}",
        server.upload.base_url.replacen("https://", "wss://", 1)
    );
    let (body, kind) = if json {
        let links = serde_json::json!({
            "links": [{ "rel": "urn:xmpp:alt-connections:websocket", "href": url }]
        });
        (links.to_string(), "application/json")
    } else {
        (
            format!(
                "<?xml version='1.0' encoding='utf-8'?>\n\
                 <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
                 <Link rel='urn:xmpp:alt-connections:websocket' href='{url}'/>\n</XRD>\n"
            ),
            "application/xrd+xml",
        )
    };
    let mut response = Response::new(BodyExt::boxed(
        Full::new(Bytes::from(body)).map_err(|never| match never {}),
    ));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// The answer to a CORS preflight.
fn preflight() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

fn allow_cross_origin(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
