//! Messages per second between users of two federated servers, against
//! the same load between users of one server, in one run.
//!
//! Two release `tern-server`s, `a.test` and `b.test`, on their own
//! loopback addresses, found through dnsmasq SRV records, certificates
//! from a test CA. PAIRS senders on a.test each send MESSAGES chat
//! messages with an OMEMO-style encrypted payload (the server carries it,
//! never reads it) as fast as their streams take them:
//! - local: to PAIRS receivers on a.test;
//! - federated: to PAIRS receivers on b.test, all over the one s2s stream
//!   a.test → b.test (set up by a warm-up message, not timed).
//!
//! The time runs from the first send to the last message received.
//!
//! `cargo bench -p tern-server --bench federation_throughput [-- PAIRS MESSAGES]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::bed::Bed;
use common::TestServer;
use jid::BareJid;
use minidom::Element;
use rand::RngCore;
use tern_e2ee::connection::{Connection, Target};

const WAIT: Duration = Duration::from_secs(300);
const PASSWORD: &str = "secret";

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let pairs = args.next().unwrap_or(10);
    let messages = args.next().unwrap_or(1000);
    rlimit::increase_nofile_limit(u64::MAX).expect("raise open file limit");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(pairs, messages));
}

async fn run(pairs: usize, messages: usize) {
    let Some(bed) = Bed::start(0, &[("a.test", ""), ("b.test", "")]) else {
        eprintln!("no dnsmasq: run scripts/test.sh once to install it");
        return;
    };
    let (a, b) = (bed.server("a.test"), bed.server("b.test"));
    println!(
        "{pairs} senders x {messages} messages ({} in all), encrypted payload of 64 bytes",
        pairs * messages
    );
    let local = measure(a, a, "local", pairs, messages).await;
    let federated = measure(a, b, "fed", pairs, messages).await;
    println!(
        "one server (a.test -> a.test): {local:>8.0} msg/s\n\
         federated  (a.test -> b.test): {federated:>8.0} msg/s over one s2s stream\n\
         ratio federated/local: {:.2}",
        federated / local
    );
    // Every stanza acknowledged and off the queue (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = a.federation_status();
    while !status.contains("queued 0,") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = a.federation_status();
    }
    println!("\n{status}");
}

/// Messages per second from `pairs` users on `from` to as many on `to`.
async fn measure(
    from: &TestServer,
    to: &TestServer,
    tag: &str,
    pairs: usize,
    messages: usize,
) -> f64 {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for n in 0..pairs {
        senders.push(login(from, &format!("{tag}-sender{n}")).await);
        let mut receiver = login(to, &format!("{tag}-receiver{n}")).await;
        send(&mut receiver, Element::bare("presence", "jabber:client")).await;
        receivers.push(receiver);
    }
    // Warm-up: one message per pair, which also brings the s2s stream up.
    for (n, sender) in senders.iter_mut().enumerate() {
        send(sender, chat(&to.jid(&format!("{tag}-receiver{n}")))).await;
    }
    for receiver in &mut receivers {
        receive(receiver, 1).await;
    }

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, mut sender) in senders.into_iter().enumerate() {
        let to = to.jid(&format!("{tag}-receiver{n}"));
        tasks.spawn(async move {
            for _ in 0..messages {
                send(&mut sender, chat(&to)).await;
            }
            sender
        });
    }
    for mut receiver in receivers {
        tasks.spawn(async move {
            receive(&mut receiver, messages).await;
            receiver
        });
    }
    let mut connections = Vec::new();
    while let Some(done) = tokio::time::timeout(WAIT, tasks.join_next())
        .await
        .expect("all messages within the time limit")
    {
        connections.push(done.expect("task"));
    }
    let elapsed = start.elapsed();
    for connection in connections {
        connection.close().await;
    }
    (pairs * messages) as f64 / elapsed.as_secs_f64()
}

async fn login(server: &TestServer, user: &str) -> Connection {
    server.add_user(user, PASSWORD);
    let jid = BareJid::new(&server.jid(user)).expect("jid");
    Connection::open(&jid, PASSWORD, &Target::Address(server.c2s_tls.to_string()))
        .await
        .expect("login")
}

async fn send(connection: &mut Connection, stanza: Element) {
    connection.send(&stanza).await.expect("send");
}

/// Waits for `count` chat messages.
async fn receive(connection: &mut Connection, count: usize) {
    let mut received = 0;
    while received < count {
        let stanza = connection.next().await.expect("stream open");
        if stanza.name() == "message" {
            assert_ne!(stanza.attr("type"), Some("error"), "{stanza:?}");
            received += 1;
        }
    }
}

/// A chat message to `to` with a fresh 64-byte OMEMO-style payload.
fn chat(to: &str) -> Element {
    let mut payload = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut payload);
    let payload = base64::engine::general_purpose::STANDARD.encode(payload);
    format!(
        "<message xmlns='jabber:client' to='{to}' type='chat'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/>\
         <payload>{payload}</payload></encrypted></message>"
    )
    .parse()
    .expect("message")
}
