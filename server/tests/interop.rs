//! Federation with the XMPP servers already out there: Prosody (`p.test`,
//! on 127.0.0.5) and ejabberd (`e.test`, on 127.0.0.6), Debian's packages,
//! and a Tern server (`a.test`) find each other through dnsmasq SRV
//! records and federate both ways; a slixmpp user on each side subscribes
//! to the other and they exchange OMEMO-style encrypted messages — once
//! with certificate authentication, once with dialback only.

mod common;

use std::net::SocketAddr;

use common::bed::federation_section;
use common::dns::{federation_records, free_port, Dns};
use common::peers::{missing, python, run_slixmpp, Ejabberd, PeerAuth, PeerServer, Prosody};
use common::{ServerOptions, TestCa, TestServer};

const PASSWORD: &str = "interop secret";

/// Tern `a.test` on 127.`net`.0.2 and the peer `start` makes federate
/// with `auth`; a slixmpp user on each talks to the other; Tern's status
/// shows both directions authenticated as `auth` says.
fn tern_federates_with<P: PeerServer>(
    net: u8,
    auth: PeerAuth,
    start: impl FnOnce(SocketAddr, &TestServer) -> Option<P>,
) {
    let Some(python) = python() else {
        return missing("Python venv with slixmpp");
    };
    let dns_port = free_port();
    let nameserver = format!("127.0.0.1:{dns_port}").parse().expect("address");
    let certificate_auth = auth == PeerAuth::Certificates;
    let tern = TestServer::start_with(ServerOptions {
        domain: "a.test".to_owned(),
        address: format!("127.{net}.0.2"),
        s2s_ports: Some((free_port(), free_port())),
        sections: federation_section(dns_port, &format!("certificate_auth = {certificate_auth}")),
        ..Default::default()
    });
    let Some(peer) = start(nameserver, &tern) else {
        return;
    };
    let Some(_dns) = Dns::start_at(
        dns_port,
        &federation_records([
            ("a.test", tern.s2s),
            (peer.addresses().domain.as_str(), peer.addresses().s2s),
        ]),
    ) else {
        return;
    };
    tern.add_user("alice", PASSWORD);
    peer.register("bob", PASSWORD);

    let args = [
        TestCa::get().ca_path().display().to_string(),
        PASSWORD.to_owned(),
        "alice@a.test".to_owned(),
        tern.c2s.ip().to_string(),
        tern.c2s.port().to_string(),
        format!("bob@{}", peer.addresses().domain),
        peer.addresses().c2s.ip().to_string(),
        peer.addresses().c2s.port().to_string(),
    ];
    run_slixmpp(&python, "federated_clients.py", &args, || {
        format!(
            "tern status:\n{}\ntern log:\n{}\npeer log:\n{}",
            tern.federation_status(),
            tern.log(),
            peer.log()
        )
    });

    let method = match auth {
        PeerAuth::Certificates => "certificate",
        PeerAuth::Dialback => "dialback",
    };
    let status = tern.federation_status();
    println!("{status}");
    let domain = &peer.addresses().domain;
    assert!(
        status.contains(&format!("out a.test -> {domain}: connected, {method}")),
        "{status}"
    );
    assert!(
        status.contains(&format!("a.test <- {domain} ({method})")),
        "{status}"
    );
}

fn prosody(auth: PeerAuth) -> impl FnOnce(SocketAddr, &TestServer) -> Option<Prosody> {
    move |nameserver, _| Prosody::start("p.test", "127.0.0.5", nameserver, auth)
}

fn ejabberd(auth: PeerAuth) -> impl FnOnce(SocketAddr, &TestServer) -> Option<Ejabberd> {
    move |nameserver, tern| {
        let hosts = [("a.test", tern.s2s.ip())];
        Ejabberd::start("e.test", "127.0.0.6", nameserver, &hosts, auth)
    }
}

#[test]
fn tern_and_prosody_federate_with_certificates() {
    tern_federates_with(6, PeerAuth::Certificates, prosody(PeerAuth::Certificates));
}

#[test]
fn tern_and_prosody_federate_with_dialback() {
    tern_federates_with(7, PeerAuth::Dialback, prosody(PeerAuth::Dialback));
}

#[test]
fn tern_and_ejabberd_federate_with_certificates() {
    tern_federates_with(8, PeerAuth::Certificates, ejabberd(PeerAuth::Certificates));
}

#[test]
fn tern_and_ejabberd_federate_with_dialback() {
    tern_federates_with(9, PeerAuth::Dialback, ejabberd(PeerAuth::Dialback));
}
