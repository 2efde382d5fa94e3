//! A client that stops reading cannot exhaust the server's memory, and
//! nothing sent to it is lost: a flooder sends large encrypted messages
//! to a victim that never reads. The victim's session is closed once its
//! queue holds `limits.session_buffer_bytes`; what it held goes to
//! offline storage, and what offline storage cannot take bounces to the
//! flooder with an error. Afterwards every message is accounted for
//! exactly once: read from the victim's socket, delivered from offline
//! storage, or bounced. Throughout, the server's memory stays bounded and
//! a bystander's pings are answered.
//!
//! Before: the session's queue was bounded at 4,096 stanzas whatever
//! their size, the write had no deadline, and the close decided when the
//! queue was full was never acted on while the write was stuck (RSS grew
//! by a gigabyte for one victim); stanzas beyond the queue were dropped.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{omemo_message, RawClient, ServerOptions, TestClient, TestServer, DOMAIN};
use tern_federation::xml_reader::{Read, StanzaReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Messages the flooder sends, and the size of each one's payload.
const MESSAGES: usize = 1500;
const PAYLOAD: usize = 60 * 1024;
/// Offline messages kept for the victim (the rest bounce).
const OFFLINE: usize = 100;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The ids of the complete `<message/>`s in a stream's bytes (a stanza
/// cut off when the connection ended is not counted).
fn message_ids(bytes: &[u8], with_header: bool) -> Vec<String> {
    let mut reader = if with_header {
        StanzaReader::new_stream()
    } else {
        StanzaReader::new("jabber:client")
    };
    let mut ids = Vec::new();
    let mut rest = bytes;
    loop {
        let (taken, read) = reader.read(rest);
        rest = &rest[taken..];
        match read {
            Ok(Read::Element(e)) if e.name() == "message" => {
                ids.extend(e.attr("id").map(str::to_owned));
            }
            Ok(Read::Element(_) | Read::Header(_)) => {}
            Ok(Read::NeedMore) if rest.is_empty() && !reader.has_pending() => return ids,
            Ok(Read::NeedMore) if rest.is_empty() => return ids,
            Ok(Read::NeedMore) => {}
            Ok(Read::Footer) | Err(_) => return ids,
        }
    }
}

/// Reads `io` in a task of its own into a shared buffer, until it ends
/// or has been quiet for 30 seconds.
fn collect(
    mut io: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = bytes.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_costs_bounded_memory_and_loses_nothing() {
    flood_a_victim(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_with_stream_management() {
    flood_a_victim(true).await;
}

/// The scenario; `acks`: the victim enabled Stream Management (and
/// acknowledges nothing, so what it got but did not acknowledge may also
/// come back: at least once).
async fn flood_a_victim(acks: bool) {
    let server = TestServer::start_with(ServerOptions {
        limits: format!(
            "session_buffer_bytes = 262144\nwrite_timeout_secs = 5\nmax_offline_messages = {OFFLINE}"
        ),
        ..Default::default()
    });
    for user in ["flooder", "victim", "bystander"] {
        server.add_user(user, "pw");
    }
    let mut bystander = TestClient::login(&server, "bystander", "pw").await;

    // The victim's socket takes little, then it reads nothing more.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let tcp = socket.connect(server.c2s).await.expect("connect");
    let mut victim = RawClient::login_over(tcp, "victim", "pw", None).await;
    if acks {
        victim.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
        victim.read_until("<enabled").await;
    }
    victim.send("<presence/>").await;
    victim
        .send("<iq type='get' id='v'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    victim.read_until("id='v'").await;
    let (mut victim_io, _) = victim.into_parts();

    let flooder = RawClient::login(&server, "flooder", "pw").await;
    let (flooder_io, _) = flooder.into_parts();
    let (flooder_in, mut flooder_out) = tokio::io::split(flooder_io);
    let flooder_reader = collect(flooder_in);

    let pid = server.pid();
    let before = resident_kib(pid);
    let payload = "A".repeat(PAYLOAD);
    let sender = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let message = omemo_message(&format!("victim@{DOMAIN}"), &format!("f{i}"), &payload);
            flooder_out
                .write_all(message.as_bytes())
                .await
                .expect("flood");
        }
        flooder_out.flush().await.expect("flush");
        flooder_out
    });

    // While the flood runs: memory and a bystander's round trips.
    let mut peak = before;
    let mut pings = Vec::new();
    while !sender.is_finished() {
        let started = Instant::now();
        bystander.sync().await;
        pings.push(started.elapsed());
        peak = peak.max(resident_kib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _flooder_out = sender.await.expect("flooder");
    // The flooder's last stanzas are handled before its ping's answer.
    let mut flooder_check = TestClient::login(&server, "flooder", "pw").await;
    flooder_check.sync().await;
    peak = peak.max(resident_kib(pid));
    pings.sort();
    let p99 = pings[(pings.len() * 99 / 100).min(pings.len() - 1)];

    // The victim reads what its socket holds: the server gave up on it
    // (write deadline) and closed the connection.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(20), victim_io.read(&mut buf)).await {
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            // Reset: closed too.
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    // Closed (with <policy-violation/> when the client read it before the
    // server stopped trying to write it: not something to wait for).
    assert!(closed, "the server closes the stuck session's connection");
    let live = message_ids(&received, false);

    // The victim comes back (offline storage, and what the closed session
    // held as it is re-routed), and the flooder reads its bounces, until
    // every message is accounted for (bounded).
    let mut back = RawClient::login(&server, "victim", "pw").await;
    back.send("<presence/>").await;
    let (back_io, _) = back.into_parts();
    let back_bytes = collect(back_io);
    let bounced_bytes = flooder_reader;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (returned, bounced) = loop {
        let returned = message_ids(&back_bytes.lock().expect("lock"), false);
        let bounced = message_ids(&bounced_bytes.lock().expect("lock"), false);
        // Distinct ids: with Stream Management some come twice.
        let accounted: std::collections::BTreeSet<&String> =
            live.iter().chain(&returned).chain(&bounced).collect();
        if accounted.len() >= MESSAGES || Instant::now() > deadline {
            break (returned, bounced);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(flooder_check);

    let mut seen: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (ids, how) in [(&live, "live"), (&returned, "back"), (&bounced, "bounced")] {
        for id in ids {
            seen.entry(id.clone()).or_default().push(how);
        }
    }
    let missing: Vec<String> = (0..MESSAGES)
        .map(|i| format!("f{i}"))
        .filter(|id| !seen.contains_key(id))
        .collect();
    // The stanza being written when the server gave up may have reached
    // the socket whole: without Stream Management the server cannot know,
    // and keeps it rather than lose it. Nothing else arrives twice.
    // With Stream Management, what the victim got but never acknowledged
    // comes back too.
    let in_flight = live.last().cloned();
    let twice: Vec<_> = seen
        .iter()
        .filter(|(id, how)| {
            let again_allowed = how[0] == "live" && (acks || Some(*id) == in_flight.as_ref());
            how.len() > 2 || (how.len() == 2 && !again_allowed)
        })
        .collect();
    eprintln!(
        "live {}, after coming back {}, bounced {}; RSS {} -> peak {} KiB; bystander ping p99 {:?} over {}",
        live.len(),
        returned.len(),
        bounced.len(),
        before,
        peak,
        p99,
        pings.len()
    );
    assert!(
        missing.is_empty(),
        "{} lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(twice.is_empty(), "counted twice: {twice:?}");
    assert!(
        !bounced.is_empty(),
        "offline storage filled up and the rest bounced"
    );
    // 1,500 messages of 60 KiB (90 MB) went through; the server holds at
    // most a session's buffers of them at a time.
    assert!(
        peak - before < 100 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
    assert!(
        p99 < Duration::from_millis(100),
        "bystander ping p99 {p99:?}"
    );
}
