//! A malicious server cannot stop the client: elements nested thousands
//! deep, before and during authentication, end the connection attempt
//! with an error instead of overflowing the stack and aborting the
//! process (the `tern` CLI and `tern-bridge` read through this client).

use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use tern_e2ee::connection::{Connection, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DOMAIN: &str = "evil.test";

fn server_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream from='{DOMAIN}' id='s1' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

fn nested() -> String {
    "<a>".repeat(30_000) + &"</a>".repeat(30_000)
}

/// A TLS listener on loopback with a self-signed certificate for
/// [`DOMAIN`], trusted by the client through `SSL_CERT_FILE`.
async fn malicious_server(dir: &std::path::Path) -> (TcpListener, tokio_rustls::TlsAcceptor) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, cert.pem()).expect("write certificate");
    // The only test in this binary: nothing else reads the variable.
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
    )
    .expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    (listener, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads from the client until `needle` has arrived (bounded).
async fn read_until<S: AsyncReadExt + Unpin>(io: &mut S, needle: &str) {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = io.read(&mut buf).await.expect("read");
        assert!(n > 0, "the client closed before sending {needle}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn deep_nesting_from_the_server_ends_the_login_with_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (listener, acceptor) = malicious_server(dir.path()).await;
    let address = listener.local_addr().expect("address");
    // Twice: in place of the features, and as the SASL challenge.
    let server = tokio::spawn(async move {
        for during_sasl in [false, true] {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("TLS");
            read_until(&mut tls, "<stream:stream").await;
            let mut out = server_header();
            if during_sasl {
                out.push_str(
                    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                     <mechanism>SCRAM-SHA-256</mechanism></mechanisms></stream:features>",
                );
                tls.write_all(out.as_bytes()).await.expect("write");
                read_until(&mut tls, "<auth").await;
                out = format!(
                    "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                    nested()
                );
            } else {
                out.push_str(&nested());
            }
            let _ = tls.write_all(out.as_bytes()).await;
            let _ = tls.flush().await;
            // Hold the connection until the client gives up.
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
    });
    let jid: BareJid = format!("victim@{DOMAIN}").parse().expect("jid");
    let target = Target::Address(address.to_string());
    for _ in 0..2 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(20),
            Connection::open(&jid, "pw", &target),
        )
        .await
        .expect("the client gives up in time");
        assert!(attempt.is_err(), "a login through deep nesting");
    }
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the malicious server finishes")
        .expect("the malicious server");
}
