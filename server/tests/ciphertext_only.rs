//! The server stores and logs only ciphertext (ARCHITECTURE §4): a unique
//! marker sent through every path this server has — encrypted one-to-one
//! online, encrypted offline, a refused plain body, a PEP item, a
//! password, an MLS group message kept in the hub's log, key packages in
//! the key directory — never appears in clear in any file under the data
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

    // 5. MLS through the group hub to a member who is offline, so the
    //    message is only in the hub's log; key packages in the directory.
    let mut carol = Member::new(&server, "carol").await;
    let mut dave = Member::new(&server, "dave").await;
    dave.upload(3).await;
    let (id, group) = carol.create_group().await;
    let packages = carol.claim(&dave.bare()).await.expect("dave's packages");
    let out = carol
        .device
        .add_members(&id, &[packages.key_packages[0].data.clone()])
        .await
        .expect("add dave");
    let accepted = carol.submit(&group, &out).await.expect("commit accepted");
    carol
        .device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");
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
