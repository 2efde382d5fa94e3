//! A standard XMPP client, slixmpp (from PyPI), against the real server:
//! in-band registration, subscription, encrypted messages, the
//! policy-violation for a plain body, and PEP with publish-options.
//!
//! The Python interpreter is `TERN_TEST_PYTHON`, else `.venv/bin/python`
//! at the workspace root (the test command creates it). Without one the
//! test fails under CI (or `TERN_REQUIRE_PEERS=1`) and is skipped, loudly,
//! elsewhere.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{TestCa, TestServer, DOMAIN};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TERN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

#[test]
fn slixmpp_standard_client_scenario() {
    let Some(python) = python() else {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("TERN_REQUIRE_PEERS").is_some();
        assert!(
            !required,
            "no Python with slixmpp: run the README's test command (scripts/test.sh)"
        );
        eprintln!("SKIPPED: no Python venv with slixmpp; run scripts/test.sh");
        return;
    };
    let server = TestServer::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/standard_client.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(server.c2s.ip().to_string())
        .arg(server.c2s.port().to_string())
        .arg(DOMAIN)
        .arg(TestCa::get().ca_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let finished = common::wait_child(&mut child, Duration::from_secs(150));
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        finished && stdout.contains("all steps passed"),
        "slixmpp scenario failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log()
    );
}
