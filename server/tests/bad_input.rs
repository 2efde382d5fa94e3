//! Bad input never crashes the server nor disturbs other sessions: each
//! case gets the error RFC 6120 names, and a bystander session keeps
//! working throughout.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    omemo_message, stream_header, RawClient, ServerOptions, TestClient, TestServer, DOMAIN,
};

/// A server with small limits, and a logged-in bystander.
async fn server_with_bystander(limits: &str) -> (TestServer, TestClient) {
    let server = TestServer::start_with(ServerOptions {
        limits: limits.to_owned(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    server.add_user("bystander", "pw");
    let bystander = TestClient::login(&server, "bystander", "pw").await;
    (server, bystander)
}

fn closed_with(raw_text: Option<String>, condition: &str) -> String {
    let text = raw_text.expect("the server closes the connection");
    assert!(
        text.contains(&format!("<{condition}")),
        "expected {condition}: {text}"
    );
    assert!(
        text.contains("</stream:stream>"),
        "stream footer sent: {text}"
    );
    text
}

#[tokio::test]
async fn malformed_xml_gets_not_well_formed_before_and_after_auth() {
    let (server, mut bystander) = server_with_bystander("").await;
    let mut raw = RawClient::connect(&server).await;
    raw.send(&stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></wrong>")
        .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "not-well-formed",
    );

    let mut raw = RawClient::login(&server, "alice", "pw").await;
    raw.send("<message to='bystander@tern.test'><body>a & b</body></message>")
        .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "not-well-formed",
    );

    let mut raw = RawClient::login(&server, "alice", "pw").await;
    raw.send("<message to='bystander@tern.test'><x:body>hi</x:body></message>")
        .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "bad-namespace-prefix",
    );
    bystander.sync().await;
}

#[tokio::test]
async fn oversized_stanza_gets_policy_violation() {
    let (server, mut bystander) = server_with_bystander("max_stanza_bytes = 8192").await;
    let mut raw = RawClient::login(&server, "alice", "pw").await;
    let big = "A".repeat(64 * 1024);
    raw.try_send(
        format!("<message to='bystander@{DOMAIN}'><encrypted xmlns='urn:xmpp:omemo:2'>{big}</encrypted></message>")
            .as_bytes(),
    )
    .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "policy-violation",
    );
    bystander
        .expect_none("the oversized message", Duration::from_millis(300), |e| {
            e.name() == "message"
        })
        .await;
    // A stanza under the limit is fine.
    let mut raw = RawClient::login(&server, "alice", "pw").await;
    let small = "A".repeat(4000);
    raw.send(&format!(
        "<message to='bystander@{DOMAIN}' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'>{small}</encrypted></message>"
    ))
    .await;
    raw.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    raw.read_until("id='p'").await;
}

#[tokio::test]
async fn wrong_domain_gets_host_unknown() {
    let (server, mut bystander) = server_with_bystander("").await;
    let mut raw = RawClient::connect(&server).await;
    raw.send(&stream_header("elsewhere.example")).await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "host-unknown",
    );
    bystander.sync().await;
}

#[tokio::test]
async fn a_stream_that_is_not_a_client_stream_gets_invalid_namespace() {
    let (server, mut bystander) = server_with_bystander("").await;
    for header in [
        stream_header(DOMAIN).replace("jabber:client", "jabber:server"),
        stream_header(DOMAIN).replace("http://etherx.jabber.org/streams", "urn:other"),
    ] {
        let mut raw = RawClient::connect(&server).await;
        raw.send(&header).await;
        let text = closed_with(
            raw.read_to_close(Duration::from_secs(5)).await,
            "invalid-namespace",
        );
        // The error comes in a stream of the server's own.
        assert!(
            text.starts_with("<?xml version='1.0'?><stream:stream"),
            "{text}"
        );
    }
    // A malformed header gets not-well-formed the same way.
    let mut raw = RawClient::connect(&server).await;
    raw.send("<?xml version='1.0'?><stream:stream to=tern.test>")
        .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "not-well-formed",
    );
    bystander.sync().await;
}

#[tokio::test]
async fn auth_failures_are_rate_limited_per_ip_with_a_delay() {
    let (server, mut bystander) = server_with_bystander("auth_failures_per_minute = 2").await;
    let plain = |user: &str, pw: &str| {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"));
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
    };
    let mut raw = RawClient::connect_tls(&server).await;
    for _ in 0..2 {
        raw.received.clear();
        raw.send(&plain("alice", "wrong")).await;
        raw.read_until("</failure>").await;
        assert!(raw.received.contains("<not-authorized"), "{}", raw.received);
    }
    // Over the limit: even the right password waits and is refused.
    raw.received.clear();
    let started = Instant::now();
    raw.send(&plain("alice", "pw")).await;
    raw.read_until("</failure>").await;
    assert!(
        raw.received.contains("<temporary-auth-failure"),
        "{}",
        raw.received
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "refusal is delayed"
    );
    // Unknown users fail the same way as wrong passwords (no enumeration).
    let mut other = RawClient::connect_tls(&server).await;
    other.send(&plain("nobody", "x")).await;
    other.read_until("</failure>").await;
    bystander.sync().await;
}

#[tokio::test]
async fn idle_unauthenticated_stream_is_closed() {
    let (server, mut bystander) = server_with_bystander("unauthenticated_timeout_secs = 1").await;
    let mut raw = RawClient::connect_tls(&server).await;
    let started = Instant::now();
    closed_with(
        raw.read_to_close(Duration::from_secs(10)).await,
        "connection-timeout",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A silent TCP connection (no stream header at all) is dropped too.
    let mut silent = RawClient::connect(&server).await;
    assert!(silent
        .read_to_close(Duration::from_secs(10))
        .await
        .is_some());
    bystander.sync().await;
}

#[tokio::test]
async fn auth_before_tls_and_stanzas_before_auth_are_refused() {
    let (server, mut bystander) = server_with_bystander("").await;
    let mut raw = RawClient::connect(&server).await;
    raw.send(&stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    raw.send(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
    )
    .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "policy-violation",
    );

    let mut raw = RawClient::connect_tls(&server).await;
    raw.send(&format!(
        "<message to='bystander@{DOMAIN}'><body>x</body></message>"
    ))
    .await;
    closed_with(
        raw.read_to_close(Duration::from_secs(5)).await,
        "not-authorized",
    );
    bystander.sync().await;
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let (server, mut bystander) = server_with_bystander("max_connections_per_ip = 3").await;
    // The bystander holds one slot; two more fit.
    let _a = RawClient::connect_tls(&server).await;
    let _b = RawClient::connect_tls(&server).await;
    let mut refused = RawClient::connect(&server).await;
    refused.send(&stream_header(DOMAIN)).await;
    let text = refused
        .read_to_close(Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(!text.contains("<stream:features"), "{text}");
    bystander.sync().await;
}

#[tokio::test]
async fn plaintext_body_is_refused_with_policy_violation() {
    let (server, mut bystander) = server_with_bystander("").await;
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    bystander.available().await;
    bystander.sync().await;
    alice
        .send_xml(&format!(
            "<message xmlns='jabber:client' to='bystander@{DOMAIN}' type='chat' id='plain'><body>hello</body></message>"
        ))
        .await;
    let error = alice
        .expect("policy-violation", |e| e.attr("id") == Some("plain"))
        .await;
    let error = error.get_child("error", "jabber:client").expect("error");
    assert!(error.has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert!(error
        .children()
        .any(|c| c.name() == "text" && c.text().contains("end-to-end encryption")));
    bystander
        .expect_none("the plain message", Duration::from_millis(500), |e| {
            e.attr("id") == Some("plain")
        })
        .await;
    // The encrypted one goes through.
    alice
        .send_xml(&omemo_message(
            &format!("bystander@{DOMAIN}"),
            "enc",
            "eA==",
        ))
        .await;
    bystander
        .expect("the encrypted message", |e| e.attr("id") == Some("enc"))
        .await;
}

#[tokio::test]
async fn route_live_delivers_plain_bodies_online_but_never_stores_them() {
    let server = TestServer::start_with(ServerOptions {
        top: "plaintext = \"route-live\"".into(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice
        .send_xml(&format!("<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='p1'><body>hi</body></message>"))
        .await;
    let bounce = alice
        .expect("bounce while offline", |e| e.attr("id") == Some("p1"))
        .await;
    assert_eq!(bounce.attr("type"), Some("error"));
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    bob.sync().await;
    alice
        .send_xml(&format!("<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='p2'><body>hi</body></message>"))
        .await;
    bob.expect("live plain message", |e| e.attr("id") == Some("p2"))
        .await;
}
