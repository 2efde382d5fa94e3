//! Federation when the other side fails: a peer that is down, one that
//! answers garbage or nothing, and a name server that answers nothing.
//! Nothing is lost: every stanza is delivered or bounces back to its
//! sender with a clear error once `federation.bounce_after_secs` has
//! passed, exactly once; the server keeps serving its own users.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::bed::{federation_section, Bed};
use common::dns::{federation_records, free_port, Dns};
use common::{ServerOptions, TestClient, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Seconds before undeliverable stanzas bounce in these tests.
const BOUNCE: &str = "bounce_after_secs = 2\nconnect_timeout_secs = 1\n";

fn encrypted_chat(to: &str, id: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='{to}' type='chat' id='{id}'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>{id}</payload></encrypted></message>"
    )
}

/// Sends `count` messages to `to` and collects the errors that come back
/// (bounded by `within`): how many per id, and the conditions seen.
async fn send_and_collect_bounces(
    client: &mut TestClient,
    to: &str,
    count: usize,
    within: Duration,
) -> (BTreeMap<String, usize>, Vec<String>) {
    for i in 0..count {
        client.send_xml(&encrypted_chat(to, &format!("f{i}"))).await;
    }
    let mut bounced = BTreeMap::new();
    let mut conditions = Vec::new();
    let deadline = Instant::now() + within;
    while bounced.values().sum::<usize>() < count && Instant::now() < deadline {
        let error = client
            .expect("a bounce", |e| {
                e.name() == "message" && e.attr("type") == Some("error")
            })
            .await;
        *bounced
            .entry(error.attr("id").unwrap_or_default().to_owned())
            .or_insert(0) += 1;
        let text = String::from(&error);
        for condition in [
            "remote-server-timeout",
            "remote-server-not-found",
            "service-unavailable",
        ] {
            if text.contains(condition) && !conditions.contains(&condition.to_owned()) {
                conditions.push(condition.to_owned());
            }
        }
    }
    (bounced, conditions)
}

fn every_id_once(bounced: &BTreeMap<String, usize>, count: usize) {
    let expected: Vec<String> = (0..count).map(|i| format!("f{i}")).collect();
    let got: Vec<&String> = bounced.keys().collect();
    assert_eq!(got.len(), count, "bounced: {bounced:?}");
    for id in &expected {
        assert_eq!(bounced.get(id), Some(&1), "{id} bounced once: {bounced:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_stays_down_gets_every_stanza_bounced_once() {
    let Some(mut bed) = Bed::start(7, &[("a.test", BOUNCE), ("b.test", "")]) else {
        return;
    };
    bed.server("a.test").add_user("alice", "pw");
    assert!(bed.servers[1].terminate(), "b.test stops");
    let mut alice = TestClient::login(bed.server("a.test"), "alice", "pw").await;
    let started = Instant::now();
    let (bounced, conditions) =
        send_and_collect_bounces(&mut alice, "bob@b.test", 20, Duration::from_secs(30)).await;
    every_id_once(&bounced, 20);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before the bounce time"
    );
    eprintln!(
        "20 sent, {} bounced ({conditions:?}) in {:?}",
        bounced.len(),
        started.elapsed()
    );
    alice.sync().await;
}

/// A "server" for g.test that answers every stream with garbage, or with
/// silence, by turns; counts the connections it takes.
async fn hostile_peer(
    listener: tokio::net::TcpListener,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    while let Ok(Ok((mut tcp, _))) =
        tokio::time::timeout(Duration::from_secs(60), listener.accept()).await
    {
        let n = connections.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 2 == 1 {
            let _ = tcp
                .write_all(b"\x00\xffHTTP/1.1 200 OK\r\n<<<not xml at all>>><stream:")
                .await;
        }
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_answers_garbage_or_nothing_costs_a_bounce_not_a_crash() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let hostile = listener.local_addr().expect("address");
    let dns_port = free_port();
    let server = TestServer::start_with(ServerOptions {
        domain: "a.test".to_owned(),
        sections: federation_section(dns_port, BOUNCE),
        ..Default::default()
    });
    let Some(_dns) = Dns::start_at(
        dns_port,
        &federation_records([("a.test", server.s2s), ("g.test", hostile)]),
    ) else {
        return;
    };
    server.add_user("alice", "pw");
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peer = tokio::spawn(hostile_peer(listener, connections.clone()));
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let (bounced, conditions) =
        send_and_collect_bounces(&mut alice, "mallory@g.test", 10, Duration::from_secs(30)).await;
    every_id_once(&bounced, 10);
    assert!(common::process_alive(server.pid()));
    alice.sync().await;
    peer.abort();
    let connections = connections.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "10 sent, {} bounced ({conditions:?}); the hostile peer saw {connections} connections",
        bounced.len()
    );
    assert!(connections >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_server_that_answers_nothing_costs_a_bounce() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let server = TestServer::start_with(ServerOptions {
        sections: format!(
            "[federation]\nnameserver = \"{}\"\n{BOUNCE}",
            silent.local_addr().expect("address")
        ),
        ..Default::default()
    });
    server.add_user("alice", "pw");
    let mut alice = TestClient::login(&server, "alice", "pw").await;
    let (bounced, conditions) =
        send_and_collect_bounces(&mut alice, "bob@nowhere.test", 10, Duration::from_secs(40)).await;
    every_id_once(&bounced, 10);
    eprintln!("10 sent, {} bounced ({conditions:?})", bounced.len());
    alice.sync().await;
    drop(silent);
}
