//! Throughput of one group of 50 members on one server: every member
//! sends through the hub at once, every member decrypts everything the
//! others sent. Real clients (tern-e2ee sessions, each with its own
//! durable store) and the release `tern-server` on loopback, all on this
//! machine's cores.
//!
//! `cargo bench -p tern-server --bench group_throughput [-- MEMBERS MESSAGES_EACH]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestCa, TestServer};
use jid::BareJid;
use tern_e2ee::envelope::Content;
use tern_e2ee::{ClientStore, ConversationId, Device, Event, Session, SessionOptions};

const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let members = args.next().unwrap_or(50);
    let each = args.next().unwrap_or(10);
    rlimit::increase_nofile_limit(u64::MAX).expect("raise open file limit");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(members, each));
}

struct Member {
    session: Session,
    _dir: tempfile::TempDir,
}

async fn member(server: &TestServer, name: &str) -> Member {
    let dir = tempfile::tempdir().expect("temp dir");
    let jid = BareJid::new(&server.jid(name)).expect("jid");
    let options = SessionOptions {
        jid: jid.clone(),
        password: "secret".into(),
        server: Some(server.c2s_tls.to_string()),
        nameserver: None,
    };
    Session::register(&options).await.expect("register");
    let store = ClientStore::open(&dir.path().join("client.sqlite3")).expect("store");
    let device = Device::create(store, jid).await.expect("device");
    let mut session = Session::connect(device, options).await.expect("login");
    session.publish_device(None).await.expect("publish");
    session
        .replenish_key_packages(3)
        .await
        .expect("key packages");
    Member { session, _dir: dir }
}

async fn run(count: usize, each: usize) {
    TestCa::get();
    let server = TestServer::start();
    let setup = Instant::now();
    let mut members = Vec::with_capacity(count);
    for i in 0..count {
        members.push(member(&server, &format!("m{i}")).await);
    }
    let others: Vec<BareJid> = (1..count)
        .map(|i| BareJid::new(&server.jid(&format!("m{i}"))).expect("jid"))
        .collect();
    let (id, _) = members[0]
        .session
        .create_conversation(&others)
        .await
        .expect("group");
    for member in &mut members[1..] {
        wait_for(&mut member.session, |e| matches!(e, Event::Joined { .. })).await;
    }
    println!(
        "set-up: {count} members registered, logged in and in one group in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let total = count * each;
    let tasks: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, member)| {
            let id = id.clone();
            tokio::spawn(async move { send_and_receive(member, id, i, each, total - each).await })
        })
        .collect();
    let mut last_received = Duration::ZERO;
    for task in tasks {
        last_received = last_received.max(task.await.expect("member task"));
    }
    let seconds = last_received.as_secs_f64();
    println!(
        "{total} messages ({each} from each of {count} members, 1 KiB-class envelopes): \
         all delivered and decrypted by every member in {seconds:.2} s"
    );
    println!(
        "throughput: {:.0} messages/s through the hub, {:.0} decrypted deliveries/s ({} per message)",
        total as f64 / seconds,
        (total * (count - 1)) as f64 / seconds,
        count - 1
    );
}

/// Sends `each` messages, then reads until `expected` messages of the
/// others arrived; returns when (since the start) the last one did.
async fn send_and_receive(
    mut member: Member,
    id: ConversationId,
    index: usize,
    each: usize,
    expected: usize,
) -> Duration {
    let started = Instant::now();
    for n in 0..each {
        let text = format!("member {index} message {n} {}", "x".repeat(400));
        member
            .session
            .send(&id, vec![Content::Body(text)])
            .await
            .expect("send");
    }
    let mut received = 0;
    while received < expected {
        match member.session.next_event(WAIT).await.expect("event") {
            Some(Event::Message { .. }) => received += 1,
            Some(_) => {}
            None => panic!("member {index}: {received} of {expected} messages after {WAIT:?}"),
        }
    }
    let done = started.elapsed();
    member.session.close().await;
    done
}

async fn wait_for(session: &mut Session, wanted: impl Fn(&Event) -> bool) {
    loop {
        match session.next_event(WAIT).await.expect("event") {
            Some(event) if wanted(&event) => return,
            Some(_) => {}
            None => panic!("timed out during set-up"),
        }
    }
}
