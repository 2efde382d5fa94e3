//! The networked client session of tern-e2ee against a real server:
//! device list, key packages, a conversation created on the hub, messages
//! both ways, and catching up after being offline.

mod common;

use std::time::Duration;

use common::{TestCa, TestServer};
use jid::BareJid;
use tern_e2ee::envelope::Content;
use tern_e2ee::{ClientStore, ConversationId, Device, Event, Session, SessionOptions};

const WAIT: Duration = Duration::from_secs(10);

struct User {
    session: Session,
    options: SessionOptions,
    _dir: tempfile::TempDir,
}

async fn user(server: &TestServer, name: &str) -> User {
    TestCa::get();
    server.add_user(name, "secret");
    let dir = tempfile::tempdir().expect("temp dir");
    let jid = BareJid::new(&server.jid(name)).expect("jid");
    let store = ClientStore::open(&dir.path().join("client.sqlite3")).expect("store");
    let device = Device::create(store, jid.clone()).await.expect("device");
    let options = SessionOptions {
        jid,
        password: "secret".into(),
        server: Some(server.c2s_tls.to_string()),
        nameserver: None,
    };
    let mut session = Session::connect(device, options.clone())
        .await
        .expect("login");
    session
        .publish_device(Some("test"))
        .await
        .expect("device list");
    session
        .replenish_key_packages(5)
        .await
        .expect("key packages");
    User {
        session,
        options,
        _dir: dir,
    }
}

async fn next_message(session: &mut Session) -> (ConversationId, u64, String) {
    loop {
        match session.next_event(WAIT).await.expect("event") {
            Some(Event::Message {
                conversation,
                seq,
                envelope,
                ..
            }) => {
                return (
                    conversation,
                    seq,
                    envelope.body().unwrap_or_default().to_owned(),
                )
            }
            Some(_) => {}
            None => panic!("no message arrived"),
        }
    }
}

fn text(body: &str) -> Vec<Content> {
    vec![Content::Body(body.to_owned())]
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_talk_and_one_catches_up_after_being_offline() {
    let server = TestServer::start();
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;

    let bob_jid = bob.options.jid.clone();
    let devices = alice
        .session
        .device_list(&bob_jid)
        .await
        .expect("bob's devices");
    assert_eq!(devices.devices.len(), 1);
    assert_eq!(
        devices.devices[0].id,
        bob.session.device().name().device.to_string()
    );

    let (id, address) = alice
        .session
        .create_conversation(&[bob_jid])
        .await
        .expect("conversation");
    match bob.session.next_event(WAIT).await.expect("event") {
        Some(Event::Joined {
            conversation,
            address: joined,
        }) => {
            assert_eq!(conversation, id);
            assert_eq!(joined, address);
        }
        other => panic!("expected a join, got {other:?}"),
    }

    alice
        .session
        .send(&id, text("hello bob"))
        .await
        .expect("send");
    let (conversation, _, body) = next_message(&mut bob.session).await;
    assert_eq!((conversation, body.as_str()), (id.clone(), "hello bob"));
    bob.session
        .send(&id, text("hello alice"))
        .await
        .expect("send");
    assert_eq!(next_message(&mut alice.session).await.2, "hello alice");

    // Bob goes away; alice writes three messages; bob catches up in order.
    let device = bob.session.close().await;
    for n in 1..=3 {
        alice
            .session
            .send(&id, text(&format!("while you were out {n}")))
            .await
            .expect("send");
    }
    let mut back = Session::connect(device, bob.options.clone())
        .await
        .expect("login again");
    back.catch_up().await.expect("catch up");
    let mut seqs = Vec::new();
    for n in 1..=3 {
        let (_, seq, body) = next_message(&mut back).await;
        assert_eq!(body, format!("while you were out {n}"));
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in log order: {seqs:?}"
    );
    back.close().await;
    alice.session.close().await;
}

/// mallory@evil.test, through her own server's stream, sends bob a real
/// Welcome (made from one of bob's claimed key packages) that names the
/// address of bob's conversation with alice. Only a group's hub sends
/// its Welcomes: bob refuses it with an event, and his conversation with
/// alice goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_welcome_from_another_domain_is_refused_and_the_conversation_goes_on() {
    use base64::Engine as _;
    let ca = TestCa::get().ca_path();
    let server = TestServer::start_with(common::ServerOptions {
        sections: format!("[federation]\nca_file = \"{}\"\n", ca.display()),
        ..Default::default()
    });
    let mut alice = user(&server, "alice").await;
    let mut bob = user(&server, "bob").await;
    let mut mallory = user(&server, "mallory").await;
    let bob_jid = bob.options.jid.clone();
    let (id, address) = alice
        .session
        .create_conversation(std::slice::from_ref(&bob_jid))
        .await
        .expect("conversation");
    alice
        .session
        .send(&id, text("hello bob"))
        .await
        .expect("send");
    assert_eq!(next_message(&mut bob.session).await.2, "hello bob");

    let packages = mallory
        .session
        .claim(&bob_jid)
        .await
        .expect("bob's packages");
    let device = mallory.session.device();
    let (own, _) = device.create_conversation().await.expect("group");
    let out = device.add_members(&own, &packages).await.expect("add bob");
    let welcome = base64::engine::general_purpose::STANDARD.encode(out.welcome.expect("welcome"));
    let mut evil = common::s2s_stream_as("evil.test", &server).await;
    evil.send(&format!(
        "<message xmlns='jabber:server' from='mallory@evil.test' to='{bob_jid}'>\
         <welcome xmlns='urn:tern:mls:0' group='{address}' seq='1'>{welcome}</welcome></message>"
    ))
    .await;

    let refused = loop {
        match bob.session.next_event(WAIT).await.expect("event") {
            Some(Event::WelcomeRejected { from, reason }) => break (from, reason),
            Some(Event::Joined { address, .. }) => panic!("bob joined {address}"),
            Some(_) => {}
            None => panic!("no event for the forged welcome"),
        }
    };
    assert_eq!(refused.0.as_str(), "mallory@evil.test", "{refused:?}");
    assert_eq!(
        bob.session.device().address(&id).expect("address"),
        Some(address)
    );
    alice
        .session
        .send(&id, text("still here"))
        .await
        .expect("send");
    assert_eq!(next_message(&mut bob.session).await.2, "still here");
    bob.session.send(&id, text("me too")).await.expect("send");
    assert_eq!(next_message(&mut alice.session).await.2, "me too");
}
