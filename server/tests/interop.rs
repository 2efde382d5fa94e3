//! Federation with the XMPP servers already out there: Prosody (`p.test`,
//! on 127.0.0.5, Debian's package with lua-unbound) and a Tern server
//! (`a.test`) find each other through dnsmasq SRV records and federate
//! both ways; a slixmpp user on each side subscribes to the other and
//! they exchange OMEMO-style encrypted messages — once with certificate
//! authentication, once with dialback only.

mod common;

use common::dns::{federation_records, free_port, Dns};
use common::peers::{missing, python, run_slixmpp, Prosody, ProsodyAuth};
use common::{ServerOptions, TestCa, TestServer};

const PASSWORD: &str = "interop secret";

/// Tern `a.test` on 127.`net`.0.2 and Prosody `p.test` on 127.0.0.5
/// federate with `auth`; the two slixmpp users talk; the link is checked
/// to have authenticated as `auth` says on Tern's side, both ways.
fn tern_and_prosody_federate(net: u8, auth: ProsodyAuth) {
    let Some(python) = python() else {
        return missing("Python venv with slixmpp");
    };
    let dns_port = free_port();
    let nameserver = format!("127.0.0.1:{dns_port}").parse().expect("address");
    let certificate_auth = auth == ProsodyAuth::Certificates;
    let tern = TestServer::start_with(ServerOptions {
        domain: "a.test".to_owned(),
        address: format!("127.{net}.0.2"),
        s2s_ports: Some((free_port(), free_port())),
        sections: format!(
            "[federation]\nnameserver = \"{nameserver}\"\nca_file = \"{}\"\nretry_max_secs = 1\n\
             certificate_auth = {certificate_auth}\n",
            TestCa::get().ca_path().display()
        ),
        ..Default::default()
    });
    let Some(prosody) = Prosody::start("p.test", "127.0.0.5", nameserver, auth) else {
        return;
    };
    let Some(_dns) = Dns::start_at(
        dns_port,
        &federation_records([("a.test", tern.s2s), ("p.test", prosody.s2s)]),
    ) else {
        return;
    };
    tern.add_user("alice", PASSWORD);
    prosody.register("bob", PASSWORD);

    let args = [
        TestCa::get().ca_path().display().to_string(),
        PASSWORD.to_owned(),
        "alice@a.test".to_owned(),
        tern.c2s.ip().to_string(),
        tern.c2s.port().to_string(),
        "bob@p.test".to_owned(),
        prosody.c2s.ip().to_string(),
        prosody.c2s.port().to_string(),
    ];
    run_slixmpp(&python, "federated_clients.py", &args, || {
        format!(
            "tern status:\n{}\ntern log:\n{}\nprosody log:\n{}",
            tern.federation_status(),
            tern.log(),
            prosody.log()
        )
    });

    let method = match auth {
        ProsodyAuth::Certificates => "certificate",
        ProsodyAuth::Dialback => "dialback",
    };
    let status = tern.federation_status();
    assert!(
        status.contains(&format!("out a.test -> p.test: connected, {method}")),
        "{status}"
    );
    assert!(
        status.contains(&format!("a.test <- p.test ({method})")),
        "{status}"
    );
}

#[test]
fn tern_and_prosody_federate_with_certificates() {
    tern_and_prosody_federate(6, ProsodyAuth::Certificates);
}

#[test]
fn tern_and_prosody_federate_with_dialback() {
    tern_and_prosody_federate(7, ProsodyAuth::Dialback);
}
