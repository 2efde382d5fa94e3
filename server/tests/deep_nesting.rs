//! Elements nested thousands deep, sent to every port the server listens
//! on, close only the stream that sent them: before the depth guard, a
//! few thousand nested start tags on the s2s port (plain, after STARTTLS
//! or over direct TLS) or in a WebSocket message overflowed the reading
//! task's stack and aborted the whole process. After each attack the
//! server must still answer a logged-in bystander and a new login.

mod common;

use std::time::Duration;

use common::{stream_header, tls_to, RawClient, TestCa, TestClient, TestServer, DOMAIN};
use tokio::net::TcpStream;

/// Deep enough to overflow a recursive builder's stack many times over,
/// small enough to fit the default stanza size limit (256 KiB).
fn nested() -> String {
    "<a>".repeat(30_000)
}

/// The same nesting, closed: one complete element in `jabber:client` (a
/// WebSocket message stands alone, so it declares its namespace).
fn nested_element() -> String {
    "<message xmlns='jabber:client'>".to_owned() + &nested() + &"</a>".repeat(30_000) + "</message>"
}

fn s2s_header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream from='evil.test' to='{to}' version='1.0' \
         xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// Sends the nested elements and waits (bounded) for the connection to
/// end; returns what the server sent.
async fn attack(mut raw: RawClient) -> String {
    raw.received.clear();
    raw.try_send(nested().as_bytes()).await;
    raw.read_to_close(Duration::from_secs(10))
        .await
        .expect("the server closes the attacking stream")
}

/// The server is alive: the bystander's round trip works and a new user
/// logs in.
async fn still_serving(server: &TestServer, bystander: &mut TestClient, after: &str) {
    assert!(
        common::process_alive(server.pid()),
        "the server died after {after}; log: {}",
        server.log()
    );
    bystander.sync().await;
    let fresh = TestClient::login(server, "alice", "pw").await;
    fresh.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_nesting_on_every_port_closes_only_that_stream() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bystander", "pw");
    let mut bystander = TestClient::login(&server, "bystander", "pw").await;

    // c2s, before TLS, after STARTTLS, over direct TLS, after login.
    let mut raw = RawClient::connect(&server).await;
    raw.send(&stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    attack(raw).await;
    still_serving(&server, &mut bystander, "c2s before TLS").await;

    attack(RawClient::connect_tls(&server).await).await;
    still_serving(&server, &mut bystander, "c2s after STARTTLS").await;

    let tls = tls_to(
        TcpStream::connect(server.c2s_tls).await.expect("connect"),
        DOMAIN,
    )
    .await;
    let mut raw = RawClient::over(tls);
    raw.send(&stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    attack(raw).await;
    still_serving(&server, &mut bystander, "c2s direct TLS").await;

    let text = attack(RawClient::login(&server, "alice", "pw").await).await;
    assert!(
        text.contains("<policy-violation") || text.contains("<not-well-formed"),
        "{text}"
    );
    still_serving(&server, &mut bystander, "c2s after login").await;

    // s2s, before TLS, after STARTTLS (no client certificate), over
    // direct TLS.
    let mut raw = RawClient::over(TcpStream::connect(server.s2s).await.expect("connect"));
    raw.send(&s2s_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    attack(raw).await;
    still_serving(&server, &mut bystander, "s2s before TLS").await;

    let mut raw = RawClient::over(TcpStream::connect(server.s2s).await.expect("connect"));
    raw.send(&s2s_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    raw.read_until("<proceed").await;
    raw.upgrade(TestCa::get().client_config(), DOMAIN).await;
    raw.send(&s2s_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    let text = attack(raw).await;
    assert!(text.contains("<policy-violation"), "{text}");
    still_serving(&server, &mut bystander, "s2s after STARTTLS").await;

    let tls = tls_to(
        TcpStream::connect(server.s2s_tls).await.expect("connect"),
        DOMAIN,
    )
    .await;
    let mut raw = RawClient::over(tls);
    raw.send(&s2s_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    attack(raw).await;
    still_serving(&server, &mut bystander, "s2s direct TLS").await;

    // One WebSocket message.
    websocket_attack(&server).await;
    still_serving(&server, &mut bystander, "a WebSocket message").await;
}

async fn websocket_attack(server: &TestServer) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let tls = tls_to(
        TcpStream::connect(server.https).await.expect("connect"),
        DOMAIN,
    )
    .await;
    let mut request = format!("wss://{DOMAIN}/xmpp-websocket")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "xmpp".parse().expect("header value"),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("WebSocket handshake");
    socket
        .send(Message::text(format!(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"
        )))
        .await
        .expect("open");
    socket
        .send(Message::text(nested_element()))
        .await
        .expect("send");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "the server closes the WebSocket");
}
