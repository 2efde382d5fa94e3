//! The server stores and logs only ciphertext (ARCHITECTURE §4): a unique
//! marker sent through every path this server has — encrypted one-to-one
//! online, encrypted offline, a refused plain body, a PEP item, a
//! password, carbons, the message archive, a MUC room (encrypted and
//! refused plain group messages, the room's archive, its subject), an
//! MLS group message kept in the hub's log, key packages in the key
//! directory — never appears in clear in any file under the data
//! directory (WAL included) nor in the server's output.

mod common;

use base64::Engine;
use common::mls::Member;
use common::{files_containing, message_with, ServerOptions, TestClient, TestServer, DOMAIN};
use rand::RngCore;
use tokio_xmpp::{IqRequest, IqResponse};

/// "Encrypts" the marker as a client would before sending it: the server
/// only ever sees these bytes, which do not contain the marker.
fn seal(plaintext: &str) -> String {
    let mut key = vec![0u8; plaintext.len()];
    rand::thread_rng().fill_bytes(&mut key);
    let sealed: Vec<u8> = plaintext.bytes().zip(key).map(|(p, k)| p ^ k).collect();
    base64::engine::general_purpose::STANDARD.encode(sealed)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_marker_in_clear_on_disk_or_in_logs() {
    let marker = format!("TERN-MARKER-{:016x}", rand::random::<u64>());
    let password = format!("pw-{marker}");
    let mut server = TestServer::start_with(ServerOptions::default());
    server.add_user("alice", &password);
    server.add_user("bob", &password);
    let mut alice = TestClient::login(&server, "alice", &password).await;
    let mut bob = TestClient::login(&server, "bob", &password).await;
    bob.available().await;
    bob.sync().await;

    // 1. Encrypted one-to-one, online.
    let online = format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='online'>\
         <encrypted xmlns='urn:xmpp:omemo:2'><payload>{}</payload></encrypted></message>",
        seal(&marker)
    );
    alice.send_xml(&online).await;
    bob.expect("online message", message_with("urn:xmpp:omemo:2"))
        .await;

    // 2. A refused plain body.
    alice
        .send_xml(&format!(
            "<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='plain'><body>{marker}</body></message>"
        ))
        .await;
    alice
        .expect("refusal", |e| {
            e.attr("id") == Some("plain") && e.attr("type") == Some("error")
        })
        .await;

    // 3. Encrypted, to an offline user (stored, then delivered).
    bob.close().await;
    let sealed_offline = seal(&marker);
    let offline = format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='offline'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>{sealed_offline}</payload></encrypted></message>"
    );
    alice.send_xml(&offline).await;
    alice.sync().await;

    // 4. A PEP item with an encrypted payload.
    let publish: minidom::Element = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example:secret'>\
         <item id='1'><secret xmlns='urn:example:secret'>{}</secret></item></publish></pubsub>",
        seal(&marker)
    )
    .parse()
    .unwrap();
    assert!(matches!(
        alice.iq(None, IqRequest::Set(publish)).await,
        IqResponse::Result(_)
    ));

    // 5. Carbons: alice's second client gets a copy of what she sends.
    let mut desk = TestClient::login(&server, "alice", &password).await;
    desk.available().await;
    desk.send_xml("<iq xmlns='jabber:client' type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    desk.expect("carbons enabled", |e| e.attr("id") == Some("carbons"))
        .await;
    let sealed_carbon = seal(&marker);
    alice
        .send_xml(&format!(
            "<message xmlns='jabber:client' to='bob@{DOMAIN}' type='chat' id='carbon'>\
             <encrypted xmlns='urn:xmpp:omemo:2'><payload>{sealed_carbon}</payload></encrypted></message>"
        ))
        .await;
    let carbon = desk
        .expect("a sent carbon", message_with("urn:xmpp:carbons:2"))
        .await;
    assert!(String::from(&carbon).contains(&sealed_carbon));

    // 6. The archive: alice's sent messages come back from MAM.
    desk.send_xml(
        "<iq xmlns='jabber:client' type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'/></iq>",
    )
    .await;
    let archived = desk
        .expect("an archived message", |e| {
            e.name() == "message" && String::from(e).contains(&sealed_carbon)
        })
        .await;
    assert!(archived.has_child("result", "urn:xmpp:mam:2"));
    desk.expect("the end of the query", |e| e.attr("id") == Some("mam"))
        .await;

    // 7. A MUC room: encrypted and plain group messages, the subject.
    let room = format!("secret@conference.{DOMAIN}");
    desk.send_xml(&format!(
        "<presence xmlns='jabber:client' to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    desk.expect("in the room", |e| {
        e.name() == "presence"
            && e.get_child("x", "http://jabber.org/protocol/muc#user")
                .is_some_and(|x| x.children().any(|c| c.attr("code") == Some("110")))
    })
    .await;
    let sealed_group = seal(&marker);
    desk.send_xml(&format!(
        "<message xmlns='jabber:client' to='{room}' type='groupchat' id='group'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>{sealed_group}</payload></encrypted></message>"
    ))
    .await;
    desk.expect("the reflected group message", |e| {
        e.name() == "message" && String::from(e).contains(&sealed_group)
    })
    .await;
    desk.send_xml(&format!(
        "<message xmlns='jabber:client' to='{room}' type='groupchat' id='group-plain'><body>{marker}</body></message>"
    ))
    .await;
    desk.expect("a refused plain group message", |e| {
        e.attr("id") == Some("group-plain") && e.attr("type") == Some("error")
    })
    .await;
    desk.send_xml(&format!(
        "<message xmlns='jabber:client' to='{room}' type='groupchat' id='subject'><subject>{marker}</subject></message>"
    ))
    .await;
    desk.expect("the subject", |e| {
        e.name() == "message" && e.has_child("subject", "jabber:client")
    })
    .await;

    // 8. MLS through the group hub to a member who is offline, so the
    //    message is only in the hub's log; key packages in the directory.
    let mut carol = Member::new(&server, "carol").await;
    let mut dave = Member::new(&server, "dave").await;
    dave.upload(3).await;
    let (id, group) = carol.create_group().await;
    carol
        .add_user(&id, &group, &dave.bare())
        .await
        .expect("commit accepted");
    dave.go_offline().await;
    carol.send_text(&group, &id, &marker).await;
    let logged = carol.next_entry(&group).await;
    assert!(
        !files_containing(&server.data_dir(), &logged.data[64..96]).is_empty(),
        "the hub's log is on disk"
    );

    // Stop cleanly so the WAL is checkpointed, then look everywhere.
    let wal_before_stop = files_containing(&server.data_dir(), marker.as_bytes());
    // Positive control: the stored ciphertext is found, so the search
    // reads the files the server writes.
    assert!(
        !files_containing(&server.data_dir(), sealed_offline.as_bytes()).is_empty(),
        "the offline ciphertext is on disk"
    );
    assert!(server.terminate(), "clean shutdown");
    for (sealed, what) in [
        (&sealed_carbon, "user archive"),
        (&sealed_group, "room archive"),
    ] {
        assert!(
            !files_containing(&server.data_dir(), sealed.as_bytes()).is_empty(),
            "the {what}'s ciphertext is on disk"
        );
    }
    let mut hits = wal_before_stop;
    hits.extend(files_containing(&server.data_dir(), marker.as_bytes()));
    assert!(hits.is_empty(), "marker found in clear in {hits:?}");
    let log = server.log();
    assert!(!log.contains(&marker), "marker in the server log");
    assert!(
        !server.report.join("\n").contains(&marker),
        "marker in the start-up report"
    );
    assert!(
        log.contains("session started"),
        "the log was captured: {log}"
    );
}

/// Every plaintext form a client could send by mistake is refused with
/// `policy-violation`, whether its recipient is online or offline, and
/// none reaches the disk; an encrypted message sent alongside is stored
/// (the positive control).
#[tokio::test(flavor = "multi_thread")]
async fn every_plaintext_form_is_refused_and_kept_off_the_disk() {
    let marker = format!("TERN-PLAIN-{:016x}", rand::random::<u64>());
    let mut server = TestServer::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let mut bob = TestClient::login(&server, "bob", "pw").await;
    bob.available().await;
    bob.sync().await;
    let omemo = "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>AAAA</payload></encrypted>";
    let forms = [
        format!("<body>{marker}</body><encrypted xmlns='eu.siacs.conversations.axolotl'/>"),
        format!("<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p>{marker}</p></body></html>"),
        format!("<subject>{marker}</subject>"),
        format!("<x xmlns='jabber:x:oob'><url>https://example.org/{marker}</url></x>"),
        format!("<wrapper xmlns='urn:example'><body xmlns='jabber:client'>{marker}</body></wrapper>"),
        format!("{omemo}<subject>{marker}</subject>"),
        format!("{omemo}<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>{marker}</reaction></reactions>"),
    ];
    for to in ["bob", "carol"] {
        for (i, form) in forms.iter().enumerate() {
            let id = format!("plain-{to}-{i}");
            alice
                .send_xml(&format!(
                    "<message xmlns='jabber:client' to='{to}@{DOMAIN}' id='{id}' type='chat'>{form}</message>"
                ))
                .await;
            let refused = alice
                .expect("a refusal", |e| e.attr("id") == Some(id.as_str()))
                .await;
            assert_eq!(refused.attr("type"), Some("error"), "{form}");
            let text = String::from(&refused);
            assert!(text.contains("policy-violation"), "{text}");
        }
    }
    let sealed = seal(&marker);
    alice
        .send_xml(&common::omemo_message(
            &format!("carol@{DOMAIN}"),
            "control",
            &sealed,
        ))
        .await;
    alice.sync().await;
    bob.expect_none("a plain form", std::time::Duration::from_millis(300), |e| {
        String::from(e).contains(&marker)
    })
    .await;
    assert!(server.terminate(), "clean shutdown");
    assert!(
        !files_containing(&server.data_dir(), sealed.as_bytes()).is_empty(),
        "the stored ciphertext is on disk"
    );
    let hits = files_containing(&server.data_dir(), marker.as_bytes());
    assert!(hits.is_empty(), "marker found in clear in {hits:?}");
    assert!(!server.log().contains(&marker), "marker in the server log");
}
