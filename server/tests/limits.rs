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

/// The salt of a SCRAM exchange for `user` (from the server-first
/// message), on a fresh connection; the connection is left mid-exchange.
async fn scram_salt(server: &TestServer, user: &str) -> (common::RawClient, String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = common::RawClient::connect_tls(server).await;
    raw.received.clear();
    let first = b64.encode(format!("n,,n={user},r=fyko+d2lbbFgONRv9qkxdawL"));
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
    ))
    .await;
    let text = raw.read_until("</challenge>").await;
    let start = text.find("<challenge").expect("challenge");
    let data = &text[text[start..].find('>').expect("tag") + start + 1
        ..text.find("</challenge>").expect("end")];
    let server_first = String::from_utf8(b64.decode(data.trim()).expect("base64")).expect("utf-8");
    let salt = server_first
        .split(',')
        .find_map(|part| part.strip_prefix("s="))
        .expect("a salt")
        .to_owned();
    raw.received.clear();
    (raw, salt)
}

/// SCRAM does not tell which names exist: an unknown name gets the same
/// salt on every attempt, as a real user does, also across restarts.
#[tokio::test(flavor = "multi_thread")]
async fn scram_does_not_tell_which_names_exist() {
    let mut server = TestServer::start_with(ServerOptions {
        limits: "auth_failures_per_minute = 100".to_owned(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    let (_, ghost) = scram_salt(&server, "ghost").await;
    let (_, again) = scram_salt(&server, "ghost").await;
    assert_eq!(ghost, again, "an unknown name's salt is stable");
    let (_, alice) = scram_salt(&server, "alice").await;
    let (_, alice_again) = scram_salt(&server, "alice").await;
    assert_eq!(alice, alice_again);
    assert_eq!(ghost.len(), alice.len(), "decoy and real salts look alike");
    assert!(server.terminate());
    server.restart();
    let (_, after_restart) = scram_salt(&server, "ghost").await;
    assert_eq!(ghost, after_restart, "the decoy key is kept");
}

/// An attempt abandoned after the server's challenge counts as a failure
/// (`limits.auth_failures_per_minute`): it used to cost nothing.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_scram_attempts_count_as_failures() {
    let server = TestServer::start_with(ServerOptions {
        limits: "auth_failures_per_minute = 3".to_owned(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    // Three attempts given up after the challenge (an abort, a reply that
    // is not a response, a dropped connection) use the minute's failures.
    let (mut aborted, _) = scram_salt(&server, "alice").await;
    aborted
        .send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    let text = aborted.read_until("</failure>").await;
    assert!(text.contains("<aborted"), "{text}");
    let (mut odd, _) = scram_salt(&server, "alice").await;
    odd.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    odd.read_until("</failure>").await;
    let (dropped, _) = scram_salt(&server, "alice").await;
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = common::RawClient::connect_tls(&server).await;
    refused.received.clear();
    refused
        .send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
        )
        .await;
    let text = refused.read_until("</failure>").await;
    assert!(text.contains("temporary-auth-failure"), "{text}");
}

/// Push registrations are bounded per user (`limits.max_push_registrations`):
/// each is notified of every message stored offline, so a user could make
/// one stranger's message into thousands of stanzas to other servers.
#[tokio::test(flavor = "multi_thread")]
async fn push_registrations_are_bounded_per_user() {
    use tokio_xmpp::{IqRequest, IqResponse};
    let server = TestServer::start_with(ServerOptions {
        limits: "max_push_registrations = 3".to_owned(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let enable = |i: usize| -> minidom::Element {
        format!("<enable xmlns='urn:xmpp:push:0' jid='push{i}.example.org' node='n{i}'/>")
            .parse()
            .expect("enable")
    };
    for i in 0..3 {
        assert!(matches!(
            alice.iq(None, IqRequest::Set(enable(i))).await,
            IqResponse::Result(_)
        ));
    }
    match alice.iq(None, IqRequest::Set(enable(3))).await {
        IqResponse::Error(e) => assert_eq!(
            e.defined_condition,
            xmpp_parsers::stanza_error::DefinedCondition::ResourceConstraint
        ),
        other => panic!("a fourth registration: {other:?}"),
    }
    // Updating one that exists is fine.
    assert!(matches!(
        alice.iq(None, IqRequest::Set(enable(1))).await,
        IqResponse::Result(_)
    ));
}

/// A claimer may take `keys.claims_per_hour` of a user's single-use key
/// packages, then gets last-resort packages only (20 claims used to drain
/// a user's stock); a user may have `keys.max_devices` devices with
/// packages.
#[tokio::test(flavor = "multi_thread")]
async fn key_package_claims_and_devices_are_bounded() {
    use common::mls::Member;
    let server = TestServer::start_with(ServerOptions {
        sections: "[keys]\nclaims_per_hour = 2\nmax_devices = 1\n".to_owned(),
        ..Default::default()
    });
    let mut dave = Member::new(&server, "dave").await;
    dave.upload(5).await;
    let mut carol = Member::new(&server, "carol").await;
    let dave_jid = format!("dave@{DOMAIN}");
    let last_resort = |packages: &tern_e2ee::wire::keys::KeyPackages| {
        packages.key_packages[0].last_resort == Some(true)
    };
    for _ in 0..2 {
        let claimed = carol.claim(&dave_jid).await.expect("claimed");
        assert!(!last_resort(&claimed), "a single-use package");
    }
    for _ in 0..3 {
        let claimed = carol.claim(&dave_jid).await.expect("claimed");
        assert!(
            last_resort(&claimed),
            "past the limit: the last-resort package"
        );
    }
    // Another claimer has its own allowance; dave's stock is still there.
    let mut erin = Member::new(&server, "erin").await;
    let claimed = erin.claim(&dave_jid).await.expect("claimed");
    assert!(!last_resort(&claimed));

    // A second device of dave's is one too many here.
    let mut dave_laptop = Member::login(&server, "dave").await;
    let refused = dave_laptop.try_upload(1).await.expect_err("refused");
    assert_eq!(
        common::mls::condition(&refused).as_deref(),
        Some("resource-constraint"),
        "{}",
        String::from(&refused)
    );
}

/// Strangers share part of a user's offline storage
/// (`limits.max_offline_from_strangers`) and no sender takes more than
/// `limits.max_offline_per_sender`: a stranger used to fill the queue, and
/// the user's friends then bounced.
#[tokio::test(flavor = "multi_thread")]
async fn strangers_cannot_fill_a_users_offline_storage() {
    use tokio_xmpp::{IqRequest, IqResponse};
    let server = TestServer::start_with(ServerOptions {
        limits: "max_offline_messages = 20\nmax_offline_per_sender = 15\nmax_offline_from_strangers = 10"
            .to_owned(),
        ..Default::default()
    });
    for user in ["alice", "bob", "mallory", "bystander"] {
        server.add_user(user, "pw");
    }
    // bob is in alice's roster; then alice goes away.
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let item: minidom::Element =
        format!("<query xmlns='jabber:iq:roster'><item jid='bob@{DOMAIN}' name='Bob'/></query>")
            .parse()
            .expect("roster item");
    assert!(matches!(
        alice.iq(None, IqRequest::Set(item)).await,
        IqResponse::Result(_)
    ));
    alice.close().await;

    let mut bounced = 0;
    let p99 = bystander_p99(&server, async {
        let mut mallory = TestClient::login(&server, "mallory", "pw").await;
        for i in 0..12 {
            mallory
                .send_xml(&common::omemo_message(
                    &format!("alice@{DOMAIN}"),
                    &format!("m{i}"),
                    "AAAA",
                ))
                .await;
        }
        mallory.sync().await;
        for _ in 0..2 {
            let error = mallory
                .expect("a bounce", |e| e.attr("type") == Some("error"))
                .await;
            assert!(String::from(&error).contains("resource-constraint"));
            bounced += 1;
        }
        let mut bob = TestClient::login(&server, "bob", "pw").await;
        for i in 0..5 {
            bob.send_xml(&common::omemo_message(
                &format!("alice@{DOMAIN}"),
                &format!("b{i}"),
                "AAAA",
            ))
            .await;
        }
        bob.sync().await;
        bob.expect_none("a bounce", Duration::from_millis(300), |e| {
            e.attr("type") == Some("error")
        })
        .await;
    })
    .await;
    assert_eq!(bounced, 2);
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice.available().await;
    let mut from_bob = 0;
    let mut from_mallory = 0;
    for _ in 0..15 {
        let message = alice
            .expect("an offline message", |e| e.name() == "message")
            .await;
        match message.attr("id").map(|id| &id[..1]) {
            Some("b") => from_bob += 1,
            Some("m") => from_mallory += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((from_bob, from_mallory), (5, 10));
    assert!(p99 < Duration::from_millis(100), "bystander p99 {p99:?}");
}

/// PEP nodes per user and item size (`limits.max_pep_nodes`,
/// `limits.max_pep_item_bytes`), roster size (`limits.max_roster_items`)
/// and subscription requests waiting from strangers
/// (`limits.max_pending_subscriptions`) are bounded.
#[tokio::test(flavor = "multi_thread")]
async fn pep_rosters_and_waiting_subscriptions_are_bounded() {
    use tokio_xmpp::{IqRequest, IqResponse};
    use xmpp_parsers::stanza_error::DefinedCondition;
    let server = TestServer::start_with(ServerOptions {
        limits: "max_pep_nodes = 2\nmax_pep_item_bytes = 4096\nmax_roster_items = 2\n\
                 max_pending_subscriptions = 2"
            .to_owned(),
        ..Default::default()
    });
    for user in ["alice", "bob", "s1", "s2", "s3"] {
        server.add_user(user, "pw");
    }
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let publish = |node: &str, size: usize| -> minidom::Element {
        format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>\
             <item id='current'><x xmlns='urn:example'>{}</x></item></publish></pubsub>",
            "a".repeat(size)
        )
        .parse()
        .expect("publish")
    };
    let condition = |response: IqResponse| match response {
        IqResponse::Error(e) => Some(e.defined_condition),
        IqResponse::Result(_) => None,
    };
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(publish("n1", 10))).await),
        None
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(publish("n2", 10))).await),
        None
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(publish("n3", 10))).await),
        Some(DefinedCondition::ResourceConstraint)
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(publish("n1", 20))).await),
        None
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(publish("n1", 8000))).await),
        Some(DefinedCondition::NotAcceptable)
    );

    let add = |contact: &str| -> minidom::Element {
        format!("<query xmlns='jabber:iq:roster'><item jid='{contact}@{DOMAIN}'/></query>")
            .parse()
            .expect("roster set")
    };
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(add("c1"))).await),
        None
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(add("c2"))).await),
        None
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(add("c3"))).await),
        Some(DefinedCondition::NotAllowed)
    );
    assert_eq!(
        condition(alice.iq(None, IqRequest::Set(add("c1"))).await),
        None
    );

    // Three strangers ask bob; two requests wait for him.
    for stranger in ["s1", "s2", "s3"] {
        let mut client = TestClient::login(&server, stranger, "pw").await;
        client
            .send_xml(&format!(
                "<presence xmlns='jabber:client' to='bob@{DOMAIN}' type='subscribe'/>"
            ))
            .await;
        client.sync().await;
    }
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    let mut asking = Vec::new();
    for _ in 0..2 {
        let request = bob
            .expect("a waiting request", |e| e.attr("type") == Some("subscribe"))
            .await;
        asking.extend(request.attr("from").map(str::to_owned));
    }
    asking.sort();
    assert_eq!(asking, [format!("s1@{DOMAIN}"), format!("s2@{DOMAIN}")]);
    bob.expect_none("a third request", Duration::from_millis(500), |e| {
        e.attr("type") == Some("subscribe")
    })
    .await;
}
