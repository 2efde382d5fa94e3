//! Sends and processes messages in a two-member group in a loop, for
//! profiling the per-message cost of Tern's layer (`perf record`).
use jid::BareJid;
use tern_e2ee::envelope::Content;
use tern_e2ee::{ClientStore, Device};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Device::create(
        ClientStore::open(&da.path().join("a")).unwrap(),
        BareJid::new("a@x.example").unwrap(),
    )
    .await
    .unwrap();
    let b = Device::create(
        ClientStore::open(&db.path().join("b")).unwrap(),
        BareJid::new("b@x.example").unwrap(),
    )
    .await
    .unwrap();
    let (id, _) = a.create_conversation().await.unwrap();
    let out = a
        .add_members(&id, &b.generate_key_packages(1).await.unwrap())
        .await
        .unwrap();
    a.commit_accepted(&id, 1).await.unwrap();
    let address = BareJid::new(&format!("{}@groups.x.example", id.to_hex())).unwrap();
    b.join(out.welcome.as_ref().unwrap(), 1, &address)
        .await
        .unwrap();
    let body = "m".repeat(700);
    let started = std::time::Instant::now();
    let (mut send, mut recv) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for seq in 2..2 + rounds {
        let t = std::time::Instant::now();
        let (message, _) = a
            .send(&id, vec![Content::Body(body.clone())])
            .await
            .unwrap();
        send += t.elapsed();
        let t = std::time::Instant::now();
        b.process(&id, seq, &message).await.unwrap();
        recv += t.elapsed();
    }
    let n = rounds as f64;
    println!(
        "{rounds} rounds: {:.1} us per round (send {:.1} us, process {:.1} us)",
        started.elapsed().as_secs_f64() * 1e6 / n,
        send.as_secs_f64() * 1e6 / n,
        recv.as_secs_f64() * 1e6 / n
    );
}
