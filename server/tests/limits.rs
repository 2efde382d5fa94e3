//! Every resource a peer can make the server spend has a limit with a
//! tested default, answered with the error a client or server expects,
//! while a bystander keeps being served.

mod common;

use std::time::{Duration, Instant};

use common::{s2s_stream, ServerOptions, TestClient, TestServer, DOMAIN};

/// Round trips of a logged-in bystander, measured while `attack` runs;
/// returns their 99th percentile.
async fn bystander_p99(
    server: &TestServer,
    attack: impl std::future::Future<Output = ()>,
) -> Duration {
    let mut bystander = TestClient::login(server, "bystander", "pw").await;
    let mut attack = std::pin::pin!(attack);
    let mut times = Vec::new();
    loop {
        let started = Instant::now();
        tokio::select! {
            () = &mut attack => break,
            () = bystander.sync() => times.push(started.elapsed()),
        }
    }
    // A login after the attack, timed too.
    let started = Instant::now();
    TestClient::login(server, "bystander", "pw")
        .await
        .close()
        .await;
    times.push(started.elapsed());
    times.sort();
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

fn dialback_request(i: usize) -> String {
    format!("<db:result from='d{i}.evil.test' to='{DOMAIN}'>key{i}</db:result>")
}

/// One unauthenticated s2s stream used to start a verification (a DNS
/// lookup and a connection to a domain it names) for every
/// `<db:result/>`: 5,000 of them took 125 MB in 5 s. Now a stream may
/// have `federation.max_pending_dialbacks` under way and the server
/// `federation.max_dialback_verifications`.
#[tokio::test(flavor = "multi_thread")]
async fn dialback_requests_are_bounded_per_stream_and_in_all() {
    // A name server that never answers: verifications stay under way.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let server = TestServer::start_with(ServerOptions {
        sections: format!(
            "[federation]\nnameserver = \"{}\"\nmax_pending_dialbacks = 4\nmax_dialback_verifications = 6\n",
            silent.local_addr().expect("address")
        ),
        ..Default::default()
    });
    server.add_user("bystander", "pw");
    let p99 = bystander_p99(&server, async {
        // 5,000 requests on one stream: it is closed at the fifth.
        let (mut flood, _) = s2s_stream(&server, "evil.test", "evil.test").await;
        let requests: String = (0..5000).map(dialback_request).collect();
        flood.try_send(requests.as_bytes()).await;
        let text = flood
            .read_to_close(Duration::from_secs(10))
            .await
            .expect("the stream is closed");
        assert!(text.contains("<policy-violation"), "{text}");
        assert!(!text.contains("type='valid'"), "{text}");

        // Its four verifications are still under way: a second stream
        // gets two more, then resource-constraint errors.
        let (mut second, _) = s2s_stream(&server, "evil.test", "evil.test").await;
        let requests: String = (100..104).map(dialback_request).collect();
        second.send(&requests).await;
        let text = second.read_until("d103.evil.test").await;
        assert_eq!(text.matches("<resource-constraint").count(), 2, "{text}");
        assert!(text.contains("</db:result>"), "{text}");
        assert!(
            text.contains("d102.evil.test") && !text.contains("d101.evil.test"),
            "{text}"
        );
        // The same pair again while under way is ignored.
        second.received.clear();
        second.send(&dialback_request(100)).await;
        let closed = second.read_to_close(Duration::from_millis(500)).await;
        assert!(closed.is_none(), "the stream stays open: {closed:?}");
    })
    .await;
    assert!(p99 < Duration::from_millis(100), "bystander p99 {p99:?}");
    drop(silent);
}

/// Opens an XMPP-over-WebSocket session (up to the server's `<open/>`).
async fn websocket(
    server: &TestServer,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    String,
> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let tcp = tokio::net::TcpStream::connect(server.https)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(common::TestCa::get().client_config());
    let name = rustls::pki_types::ServerName::try_from(DOMAIN.to_owned()).expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut request = format!("wss://{DOMAIN}/xmpp-websocket")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().expect("value"));
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send(Message::text(format!(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"
        )))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(_))) => Ok(socket),
        other => Err(format!("no <open/> answer: {other:?}")),
    }
}

/// WebSocket sessions count against `limits.max_connections_per_ip` for
/// as long as they last (the slot used to be freed at the upgrade: one
/// address held a thousand sessions).
#[tokio::test(flavor = "multi_thread")]
async fn websocket_sessions_count_against_the_per_address_limit() {
    let server = TestServer::start_with(ServerOptions {
        limits: "max_connections_per_ip = 3".to_owned(),
        ..Default::default()
    });
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            websocket(&server)
                .await
                .expect("a session within the limit"),
        );
    }
    // Upgraded sessions still hold their slots: a fourth connection, of
    // any kind, is refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(websocket(&server).await.is_err(), "a fourth WebSocket");
    let mut raw = common::RawClient::connect(&server).await;
    raw.try_send(common::stream_header(DOMAIN).as_bytes()).await;
    assert_eq!(
        raw.read_to_close(Duration::from_secs(5)).await.as_deref(),
        Some(""),
        "a c2s connection from the same address is closed at once"
    );
    // One session ends: its slot is free again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match websocket(&server).await {
            Ok(socket) => {
                open.push(socket);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the freed slot: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
