//! Room rules a member cannot get around (XEP-0045): an admin does not
//! change an owner's or another admin's affiliation, a room keeps an
//! owner, and an occupant who joined before sending initial presence
//! leaves the room when its session ends (it used to stay as a ghost).

mod common;

use common::{TestClient, TestServer, DOMAIN};
use minidom::Element;

const ROOM: &str = "plans";

fn room() -> String {
    format!("{ROOM}@conference.{DOMAIN}")
}

fn join(nick: &str) -> String {
    format!(
        "<presence xmlns='jabber:client' to='{}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
        room()
    )
}

/// Sends an affiliation change; the answer.
async fn affiliate(client: &mut TestClient, id: &str, jid: &str, affiliation: &str) -> Element {
    client
        .send_xml(&format!(
            "<iq xmlns='jabber:client' type='set' id='{id}' to='{}'>\
             <query xmlns='http://jabber.org/protocol/muc#admin'>\
             <item jid='{jid}' affiliation='{affiliation}'/></query></iq>",
            room()
        ))
        .await;
    client
        .expect("the answer", |e| e.attr("id") == Some(id))
        .await
}

fn condition(answer: &Element) -> Option<String> {
    let error = answer.get_child("error", "jabber:client")?;
    error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
}

async fn in_room(client: &mut TestClient, nick: &str) {
    client.send_xml(&join(nick)).await;
    let own = format!("{}/{nick}", room());
    client
        .expect("in the room", |e| {
            e.name() == "presence"
                && e.attr("from") == Some(own.as_str())
                && e.attr("type").is_none()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_cannot_remove_owners_and_a_room_keeps_one() {
    let server = TestServer::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice.available().await;
    in_room(&mut alice, "alice").await;
    let bob_jid = format!("bob@{DOMAIN}");
    let carol_jid = format!("carol@{DOMAIN}");
    let alice_jid = format!("alice@{DOMAIN}");
    assert_eq!(
        affiliate(&mut alice, "a1", &bob_jid, "admin")
            .await
            .attr("type"),
        Some("result")
    );
    assert_eq!(
        affiliate(&mut alice, "a2", &carol_jid, "admin")
            .await
            .attr("type"),
        Some("result")
    );

    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    in_room(&mut bob, "bob").await;
    for (id, target, to) in [
        ("b1", &alice_jid, "outcast"),
        ("b2", &alice_jid, "none"),
        ("b3", &alice_jid, "member"),
        ("b4", &carol_jid, "outcast"),
    ] {
        let answer = affiliate(&mut bob, id, target, to).await;
        assert_eq!(
            condition(&answer).as_deref(),
            Some("not-allowed"),
            "{target} -> {to}: {}",
            String::from(&answer)
        );
    }
    // An admin may still manage members.
    let dave = format!("dave@{DOMAIN}");
    assert_eq!(
        affiliate(&mut bob, "b5", &dave, "member")
            .await
            .attr("type"),
        Some("result")
    );

    // The last owner cannot leave the room ownerless.
    let answer = affiliate(&mut alice, "a3", &alice_jid, "member").await;
    assert_eq!(
        condition(&answer).as_deref(),
        Some("conflict"),
        "{}",
        String::from(&answer)
    );
    assert_eq!(
        affiliate(&mut alice, "a4", &bob_jid, "owner")
            .await
            .attr("type"),
        Some("result")
    );
    assert_eq!(
        affiliate(&mut alice, "a5", &alice_jid, "member")
            .await
            .attr("type"),
        Some("result")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_occupant_who_joined_before_initial_presence_leaves_when_its_session_ends() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice.available().await;
    in_room(&mut alice, "alice").await;
    let bob_jid = format!("bob@{DOMAIN}");
    assert_eq!(
        affiliate(&mut alice, "a1", &bob_jid, "member")
            .await
            .attr("type"),
        Some("result")
    );

    // bob joins without having sent initial presence, then goes away.
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    in_room(&mut bob, "bob").await;
    let bob_in_room = format!("{}/bob", room());
    alice
        .expect("bob joining", |e| {
            e.name() == "presence"
                && e.attr("from") == Some(bob_in_room.as_str())
                && e.attr("type").is_none()
        })
        .await;
    bob.close().await;
    alice
        .expect("bob leaving", |e| {
            e.name() == "presence"
                && e.attr("from") == Some(bob_in_room.as_str())
                && e.attr("type") == Some("unavailable")
        })
        .await;
}

/// A user may own `muc.max_rooms_per_user` rooms; creating one more is
/// refused with not-allowed (any user could create rooms without end).
#[tokio::test(flavor = "multi_thread")]
async fn rooms_per_user_are_bounded() {
    let server = TestServer::start_with(common::ServerOptions {
        sections: "[muc]\nmax_rooms_per_user = 2\n".to_owned(),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    alice.available().await;
    for name in ["one", "two", "three"] {
        let room = format!("{name}@conference.{DOMAIN}");
        alice
            .send_xml(&format!(
                "<presence xmlns='jabber:client' to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ))
            .await;
        let answer = alice
            .expect("an answer", |e| {
                e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with(&room))
            })
            .await;
        let refused = answer.attr("type") == Some("error");
        assert_eq!(refused, name == "three", "{}", String::from(&answer));
        if refused {
            assert_eq!(condition(&answer).as_deref(), Some("not-allowed"));
        }
    }
}
