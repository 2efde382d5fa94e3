//! Scenarios against the real `tern-server` binary with tokio-xmpp
//! clients: login, rosters, presence subscriptions, messages, offline
//! delivery (also across a SIGKILL), bounces.

mod common;

use std::time::Duration;

use common::{message_with, omemo_message, TestClient, TestServer, Tls, DOMAIN};
use minidom::Element;
use tokio_xmpp::{IqRequest, IqResponse};

const NS_ROSTER: &str = "jabber:iq:roster";
const NS_OMEMO: &str = "eu.siacs.conversations.axolotl";

fn roster_query(items: &str) -> Element {
    format!("<query xmlns='{NS_ROSTER}'>{items}</query>")
        .parse()
        .unwrap()
}

fn is_presence(kind: &'static str, from_prefix: &'static str) -> impl Fn(&Element) -> bool {
    move |e| {
        e.name() == "presence"
            && e.attr("type").unwrap_or("available") == kind
            && e.attr("from").is_some_and(|f| f.starts_with(from_prefix))
    }
}

fn roster_push_for(contact: &'static str, subscription: &'static str) -> impl Fn(&Element) -> bool {
    move |e| {
        e.name() == "iq"
            && e.attr("type") == Some("set")
            && e.get_child("query", NS_ROSTER).is_some_and(|q| {
                q.children().any(|i| {
                    i.attr("jid").is_some_and(|j| j.starts_with(contact))
                        && i.attr("subscription").unwrap_or("none") == subscription
                })
            })
    }
}

#[tokio::test]
async fn login_with_scram_over_starttls_and_direct_tls() {
    let server = TestServer::start();
    server.add_user("alice", "wonderland");
    let a = TestClient::login_with(
        &server,
        &format!("alice@{DOMAIN}/laptop"),
        "wonderland",
        Tls::StartTls,
    )
    .await;
    assert_eq!(a.jid, format!("alice@{DOMAIN}/laptop"));
    let b = TestClient::login_with(
        &server,
        &format!("alice@{DOMAIN}"),
        "wonderland",
        Tls::Direct,
    )
    .await;
    assert!(
        b.jid.starts_with(&format!("alice@{DOMAIN}/")),
        "server-generated resource: {}",
        b.jid
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn roster_add_is_pushed_to_a_second_resource_with_versions() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut phone = TestClient::login_with(
        &server,
        &format!("alice@{DOMAIN}/phone"),
        "pw",
        Tls::StartTls,
    )
    .await;
    let mut laptop = TestClient::login_with(
        &server,
        &format!("alice@{DOMAIN}/laptop"),
        "pw",
        Tls::Direct,
    )
    .await;
    let IqResponse::Result(Some(initial)) = laptop.iq(None, IqRequest::Get(roster_query(""))).await
    else {
        panic!("roster get failed")
    };
    let initial_ver = initial.attr("ver").expect("roster version").to_owned();

    let add = roster_query(&format!(
        "<item jid='bob@{DOMAIN}' name='Bob'><group>Friends</group></item>"
    ));
    assert!(matches!(
        phone.iq(None, IqRequest::Set(add)).await,
        IqResponse::Result(_)
    ));
    let push = laptop
        .expect("roster push", roster_push_for("bob@", "none"))
        .await;
    let item = push
        .get_child("query", NS_ROSTER)
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone();
    assert_eq!(item.attr("name"), Some("Bob"));
    assert_eq!(item.children().next().unwrap().text(), "Friends");

    // Versioning: the current version gives an empty result, an old one the roster.
    let IqResponse::Result(Some(full)) = laptop.iq(None, IqRequest::Get(roster_query(""))).await
    else {
        panic!("roster get failed")
    };
    let ver = full.attr("ver").unwrap().to_owned();
    assert_ne!(ver, initial_ver);
    assert_eq!(full.children().count(), 1);
    let current = format!("<query xmlns='{NS_ROSTER}' ver='{ver}'/>")
        .parse()
        .unwrap();
    assert!(matches!(
        laptop.iq(None, IqRequest::Get(current)).await,
        IqResponse::Result(None)
    ));

    // Removal is pushed too.
    let remove = roster_query(&format!("<item jid='bob@{DOMAIN}' subscription='remove'/>"));
    assert!(matches!(
        phone.iq(None, IqRequest::Set(remove)).await,
        IqResponse::Result(_)
    ));
    laptop
        .expect("removal push", roster_push_for("bob@", "remove"))
        .await;
}

#[tokio::test]
async fn presence_subscription_ends_in_both_and_presence_flows() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    alice.iq(None, IqRequest::Get(roster_query(""))).await;
    bob.iq(None, IqRequest::Get(roster_query(""))).await;
    alice.available().await;
    bob.available().await;

    alice
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='bob@{DOMAIN}' type='subscribe'/>"
        ))
        .await;
    alice
        .expect("pending-out push", |e| {
            roster_push_for("bob@", "none")(e)
                && e.to_owned()
                    .get_child("query", NS_ROSTER)
                    .unwrap()
                    .children()
                    .any(|i| i.attr("ask") == Some("subscribe"))
        })
        .await;
    bob.expect("subscription request", is_presence("subscribe", "alice@"))
        .await;
    bob.send_xml(&format!(
        "<presence xmlns='jabber:client' to='alice@{DOMAIN}' type='subscribed'/>"
    ))
    .await;
    bob.expect("bob's roster: from", roster_push_for("alice@", "from"))
        .await;
    alice
        .expect("alice's roster: to", roster_push_for("bob@", "to"))
        .await;
    alice
        .expect(
            "bob's presence after approval",
            is_presence("available", "bob@"),
        )
        .await;

    bob.send_xml(&format!(
        "<presence xmlns='jabber:client' to='alice@{DOMAIN}' type='subscribe'/>"
    ))
    .await;
    alice
        .expect("request from bob", is_presence("subscribe", "bob@"))
        .await;
    alice
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='bob@{DOMAIN}' type='subscribed'/>"
        ))
        .await;
    alice
        .expect("alice's roster: both", roster_push_for("bob@", "both"))
        .await;
    bob.expect("bob's roster: both", roster_push_for("alice@", "both"))
        .await;

    // Status changes reach the contact, dnd and status text included.
    bob.send_xml("<presence xmlns='jabber:client'><show>dnd</show><status>busy</status><priority>5</priority></presence>").await;
    let p = alice
        .expect("bob's dnd", is_presence("available", "bob@"))
        .await;
    let p = if p.get_child("show", "jabber:client").is_none() {
        alice
            .expect("bob's dnd", |e| {
                is_presence("available", "bob@")(e)
                    && e.get_child("show", "jabber:client").is_some()
            })
            .await
    } else {
        p
    };
    assert_eq!(p.get_child("show", "jabber:client").unwrap().text(), "dnd");
    assert_eq!(
        p.get_child("status", "jabber:client").unwrap().text(),
        "busy"
    );

    // Disconnecting sends unavailable.
    bob.close().await;
    alice
        .expect("bob unavailable", is_presence("unavailable", "bob@"))
        .await;

    // A new session of bob probes alice and learns she is online.
    let mut bob2 = TestClient::login(&server, "bob", "pw").await;
    bob2.available().await;
    bob2.expect(
        "probe answer: alice available",
        is_presence("available", "alice@"),
    )
    .await;
}

#[tokio::test]
async fn pre_approval_and_unknown_contact() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    for c in [&mut alice, &mut bob] {
        c.iq(None, IqRequest::Get(roster_query(""))).await;
        c.available().await;
    }
    // Bob pre-approves alice; her request is then approved without asking him.
    bob.send_xml(&format!(
        "<presence xmlns='jabber:client' to='alice@{DOMAIN}' type='subscribed'/>"
    ))
    .await;
    bob.sync().await;
    alice
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='bob@{DOMAIN}' type='subscribe'/>"
        ))
        .await;
    alice
        .expect("approved at once", roster_push_for("bob@", "to"))
        .await;
    bob.expect_none(
        "a subscription request",
        Duration::from_millis(500),
        is_presence("subscribe", "alice@"),
    )
    .await;

    // Subscribing to a user who does not exist is answered with unsubscribed.
    alice
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='nobody@{DOMAIN}' type='subscribe'/>"
        ))
        .await;
    alice
        .expect(
            "unsubscribed from nobody",
            is_presence("unsubscribed", "nobody@"),
        )
        .await;
}

#[tokio::test]
async fn messages_route_by_full_and_bare_jid_with_from_stamped() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob_hi =
        TestClient::login_with(&server, &format!("bob@{DOMAIN}/hi"), "pw", Tls::StartTls).await;
    let mut bob_lo =
        TestClient::login_with(&server, &format!("bob@{DOMAIN}/lo"), "pw", Tls::Direct).await;
    alice.available().await;
    bob_hi
        .send_xml("<presence xmlns='jabber:client'><priority>10</priority></presence>")
        .await;
    bob_lo
        .send_xml("<presence xmlns='jabber:client'><priority>-1</priority></presence>")
        .await;
    bob_hi.sync().await;
    bob_lo.sync().await;

    // Full JID: only that resource, even with a negative priority.
    alice
        .send_xml(&omemo_message(
            &format!("bob@{DOMAIN}/lo"),
            "m1",
            "Zm9yIGxv",
        ))
        .await;
    let m = bob_lo
        .expect("message to full JID", message_with(NS_OMEMO))
        .await;
    assert_eq!(
        m.attr("from"),
        Some(alice.jid.as_str()),
        "from is the sender's full JID"
    );

    // Bare JID: the non-negative resource only.
    alice
        .send_xml(&omemo_message(&format!("bob@{DOMAIN}"), "m2", "Zm9yIGhp"))
        .await;
    let m = bob_hi
        .expect("message to bare JID", message_with(NS_OMEMO))
        .await;
    assert_eq!(m.attr("id"), Some("m2"));
    bob_lo
        .expect_none(
            "bare-JID message on a negative priority",
            Duration::from_millis(500),
            message_with(NS_OMEMO),
        )
        .await;

    // A forged from is overwritten.
    alice
        .send_xml(&format!(
            "<message xmlns='jabber:client' from='mallory@{DOMAIN}/x' to='bob@{DOMAIN}/hi' type='chat' id='m3'>\
             <encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>"
        ))
        .await;
    let m = bob_hi
        .expect("spoofed message", |e| e.attr("id") == Some("m3"))
        .await;
    assert_eq!(m.attr("from"), Some(alice.jid.as_str()));
}

#[tokio::test]
async fn offline_message_delivered_with_delay_also_after_sigkill() {
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice
        .send_xml(&omemo_message(
            &format!("bob@{DOMAIN}"),
            "off1",
            "b2ZmbGluZQ==",
        ))
        .await;
    alice.sync().await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    let m = bob.expect("offline message", message_with(NS_OMEMO)).await;
    let delay = m
        .get_child("delay", "urn:xmpp:delay")
        .expect("XEP-0203 delay");
    assert_eq!(delay.attr("from"), Some(DOMAIN));
    assert!(delay.attr("stamp").is_some());
    bob.close().await;

    // Stored, acknowledged (the ping after it was answered), then SIGKILL.
    alice
        .send_xml(&omemo_message(
            &format!("bob@{DOMAIN}"),
            "off2",
            "c3Vydml2ZXM=",
        ))
        .await;
    alice.sync().await;
    server.kill_and_restart();
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    let m = bob
        .expect("offline message after restart", |e| {
            e.attr("id") == Some("off2")
        })
        .await;
    assert!(m.get_child("delay", "urn:xmpp:delay").is_some());
    // Delivered once only.
    bob.close().await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    bob.expect_none(
        "a second delivery",
        Duration::from_millis(700),
        message_with(NS_OMEMO),
    )
    .await;
}

#[tokio::test]
async fn message_to_unknown_user_bounces() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice
        .send_xml(&omemo_message(&format!("ghost@{DOMAIN}"), "b1", "eA=="))
        .await;
    let e = alice
        .expect("bounce", |e| {
            e.name() == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(e.attr("id"), Some("b1"));
    assert_eq!(e.attr("from"), Some(format!("ghost@{DOMAIN}").as_str()));
    let error = e.get_child("error", "jabber:client").expect("error child");
    assert!(error.has_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
}

#[tokio::test]
async fn server_iqs_disco_version_ping_and_unknown() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let disco: Element = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
        .parse()
        .unwrap();
    let IqResponse::Result(Some(info)) =
        alice.iq(Some(DOMAIN), IqRequest::Get(disco.clone())).await
    else {
        panic!("disco failed")
    };
    let features: Vec<String> = info
        .children()
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect();
    for f in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "jabber:iq:register",
        "msgoffline",
    ] {
        assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
    }
    let IqResponse::Result(Some(account)) = alice
        .iq(Some(&format!("alice@{DOMAIN}")), IqRequest::Get(disco))
        .await
    else {
        panic!("account disco failed")
    };
    assert!(account
        .children()
        .any(|c| c.attr("var") == Some("http://jabber.org/protocol/pubsub#publish-options")));
    let version: Element = "<query xmlns='jabber:iq:version'/>".parse().unwrap();
    let IqResponse::Result(Some(v)) = alice.iq(Some(DOMAIN), IqRequest::Get(version)).await else {
        panic!("version failed")
    };
    assert_eq!(
        v.get_child("name", "jabber:iq:version").unwrap().text(),
        "Tern"
    );
    let unknown: Element = "<query xmlns='urn:example:nobody-serves-this'/>"
        .parse()
        .unwrap();
    let IqResponse::Error(e) = alice.iq(Some(DOMAIN), IqRequest::Get(unknown)).await else {
        panic!("unknown IQ answered")
    };
    assert_eq!(
        e.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::ServiceUnavailable
    );
    alice.sync().await;
}

#[tokio::test]
async fn conflicting_resource_replaces_the_old_session() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut first = common::RawClient::login_as(&server, "alice", "pw", Some("same")).await;
    let mut second =
        TestClient::login_with(&server, &format!("alice@{DOMAIN}/same"), "pw", Tls::Direct).await;
    assert_eq!(second.jid, format!("alice@{DOMAIN}/same"));
    let closed = first
        .read_to_close(Duration::from_secs(5))
        .await
        .expect("old session closed");
    assert!(closed.contains("<conflict"), "{closed}");
    second.sync().await;
}

#[tokio::test]
async fn message_without_to_goes_to_own_bare_jid_and_normal_to_top_priority() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a1 =
        TestClient::login_with(&server, &format!("alice@{DOMAIN}/one"), "pw", Tls::StartTls).await;
    let mut a2 =
        TestClient::login_with(&server, &format!("alice@{DOMAIN}/two"), "pw", Tls::StartTls).await;
    a1.send_xml("<presence xmlns='jabber:client'><priority>1</priority></presence>")
        .await;
    a2.send_xml("<presence xmlns='jabber:client'><priority>7</priority></presence>")
        .await;
    a1.sync().await;
    a2.sync().await;
    a1.send_xml("<message xmlns='jabber:client' type='chat' id='self'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>")
        .await;
    a2.expect("note to self", |e| e.attr("id") == Some("self"))
        .await;

    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.send_xml(&format!(
        "<message xmlns='jabber:client' to='alice@{DOMAIN}' id='normal'><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>"
    ))
    .await;
    a2.expect("normal message at priority 7", |e| {
        e.attr("id") == Some("normal")
    })
    .await;
    a1.expect_none(
        "normal message at priority 1",
        Duration::from_millis(500),
        |e| e.attr("id") == Some("normal"),
    )
    .await;
}

/// SCRAM-SHA-1 over the network with the `sasl` crate's client (tokio-xmpp
/// always picks SHA-256), checking the server's signature, then the
/// legacy session IQ.
#[tokio::test]
async fn scram_sha1_login_and_legacy_session_iq() {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use sasl::client::mechanisms::Scram;
    use sasl::client::Mechanism;
    use sasl::common::scram::Sha1;
    use sasl::common::Credentials;

    let server = TestServer::start();
    server.add_user("alice", "pw");
    let between = |text: &str, open: &str, close: &str| -> Vec<u8> {
        let start = text.find(open).expect(open) + open.len();
        let start = start + text[start..].find('>').expect(">") + 1;
        let end = start + text[start..].find(close).expect(close);
        B64.decode(&text[start..end]).expect("base64")
    };
    let mut scram = Scram::<Sha1>::from_credentials(
        Credentials::default()
            .with_username("alice")
            .with_password("pw"),
    )
    .expect("mechanism");
    let mut raw = common::RawClient::connect_tls(&server).await;
    raw.received.clear();
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
        B64.encode(scram.initial())
    ))
    .await;
    let challenge = between(
        &raw.read_until("</challenge>").await,
        "<challenge",
        "</challenge>",
    );
    raw.received.clear();
    let response = scram.response(&challenge).expect("client response");
    raw.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        B64.encode(response)
    ))
    .await;
    let success = between(
        &raw.read_until("</success>").await,
        "<success",
        "</success>",
    );
    scram.success(&success).expect("server signature verifies");
    raw.received.clear();
    raw.send(&common::stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    raw.read_until("</iq>").await;
    raw.received.clear();
    raw.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    // An empty result: `<iq …/>`.
    let reply = raw.read_until("/>").await;
    assert!(
        reply.contains("id='s'") && reply.contains("type='result'"),
        "{reply}"
    );
}

/// A bound session reads stanzas with its own reader: what the client
/// sent along with the bind request, stanzas split across writes at any
/// byte, prefixed namespaces, CDATA and references all arrive as sent,
/// and the stream's end closes the session cleanly.
#[tokio::test]
async fn a_session_reads_what_was_sent_ahead_split_or_prefixed() {
    use base64::Engine;
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    let mut raw = common::RawClient::connect_tls(&server).await;
    raw.received.clear();
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw");
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    raw.read_until("<success").await;
    raw.received.clear();
    raw.send(&common::stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    raw.received.clear();
    // The bind request and a ping in one write.
    raw.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>\
         <iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    raw.read_until("id='p1'").await;
    // A ping with a prefixed namespace, one byte per write.
    let ping = "<iq type='get' id='p2'><u:ping xmlns:u='urn:xmpp:ping'/></iq>";
    for byte in ping.as_bytes() {
        raw.try_send(&[*byte]).await;
    }
    raw.read_until("id='p2'").await;
    // A message whose payload uses CDATA and references, split in two.
    let message = omemo_message(
        &format!("bob@{DOMAIN}"),
        "m1",
        "<![CDATA[AAAA]]>&#x42;&amp;C",
    );
    let (first, second) = message.split_at(message.len() / 2);
    raw.send(first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(second).await;
    let got = bob.expect("alice's message", message_with(NS_OMEMO)).await;
    let payload = got
        .get_child("encrypted", NS_OMEMO)
        .and_then(|e| e.get_child("payload", NS_OMEMO))
        .map(Element::text);
    assert_eq!(payload.as_deref(), Some("AAAAB&C"));
    // The stream's end: the server answers with its own and closes.
    raw.send("</stream:stream>").await;
    let rest = raw
        .read_to_close(Duration::from_secs(5))
        .await
        .expect("the server closes");
    assert!(rest.contains("</stream:stream>"), "{rest}");
}

#[tokio::test]
async fn the_data_directory_is_readable_by_the_server_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    // An archived message puts a segment in the message log.
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice
        .send_xml(&omemo_message(&format!("bob@{DOMAIN}"), "m1", "eA=="))
        .await;
    alice.sync().await;
    alice.close().await;
    let data = server.data_dir();
    let check = |when: &str| {
        let mut seen = 0;
        let mut pending = vec![data.clone()];
        while let Some(path) = pending.pop() {
            let wanted = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode_of(&path), wanted, "{} {when}", path.display());
            if path.is_dir() {
                pending.extend(
                    std::fs::read_dir(&path)
                        .expect("dir")
                        .map(|e| e.expect("entry").path()),
                );
            }
            seen += 1;
        }
        assert!(data.join("tern.sqlite3-wal").exists(), "{when}");
        assert!(seen >= 4, "{when}: {seen} paths");
    };
    check("while running");
    // Files an earlier version left readable are tightened at start-up.
    assert!(server.terminate());
    let loosen = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    loosen(&data, 0o755);
    loosen(&data.join("tern.sqlite3"), 0o644);
    loosen(&data.join("archive-log"), 0o755);
    server.restart();
    check("after a start with loose files");
}
