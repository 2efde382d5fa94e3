//! The features standard clients on phones and in browsers expect
//! (XEP-0479 Advanced IM Server and the mobile profile), each exercised
//! by slixmpp (from PyPI) against a real server, one scenario per
//! feature in `tests/slixmpp/`.
//!
//! The Python interpreter is `TERN_TEST_PYTHON`, else `.venv/bin/python`
//! at the workspace root (the test command creates it). Without one the
//! tests fail under CI (or `TERN_REQUIRE_PEERS=1`) and are skipped,
//! loudly, elsewhere.

mod common;

use common::peers::{missing, python, run_slixmpp};
use common::{files_containing, ServerOptions, TestCa, TestServer, DOMAIN};

/// Runs `script` against a fresh server; returns the server for checks
/// of what it wrote.
fn scenario(script: &str) -> Option<TestServer> {
    scenario_with(script, ServerOptions::default())
}

/// Runs `script` against a fresh server started with `options`.
fn scenario_with(script: &str, options: ServerOptions) -> Option<TestServer> {
    let Some(python) = python() else {
        missing("Python venv with slixmpp");
        return None;
    };
    let server = TestServer::start_with(options);
    let args = [
        server.c2s.ip().to_string(),
        server.c2s.port().to_string(),
        DOMAIN.to_owned(),
        TestCa::get().ca_path().display().to_string(),
    ];
    run_slixmpp(&python, script, &args, || {
        format!("server log:\n{}", server.log())
    });
    Some(server)
}

#[test]
fn carbons_and_the_message_archive() {
    let Some(server) = scenario("archive_carbons.py") else {
        return;
    };
    assert!(
        files_containing(server.dir.path(), b"plain secret").is_empty(),
        "a plain body reached the server's files"
    );
}

#[test]
fn stream_management_resumption_and_client_state() {
    let options = ServerOptions {
        limits: "resumption_timeout_secs = 3".to_owned(),
        ..ServerOptions::default()
    };
    scenario_with("resumption_csi.py", options);
}

#[test]
fn vcards_avatars_private_storage_bookmarks_blocking_and_more() {
    scenario("account_data.py");
}

#[test]
fn http_file_upload_through_a_slot() {
    let options = ServerOptions {
        sections: "[upload]\nurl_host = \"127.0.0.1\"\nmax_file_bytes = 4096\n".to_owned(),
        ..ServerOptions::default()
    };
    let Some(server) = scenario_with("upload.py", options) else {
        return;
    };
    let stored = std::fs::read_dir(server.data_dir().join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stored, 1, "one stored file");
}

#[test]
fn push_notifications_without_content() {
    scenario("push.py");
}

#[test]
fn members_only_rooms_for_omemo_clients() {
    let Some(server) = scenario("muc.py") else {
        return;
    };
    assert!(
        files_containing(server.dir.path(), b"plain words").is_empty(),
        "a plain group message reached the server's files"
    );
}
