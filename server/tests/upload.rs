//! The file upload service (XEP-0363): discovery, slots, the limit, and
//! the HTTPS side refusing what does not fit its slot.

mod common;

use std::sync::Arc;

use common::mls::{condition, Member};
use common::{ServerOptions, TestServer};
use minidom::Element;
use tern_e2ee::transfer::{self, TransferError};
use xmpp_parsers::http_upload::SlotResult;

const UPLOAD: &str = "upload.tern.test";
const MAX: u64 = 4096;
/// Room for two 100-byte files, not three.
const QUOTA: u64 = 250;

fn server() -> TestServer {
    TestServer::start_with(ServerOptions {
        sections: format!(
            "[upload]\nurl_host = \"127.0.0.1\"\nmax_file_bytes = {MAX}\n\
             quota_bytes_per_user = {QUOTA}\n"
        ),
        ..ServerOptions::default()
    })
}

async fn request_slot(member: &mut Member, size: u64) -> Result<SlotResult, Element> {
    // No content-type: it is optional.
    let request: Element =
        format!("<request xmlns='urn:xmpp:http:upload:0' filename='../x y.bin' size='{size}'/>")
            .parse()
            .expect("request");
    member
        .get(Some(UPLOAD), request)
        .await
        .map(|answer| SlotResult::try_from(answer).expect("a slot"))
}

fn no_progress() -> transfer::Progress {
    Arc::new(|_| {})
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_are_discovered_used_once_and_sized() {
    let server = server();
    let mut alice = Member::new(&server, "alice").await;

    let items = alice
        .get(
            Some("tern.test"),
            Element::bare("query", "http://jabber.org/protocol/disco#items"),
        )
        .await
        .expect("items");
    assert!(items.children().any(|i| i.attr("jid") == Some(UPLOAD)));
    let info = alice
        .get(
            Some(UPLOAD),
            Element::bare("query", "http://jabber.org/protocol/disco#info"),
        )
        .await
        .expect("info");
    assert!(info
        .children()
        .any(|f| f.attr("var") == Some("urn:xmpp:http:upload:0")));
    assert!(
        String::from(&info).contains(&MAX.to_string()),
        "max-file-size is announced"
    );

    // Too large, and empty: refused with the limit.
    for size in [MAX + 1, 0] {
        let refused = request_slot(&mut alice, size).await.expect_err("refused");
        assert_eq!(
            condition(&refused).as_deref(),
            Some("not-acceptable"),
            "{size}: {}",
            String::from(&refused)
        );
        let max = refused
            .get_child("file-too-large", "urn:xmpp:http:upload:0")
            .and_then(|f| f.get_child("max-file-size", "urn:xmpp:http:upload:0"))
            .map(Element::text);
        assert_eq!(max.as_deref(), Some("4096"));
    }

    let slot = request_slot(&mut alice, 100).await.expect("a slot");
    assert!(
        slot.put.url.starts_with("https://127.0.0.1:"),
        "{}",
        slot.put.url
    );
    assert!(slot.put.url.ends_with("/xy.bin"), "{}", slot.put.url);
    // Not there before it is uploaded; a body of another size is refused.
    let early = transfer::get(&slot.get.url, MAX, no_progress()).await;
    assert!(
        matches!(early, Err(TransferError::Status(404))),
        "{early:?}"
    );
    let short = transfer::put(&slot.put.url, vec![1; 99], no_progress()).await;
    assert!(
        matches!(short, Err(TransferError::Status(400))),
        "{short:?}"
    );
    let long = transfer::put(&slot.put.url, vec![1; 101], no_progress()).await;
    assert!(matches!(long, Err(TransferError::Status(413))), "{long:?}");
    // The right size is stored, once.
    transfer::put(&slot.put.url, vec![7; 100], no_progress())
        .await
        .expect("upload");
    let again = transfer::put(&slot.put.url, vec![8; 100], no_progress()).await;
    assert!(
        matches!(again, Err(TransferError::Status(409))),
        "{again:?}"
    );
    let got = transfer::get(&slot.get.url, MAX, no_progress())
        .await
        .expect("download");
    assert_eq!(got, vec![7; 100]);
    // A download larger than the caller allows is cut off.
    let capped = transfer::get(&slot.get.url, 50, no_progress()).await;
    assert!(matches!(capped, Err(TransferError::TooLarge)), "{capped:?}");
    // Unknown tokens are not found.
    let (base, path) = slot.get.url.split_once("/upload/").expect("an upload URL");
    let name = path.split_once('/').expect("token/name").1;
    let forged = format!("{base}/upload/{}/{name}", "0".repeat(32));
    let unknown = transfer::get(&forged, MAX, no_progress()).await;
    assert!(
        matches!(unknown, Err(TransferError::Status(404))),
        "{unknown:?}"
    );

    // The quota counts stored files and fresh slots.
    request_slot(&mut alice, 100)
        .await
        .expect("a second slot fits");
    let over = request_slot(&mut alice, 100).await.expect_err("over quota");
    assert_eq!(condition(&over).as_deref(), Some("resource-constraint"));
    alice.go_offline().await;
}

/// An upload that stops sending is abandoned after
/// `upload.idle_timeout_secs` with 408, its partial file removed; it used
/// to hold its connection and file for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_is_abandoned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(ServerOptions {
        sections: format!(
            "[upload]\nurl_host = \"127.0.0.1\"\nmax_file_bytes = {MAX}\nidle_timeout_secs = 1\n"
        ),
        ..ServerOptions::default()
    });
    let mut alice = Member::new(&server, "alice").await;
    let slot = request_slot(&mut alice, 100).await.expect("a slot");
    let path = slot
        .put
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .expect("a path");
    let tcp = tokio::net::TcpStream::connect(server.https)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(common::TestCa::get().client_config());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1".to_owned()).expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS");
    let started = std::time::Instant::now();
    tls.write_all(
        format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let uploads = server.data_dir().join("uploads");
    let parts: Vec<_> = std::fs::read_dir(&uploads)
        .expect("the uploads directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
    // The slot can still be used.
    transfer::put(&slot.put.url, vec![7; 100], no_progress())
        .await
        .expect("upload");
}

/// A slot unused for an hour no longer counts against the quota, and can
/// no longer be used (it stayed usable for a day: a user could hold 24
/// times the quota).
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_slot_cannot_be_used() {
    let server = server();
    let mut alice = Member::new(&server, "alice").await;
    let slot = request_slot(&mut alice, 100).await.expect("a slot");
    // Two hours pass for this slot.
    let database = server.data_dir().join("tern.sqlite3");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .expect("the database");
    let updated = sqlx::query("UPDATE uploads SET created_at = ?")
        .bind(
            (chrono::Utc::now() - chrono::Duration::hours(2))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
        .execute(&pool)
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;
    let refused = transfer::put(&slot.put.url, vec![7; 100], no_progress()).await;
    assert!(
        matches!(refused, Err(TransferError::Status(410))),
        "{refused:?}"
    );
    // A fresh slot works.
    let fresh = request_slot(&mut alice, 100).await.expect("a slot");
    transfer::put(&fresh.put.url, vec![7; 100], no_progress())
        .await
        .expect("upload");
}
