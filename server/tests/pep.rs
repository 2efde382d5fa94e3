//! PEP (XEP-0163) beyond the slixmpp scenario: notifications to the owner
//! and to subscribers, publish-options preconditions, reconfiguration,
//! retraction, and directed presence.

mod common;

use std::time::Duration;

use common::{TestClient, TestServer, DOMAIN};
use minidom::Element;
use tokio_xmpp::{IqRequest, IqResponse};

const NS: &str = "http://jabber.org/protocol/pubsub";

fn publish(node: &str, id: &str, access: Option<&str>) -> Element {
    let options = access
        .map(|a| {
            format!(
                "<publish-options><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='pubsub#access_model'><value>{a}</value></field></x></publish-options>"
            )
        })
        .unwrap_or_default();
    format!(
        "<pubsub xmlns='{NS}'><publish node='{node}'><item id='{id}'><p xmlns='urn:example:p'>{id}</p></item></publish>{options}</pubsub>"
    )
    .parse()
    .unwrap()
}

/// `from` subscribes to `to`'s presence and `to` approves.
async fn subscribe(from: &mut TestClient, to: &mut TestClient) {
    let bare = |jid: &str| jid.split('/').next().unwrap_or_default().to_owned();
    from.send_xml(&format!(
        "<presence xmlns='jabber:client' to='{}' type='subscribe'/>",
        bare(&to.jid)
    ))
    .await;
    to.expect("request", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    to.send_xml(&format!(
        "<presence xmlns='jabber:client' to='{}' type='subscribed'/>",
        bare(&from.jid)
    ))
    .await;
    to.sync().await;
}

#[tokio::test]
async fn notifications_reach_owner_and_subscribers_not_strangers() {
    let server = TestServer::start();
    for u in ["alice", "bob", "eve"] {
        server.add_user(u, "pw");
    }
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    let mut eve = TestClient::login(&server, "eve", "pw").await;
    for c in [&mut alice, &mut bob, &mut eve] {
        c.available().await;
    }
    subscribe(&mut bob, &mut alice).await;
    alice.sync().await;

    assert!(matches!(
        alice
            .iq(None, IqRequest::Set(publish("urn:example:n", "one", None)))
            .await,
        IqResponse::Result(_)
    ));
    let is_event = |e: &Element| {
        e.name() == "message" && e.has_child("event", "http://jabber.org/protocol/pubsub#event")
    };
    bob.expect("notification to a subscriber", is_event).await;
    alice.expect("notification to the owner", is_event).await;
    eve.expect_none(
        "notification to a stranger",
        Duration::from_millis(500),
        is_event,
    )
    .await;

    // presence access: bob may read, eve may not.
    let items: Element = format!("<pubsub xmlns='{NS}'><items node='urn:example:n'/></pubsub>")
        .parse()
        .unwrap();
    let alice_jid = format!("alice@{DOMAIN}");
    let IqResponse::Result(Some(result)) = bob
        .iq(Some(&alice_jid), IqRequest::Get(items.clone()))
        .await
    else {
        panic!("bob cannot read")
    };
    assert!(String::from(&result).contains(">one<"));
    assert!(matches!(
        eve.iq(Some(&alice_jid), IqRequest::Get(items)).await,
        IqResponse::Error(_)
    ));
}

#[tokio::test]
async fn publish_options_precondition_reconfigure_and_retract() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    assert!(matches!(
        alice
            .iq(None, IqRequest::Set(publish("n", "1", Some("open"))))
            .await,
        IqResponse::Result(_)
    ));
    assert!(matches!(
        alice
            .iq(None, IqRequest::Set(publish("n", "2", Some("open"))))
            .await,
        IqResponse::Result(_)
    ));
    let IqResponse::Error(e) = alice
        .iq(None, IqRequest::Set(publish("n", "3", Some("whitelist"))))
        .await
    else {
        panic!("mismatching publish-options accepted")
    };
    assert_eq!(
        e.defined_condition,
        xmpp_parsers::stanza_error::DefinedCondition::Conflict
    );
    assert!(
        e.other
            .as_ref()
            .is_some_and(|o| o.name() == "precondition-not-met"),
        "{e:?}"
    );

    let configure: Element = "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n'>\
        <x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>whitelist</value></field>\
        <field var='pubsub#max_items'><value>5</value></field></x></configure></pubsub>"
        .parse()
        .unwrap();
    assert!(matches!(
        alice.iq(None, IqRequest::Set(configure)).await,
        IqResponse::Result(_)
    ));
    assert!(matches!(
        alice
            .iq(None, IqRequest::Set(publish("n", "3", Some("whitelist"))))
            .await,
        IqResponse::Result(_)
    ));

    let retract: Element =
        format!("<pubsub xmlns='{NS}'><retract node='n'><item id='3'/></retract></pubsub>")
            .parse()
            .unwrap();
    assert!(matches!(
        alice.iq(None, IqRequest::Set(retract.clone())).await,
        IqResponse::Result(_)
    ));
    assert!(matches!(
        alice.iq(None, IqRequest::Set(retract)).await,
        IqResponse::Error(_)
    ));
    let items: Element = format!("<pubsub xmlns='{NS}'><items node='n'/></pubsub>")
        .parse()
        .unwrap();
    let IqResponse::Result(Some(result)) = alice.iq(None, IqRequest::Get(items)).await else {
        panic!("items")
    };
    // max_items was 1 by default when "1" and "2" were published: only "2" is left.
    let text = String::from(&result);
    assert!(
        text.contains("id='2'") || text.contains("id=\"2\""),
        "{text}"
    );
    assert!(!text.contains(">1<"), "{text}");
}

#[tokio::test]
async fn directed_presence_and_its_unavailable() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    alice.available().await;
    bob.available().await;
    bob.sync().await;
    alice
        .send_xml(&format!(
            "<presence xmlns='jabber:client' to='bob@{DOMAIN}'><status>hi</status></presence>"
        ))
        .await;
    bob.expect("directed presence", |e| {
        e.name() == "presence" && e.attr("type").is_none()
    })
    .await;
    alice.close().await;
    bob.expect("unavailable after disconnect", |e| {
        e.name() == "presence" && e.attr("type") == Some("unavailable")
    })
    .await;
}
