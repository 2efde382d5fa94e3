//! Browser-side clients over XMPP over WebSocket (RFC 7395): @xmpp/client
//! in Node.js, and Converse.js in Debian's headless Chromium, each
//! exchanging encrypted messages with a slixmpp user.
//!
//! The Node.js packages are installed by the test command (`npm ci` in
//! `server/tests/web`), Chromium from Debian's packages. Without them the
//! tests fail under CI (or `TERN_REQUIRE_PEERS=1`) and are skipped,
//! loudly, elsewhere.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::peers::{missing, python, web_clients, Helper};
use common::{TestCa, TestServer};

/// The slixmpp user who answers `marker`, started and logged in.
fn answering_peer(server: &TestServer, python: &PathBuf, jid: &str, marker: &str) -> Helper {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/answer_peer.py");
    let mut command = Command::new(python);
    command.arg(script).args([
        server.c2s.ip().to_string(),
        server.c2s.port().to_string(),
        TestCa::get().ca_path().display().to_string(),
        jid.to_owned(),
        "bob-secret".to_owned(),
        marker.to_owned(),
    ]);
    let peer = Helper::start(command, server.dir.path(), "answer_peer");
    assert!(
        peer.wait_for_output("ready", Duration::from_secs(30)),
        "the slixmpp peer did not log in\n{}\nserver log:\n{}",
        peer.output(),
        server.log()
    );
    peer
}

#[test]
fn xmpp_client_over_websocket_talks_to_slixmpp() {
    let (Some(web), Some(python)) = (web_clients(), python()) else {
        return missing("Node.js packages of server/tests/web and the slixmpp venv");
    };
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let marker = format!("ws-marker-{}", std::process::id());
    let mut peer = answering_peer(&server, &python, &server.jid("bob"), &marker);
    let mut command = Command::new("node");
    command
        .current_dir(&web)
        .env("NODE_EXTRA_CA_CERTS", TestCa::get().ca_path())
        .arg("xmpp_client.mjs")
        .args([
            server.websocket_url(),
            server.domain.clone(),
            "alice".to_owned(),
            "alice-secret".to_owned(),
            server.jid("bob"),
            marker.clone(),
        ]);
    let mut node = Helper::start(command, server.dir.path(), "xmpp_client");
    let node_passed = node.passed(Duration::from_secs(60));
    let peer_passed = peer.passed(Duration::from_secs(30));
    assert!(
        node_passed && peer_passed,
        "{}\n{}\nserver log:\n{}",
        node.output(),
        peer.output(),
        server.log()
    );
    println!("{}", node.output());
}

#[test]
fn converse_js_in_headless_chromium_shows_a_received_message() {
    let (Some(web), Some(python)) = (web_clients(), python()) else {
        return missing("Node.js packages of server/tests/web and the slixmpp venv");
    };
    if !std::path::Path::new(CHROMIUM).exists() {
        return missing("Debian's chromium");
    }
    let server = TestServer::start();
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let screenshot = artifacts().join("converse-received-message.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut command = Command::new("node");
    command.current_dir(&web).arg("converse.mjs").args([
        server.websocket_url(),
        server.jid("alice"),
        "alice-secret".to_owned(),
        server.jid("bob"),
        screenshot.display().to_string(),
    ]);
    let mut browser = Helper::start(command, server.dir.path(), "converse");
    assert!(
        browser.wait_for_output("ready", Duration::from_secs(60)),
        "Converse.js did not log in\n{}\nserver log:\n{}",
        browser.output(),
        server.log()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/send_encrypted.py");
    let mut send = Command::new(&python);
    send.arg(script).args([
        server.c2s.ip().to_string(),
        server.c2s.port().to_string(),
        TestCa::get().ca_path().display().to_string(),
        server.jid("bob"),
        "bob-secret".to_owned(),
        server.jid("alice"),
        "c2VhbGVkIGZvciBhbGljZQ==".to_owned(),
    ]);
    let mut sender = Helper::start(send, server.dir.path(), "send_encrypted");
    let sent = sender.passed(Duration::from_secs(30));
    let shown = browser.passed(Duration::from_secs(60));
    assert!(
        sent && shown,
        "{}\n{}\nserver log:\n{}",
        browser.output(),
        sender.output(),
        server.log()
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("{}\nscreenshot: {}", browser.output(), screenshot.display());
}

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Where tests keep what a person may want to look at afterwards
/// (`target/test-artifacts/`).
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("test-artifacts"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}
