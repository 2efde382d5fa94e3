//! Nothing acknowledged is lost: a sender streams messages with Stream
//! Management (XEP-0198) while the server is killed with SIGKILL as soon
//! as it has acknowledged a good part of them. After a restart, every
//! acknowledged message is counted: in the sender's archive, and in the
//! recipient's (for a recipient who was offline, in offline storage too),
//! each exactly once by its marker.
//!
//! Before acknowledgements waited for the archive's group commit, the
//! server acknowledged at once and the writer did not commit for seconds:
//! the archives came back empty.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{omemo_message, s2s_stream_as, signal, RawClient, ServerOptions, TestServer, DOMAIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS_SM: &str = "urn:xmpp:sm:3";
/// Messages the sender streams.
const MESSAGES: usize = 3000;
/// The server is killed once this many are acknowledged.
const KILL_AFTER: u32 = 1000;

/// Offline storage that takes every message of the test (its quotas are
/// tested elsewhere): an acknowledged message must be stored, not
/// bounced.
const ROOMY_OFFLINE: &str =
    "max_offline_messages = 10000\nmax_offline_per_sender = 10000\nmax_offline_from_strangers = 10000";

fn marker(i: usize) -> String {
    format!("DUR-{i}-END")
}

/// Every marker number in `text`, with how often it appears.
fn markers(text: &str) -> BTreeMap<usize, usize> {
    let mut found = BTreeMap::new();
    for piece in text.split("DUR-").skip(1) {
        if let Some(n) = piece.split_once("-END").and_then(|(n, _)| n.parse().ok()) {
            *found.entry(n).or_insert(0) += 1;
        }
    }
    found
}

/// The largest `h` of the `<a/>` elements in `text`.
fn largest_ack(text: &str) -> Option<u32> {
    text.split("<a ")
        .skip(1)
        .filter(|a| a.contains(NS_SM))
        .filter_map(|a| {
            let after = &a[a.find("h=")? + 3..];
            after[..after.find(['\'', '"'])?].parse().ok()
        })
        .max()
}

/// Streams [`MESSAGES`] stanzas made by `stanza` on `stream` (Stream
/// Management enabled), asking for an acknowledgement every 20, and
/// kills the server with SIGKILL once [`KILL_AFTER`] are acknowledged;
/// returns how many were.
async fn stream_until_killed(
    server: &TestServer,
    stream: RawClient,
    stanza: impl Fn(usize) -> String + Send + 'static,
) -> usize {
    let (io, _) = stream.into_parts();
    let (mut reader, mut writer) = tokio::io::split(io);
    let sender = tokio::spawn(async move {
        let mut batch = String::new();
        for i in 0..MESSAGES {
            batch.push_str(&stanza(i));
            if i % 20 == 19 {
                batch.push_str(&format!("<r xmlns='{NS_SM}'/>"));
                if writer.write_all(batch.as_bytes()).await.is_err() {
                    return;
                }
                batch.clear();
            }
        }
        let _ = writer.flush().await;
    });
    let mut text = String::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(60);
    let acknowledged = loop {
        assert!(
            Instant::now() < deadline,
            "too few acknowledgements: {text}"
        );
        let n = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut buf))
            .await
            .expect("acknowledgements keep coming")
            .expect("read");
        assert!(n > 0, "the server closed the stream: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(h) = largest_ack(&text).filter(|h| *h >= KILL_AFTER) {
            signal(server.pid(), "KILL");
            break h as usize;
        }
    };
    sender.abort();
    acknowledged
}

/// Every message in `user`'s archive, by marker, paging through MAM.
async fn archive_markers(server: &TestServer, user: &str) -> BTreeMap<usize, usize> {
    let mut raw = RawClient::login(server, user, "pw").await;
    let mut all = BTreeMap::new();
    let mut after = String::new();
    for page in 0..100 {
        raw.received.clear();
        let set = if after.is_empty() {
            "<set xmlns='http://jabber.org/protocol/rsm'><max>250</max></set>".to_owned()
        } else {
            format!("<set xmlns='http://jabber.org/protocol/rsm'><max>250</max><after>{after}</after></set>")
        };
        raw.send(&format!(
            "<iq type='set' id='mam{page}'><query xmlns='urn:xmpp:mam:2' queryid='q{page}'>{set}</query></iq>"
        ))
        .await;
        let text = raw.read_until("</fin>").await;
        for (n, count) in markers(&text) {
            *all.entry(n).or_insert(0) += count;
        }
        let fin = &text[text.rfind("<fin").expect("fin")..];
        if fin.contains("complete='true'") || fin.contains("complete=\"true\"") {
            return all;
        }
        let last = fin.find("<last>").expect("a page's last id") + "<last>".len();
        after = fin[last..fin[last..].find('<').expect("</last>") + last].to_owned();
    }
    panic!("{user}'s archive has more than 100 pages");
}

/// `user`'s offline messages, by marker: delivered at initial presence.
async fn offline_markers(server: &TestServer, user: &str) -> BTreeMap<usize, usize> {
    let mut raw = RawClient::login(server, user, "pw").await;
    raw.send("<presence/><iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let text = raw.read_until("id='done'").await;
    markers(&text)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let mut server = TestServer::start_with(ServerOptions {
        limits: ROOMY_OFFLINE.to_owned(),
        ..Default::default()
    });
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    // bob is online and reads everything; carol is offline.
    let mut bob = RawClient::login(&server, "bob", "pw").await;
    bob.send("<presence/>").await;
    let (bob_io, _) = bob.into_parts();
    let bob_reader = tokio::spawn(async move {
        let mut io = bob_io;
        let mut text = String::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        markers(&text)
    });

    let mut alice = RawClient::login(&server, "alice", "pw").await;
    alice.send(&format!("<enable xmlns='{NS_SM}'/>")).await;
    alice.read_until("<enabled").await;
    let acknowledged = stream_until_killed(&server, alice, |i| {
        let to = if i % 2 == 0 { "bob" } else { "carol" };
        omemo_message(&format!("{to}@{DOMAIN}"), &format!("m{i}"), &marker(i))
    })
    .await;
    let delivered = bob_reader.await.expect("bob's reader");
    server.kill_and_restart();

    let sent = archive_markers(&server, "alice").await;
    let bobs = archive_markers(&server, "bob").await;
    let carols = archive_markers(&server, "carol").await;
    let offline = offline_markers(&server, "carol").await;
    let mut lost = Vec::new();
    // Checked as the messages were sent: to bob and carol in turn.
    for i in 0..acknowledged {
        let recipients = if i % 2 == 0 { &bobs } else { &carols };
        if sent.get(&i) != Some(&1) || recipients.get(&i) != Some(&1) {
            lost.push(i);
        }
        if i % 2 == 1 && offline.get(&i) != Some(&1) {
            lost.push(i);
        }
    }
    for (name, found) in [("alice", &sent), ("bob", &bobs), ("carol", &carols)] {
        let twice: BTreeSet<_> = found.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "{name}'s archive lists some twice: {twice:?}"
        );
    }
    eprintln!(
        "acknowledged {acknowledged}, delivered live to bob {}, archived: alice {}, bob {}, carol {}, carol offline {}",
        delivered.len(),
        sent.len(),
        bobs.len(),
        carols.len(),
        offline.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {acknowledged} acknowledged messages lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_federation_load_loses_no_acknowledged_message() {
    let ca = common::TestCa::get().ca_path();
    let mut server = TestServer::start_with(ServerOptions {
        limits: ROOMY_OFFLINE.to_owned(),
        sections: format!("[federation]\nca_file = \"{}\"\n", ca.display()),
        ..Default::default()
    });
    server.add_user("carol", "pw");
    // A peer authenticated by certificate streams to carol, who is
    // offline, acknowledged with Stream Management.
    let mut peer = s2s_stream_as("b.test", &server).await;
    peer.send(&format!("<enable xmlns='{NS_SM}'/>")).await;
    peer.read_until("<enabled").await;
    let acknowledged = stream_until_killed(&server, peer, |i| {
        format!(
            "<message xmlns='jabber:server' from='dave@b.test/x' to='carol@{DOMAIN}' id='f{i}' type='chat'>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>AAAA</key>\
             <iv>AAAAAAAAAAAAAAAA</iv></header><payload>{}</payload></encrypted></message>",
            marker(i)
        )
    })
    .await;
    server.kill_and_restart();
    let archived = archive_markers(&server, "carol").await;
    let offline = offline_markers(&server, "carol").await;
    let lost: Vec<usize> = (0..acknowledged)
        .filter(|i| archived.get(i) != Some(&1) || offline.get(i) != Some(&1))
        .collect();
    eprintln!(
        "acknowledged {acknowledged}, archived {}, offline {}",
        archived.len(),
        offline.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {acknowledged} acknowledged messages lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// A delayed `<a/>` is not itself counted as a stanza sent to the client:
/// when it was, the client's `h` acknowledged it in place of a real
/// stanza, which came back again after a resumption (and the phantom
/// acknowledgements piled up until the session was closed).
#[tokio::test(flavor = "multi_thread")]
async fn delayed_acknowledgements_are_not_counted_as_stanzas() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut bob = RawClient::login_as(&server, "bob", "pw", Some("phone")).await;
    bob.send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"))
        .await;
    let enabled = bob.read_until("<enabled").await;
    let previd = enabled
        .split("id='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a resumption id")
        .to_owned();
    bob.send("<presence/>").await;
    let mut alice = common::TestClient::login(&server, "alice", "pw").await;
    // bob's messages are archived, so his acknowledgements wait for the
    // archive's commit; alice's message reaches him meanwhile.
    for i in 0..5 {
        bob.send(&omemo_message(
            &format!("alice@{DOMAIN}"),
            &format!("b{i}"),
            "AAAA",
        ))
        .await;
        bob.send(&format!("<r xmlns='{NS_SM}'/>")).await;
    }
    alice
        .send_xml(&omemo_message(
            &format!("bob@{DOMAIN}/phone"),
            "to-bob",
            "AAAA",
        ))
        .await;
    alice.sync().await;
    let text = bob.read_until("id='to-bob'").await;
    bob.received.clear();
    // Every stanza bob got: his own presence echo and alice's message.
    let stanzas = text.matches("<message").count() + text.matches("<presence").count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send(&format!("<a xmlns='{NS_SM}' h='{stanzas}'/>"))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(bob);
    // bob resumes, having handled all of it: nothing is sent again.
    let mut again = RawClient::login_as_unbound(&server, "bob", "pw").await;
    again
        .send(&format!(
            "<resume xmlns='{NS_SM}' previd='{previd}' h='{stanzas}'/>"
        ))
        .await;
    again.read_until("<resumed").await;
    again
        .send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let text = again.read_until("id='ping'").await;
    let after = &text[text.find("<resumed").expect("resumed")..];
    assert!(
        !after.contains("to-bob"),
        "alice's message came again: {after}"
    );
    assert!(
        !after.contains("<a "),
        "an old acknowledgement came again: {after}"
    );
}
