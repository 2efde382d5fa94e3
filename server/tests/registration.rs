//! In-band registration (XEP-0077) as a client sees it: open and closed
//! policies, password change and account cancellation after login.

mod common;

use std::time::Duration;

use common::{stream_header, RawClient, ServerOptions, TestClient, TestServer, DOMAIN};
use tokio_xmpp::{IqRequest, IqResponse};

const REGISTER: &str = "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
    <username>newbie</username><password>pw</password></query></iq>";

#[tokio::test]
async fn closed_registration_is_refused_and_not_advertised() {
    let server = TestServer::start_with(ServerOptions {
        registration: "closed",
        ..Default::default()
    });
    let mut raw = RawClient::connect(&server).await;
    raw.send(&stream_header(DOMAIN)).await;
    raw.read_until("</stream:features>").await;
    let mut raw = RawClient::connect_tls(&server).await;
    assert!(!raw.received.contains("iq-register"), "{}", raw.received);
    raw.send(REGISTER).await;
    let reply = raw.read_until("</iq>").await;
    assert!(
        reply.contains("type='error'") || reply.contains("type=\"error\""),
        "{reply}"
    );
    assert!(reply.contains("service-unavailable"), "{reply}");
}

#[tokio::test]
async fn open_registration_creates_once_and_rejects_taken_names() {
    let server = TestServer::start();
    let mut raw = RawClient::connect_tls(&server).await;
    assert!(raw.received.contains("iq-register"), "{}", raw.received);
    raw.received.clear();
    raw.send(REGISTER).await;
    // An empty result: `<iq …/>`.
    let reply = raw.read_until("id='reg'").await;
    assert!(reply.contains("type='result'"), "{reply}");
    raw.received.clear();
    raw.send(REGISTER).await;
    let reply = raw.read_until("</iq>").await;
    assert!(reply.contains("<conflict"), "{reply}");
    TestClient::login(&server, "newbie", "pw")
        .await
        .close()
        .await;
}

#[tokio::test]
async fn password_change_and_cancel_after_login() {
    let server = TestServer::start();
    server.add_user("alice", "old");
    let mut alice = TestClient::login(&server, "alice", "old").await;
    let change = "<query xmlns='jabber:iq:register'><username>alice</username><password>new</password></query>"
        .parse()
        .unwrap();
    assert!(matches!(
        alice.iq(Some(DOMAIN), IqRequest::Set(change)).await,
        IqResponse::Result(_)
    ));
    let other =
        "<query xmlns='jabber:iq:register'><username>bob</username><password>x</password></query>"
            .parse()
            .unwrap();
    assert!(matches!(
        alice.iq(Some(DOMAIN), IqRequest::Set(other)).await,
        IqResponse::Error(_)
    ));
    alice.close().await;
    let alice = TestClient::login(&server, "alice", "new").await;
    alice.close().await;

    let mut raw = RawClient::login(&server, "alice", "new").await;
    raw.send("<iq type='set' id='bye'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    let text = raw
        .read_to_close(Duration::from_secs(5))
        .await
        .expect("closed after cancel");
    assert!(
        text.contains("id='bye'") && text.contains("type='result'"),
        "{text}"
    );
    assert!(text.contains("<not-authorized"), "{text}");
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_tern-server"))
        .arg("--config")
        .arg(&server.config_path)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("alice"));
}
