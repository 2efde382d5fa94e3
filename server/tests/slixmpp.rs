//! A standard XMPP client, slixmpp (from PyPI), against the real server:
//! in-band registration, subscription, encrypted messages, the
//! policy-violation for a plain body, and PEP with publish-options.
//!
//! The Python interpreter is `TERN_TEST_PYTHON`, else `.venv/bin/python`
//! at the workspace root (the test command creates it). Without one the
//! test fails under CI (or `TERN_REQUIRE_PEERS=1`) and is skipped, loudly,
//! elsewhere.

mod common;

use common::peers::{missing, python, run_slixmpp};
use common::{TestCa, TestServer, DOMAIN};

#[test]
fn slixmpp_standard_client_scenario() {
    let Some(python) = python() else {
        return missing("Python venv with slixmpp");
    };
    let server = TestServer::start();
    let args = [
        server.c2s.ip().to_string(),
        server.c2s.port().to_string(),
        DOMAIN.to_owned(),
        TestCa::get().ca_path().display().to_string(),
    ];
    run_slixmpp(&python, "standard_client.py", &args, || {
        format!("server log:\n{}", server.log())
    });
}
