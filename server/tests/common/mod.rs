//! Test harness: starts the real `tern-server` binary in a temporary
//! directory with a certificate from a test CA, and talks to it with
//! test clients reading through the server's own stanza reader
//! (scenarios) or a raw byte-level client (bad input).
//!
//! Every server a test starts is killed when its `TestServer` drops; every
//! wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use tern_federation::xml_reader::{Read, StanzaReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_xmpp::{IqRequest, IqResponse};

pub mod bed;
pub mod dns;
pub mod mls;
pub mod peers;

/// How long any single expectation waits.
pub const WAIT: Duration = Duration::from_secs(10);

/// The domain test servers serve.
pub const DOMAIN: &str = "tern.test";

/// A certificate authority made once per test process; its certificate is
/// what tokio-xmpp clients trust (through `SSL_CERT_FILE`).
pub struct TestCa {
    dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// Parameters of a certificate for `names`, valid from 2025 to 2049 (not
/// rcgen's default of year 4096, which Erlang's date functions, hence
/// ejabberd, cannot handle).
pub fn certificate_params(names: Vec<String>) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params
}

/// Parameters of a CA certificate (validity as [`certificate_params`]).
pub fn ca_params() -> rcgen::CertificateParams {
    let mut params = certificate_params(Vec::new());
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

impl TestCa {
    /// The process-wide CA.
    pub fn get() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut params = ca_params();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Tern test CA");
            let ca_key = rcgen::KeyPair::generate().expect("key");
            let ca_cert = params.self_signed(&ca_key).expect("CA cert");
            let ca_path = dir.path().join("ca.pem");
            std::fs::write(&ca_path, ca_cert.pem()).expect("write CA");
            // Read by rustls-native-certs in tokio-xmpp's TLS connector.
            std::env::set_var("SSL_CERT_FILE", &ca_path);
            TestCa {
                dir,
                ca_cert,
                ca_key,
            }
        })
    }

    /// The CA certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `domain` (and `*.domain`) into `dir`;
    /// returns (cert, key) paths.
    pub fn issue(&self, domain: &str, dir: &Path) -> (PathBuf, PathBuf) {
        self.issue_for(domain, "127.0.0.1", dir)
    }

    /// Issues a certificate for `domain`, `*.domain` and the IP address
    /// `ip` (the upload service's URLs name it in tests).
    pub fn issue_for(&self, domain: &str, ip: &str, dir: &Path) -> (PathBuf, PathBuf) {
        let params = certificate_params(vec![
            domain.to_owned(),
            format!("*.{domain}"),
            ip.to_owned(),
        ]);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// A rustls client configuration trusting this CA and presenting a
    /// certificate for `domain` (a server's, on an s2s stream).
    pub fn client_config_as(&self, domain: &str) -> Arc<rustls::ClientConfig> {
        let params = certificate_params(vec![domain.to_owned()]);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone()).expect("add CA");
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der().clone()], key)
        .expect("client certificate");
        Arc::new(config)
    }

    /// A rustls client configuration trusting this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone()).expect("add CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }
}

/// Options of a test server.
#[derive(Clone)]
pub struct ServerOptions {
    /// Extra TOML appended to the generated config (top-level keys).
    pub top: String,
    /// Extra `[limits]` keys.
    pub limits: String,
    /// `registration` value.
    pub registration: &'static str,
    /// Extra TOML after `[limits]` (whole sections, e.g. `[keys]`).
    pub sections: String,
    /// The domain served.
    pub domain: String,
    /// The loopback address every listener binds (on free ports).
    pub address: String,
    /// Fixed s2s ports (STARTTLS, direct TLS), kept across restarts.
    pub s2s_ports: Option<(u16, u16)>,
    /// The name on the server's certificate when it is not the domain
    /// (an impostor's).
    pub certificate_for: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            top: String::new(),
            limits: String::new(),
            registration: "open",
            sections: String::new(),
            domain: DOMAIN.to_owned(),
            address: "127.0.0.1".to_owned(),
            s2s_ports: None,
            certificate_for: None,
        }
    }
}

/// A running `tern-server` process.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    /// The s2s STARTTLS listener.
    pub s2s: SocketAddr,
    /// The s2s direct TLS listener.
    pub s2s_tls: SocketAddr,
    /// The HTTPS listener (uploads, XMPP over WebSocket), on the
    /// server's address.
    pub https: SocketAddr,
    pub domain: String,
    pub report: Vec<String>,
    child: Child,
}

impl TestServer {
    /// Starts a server with default options.
    pub fn start() -> TestServer {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with the given options.
    pub fn start_with(options: ServerOptions) -> TestServer {
        let ca = TestCa::get();
        let dir = tempfile::tempdir().expect("temp dir");
        let name = options
            .certificate_for
            .as_deref()
            .unwrap_or(&options.domain);
        let (cert, key) = ca.issue_for(name, &options.address, dir.path());
        let data = dir.path().join("data");
        let ip = &options.address;
        let (s2s, s2s_tls) = options.s2s_ports.unwrap_or((0, 0));
        let config = format!(
            "domain = \"{}\"\ndata_dir = \"{}\"\nregistration = \"{}\"\n{}\n\
             [listen]\nc2s = \"{ip}:0\"\nc2s_tls = \"{ip}:0\"\nupload = \"{ip}:0\"\ns2s = \"{ip}:{s2s}\"\ns2s_tls = \"{ip}:{s2s_tls}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n[limits]\n{}\n{}\n",
            options.domain,
            data.display(),
            options.registration,
            options.top,
            cert.display(),
            key.display(),
            options.limits,
            options.sections,
        );
        let config_path = dir.path().join("tern.toml");
        std::fs::write(&config_path, config).expect("write config");
        let (child, report) = spawn_server(&config_path, dir.path());
        let (c2s, c2s_tls, s2s) = addresses(&report);
        let s2s_tls = report_address(&report, "s2s TLS");
        let https = https_address(&report, c2s);
        TestServer {
            dir,
            config_path,
            c2s,
            c2s_tls,
            s2s,
            s2s_tls,
            https,
            domain: options.domain,
            report,
            child,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL and starts it again on the same data.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        self.restart();
    }

    /// Starts the server again (after [`TestServer::terminate`] or a
    /// kill) on the same data and configuration.
    pub fn restart(&mut self) {
        let (child, report) = spawn_server(&self.config_path, self.dir.path());
        let (c2s, c2s_tls, s2s) = addresses(&report);
        self.child = child;
        self.report = report;
        self.c2s = c2s;
        self.c2s_tls = c2s_tls;
        self.s2s = s2s;
        self.s2s_tls = report_address(&self.report, "s2s TLS");
        self.https = https_address(&self.report, c2s);
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether
    /// it exited successfully.
    pub fn terminate(&mut self) -> bool {
        signal(self.child.id(), "TERM");
        wait_child(&mut self.child, Duration::from_secs(20))
    }

    /// The full JID string of a user.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// Creates an account with the admin command.
    pub fn add_user(&self, user: &str, password: &str) {
        let status = Command::new(env!("CARGO_BIN_EXE_tern-server"))
            .args(["--config"])
            .arg(&self.config_path)
            .args(["user", "add", &self.jid(user)])
            .env("TERN_PASSWORD", password)
            .stdout(Stdio::null())
            .status()
            .expect("run tern-server user add");
        assert!(status.success(), "user add {user} failed");
    }

    /// What `tern-server federation status` prints for this server.
    pub fn federation_status(&self) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_tern-server"))
            .arg("--config")
            .arg(&self.config_path)
            .args(["federation", "status"])
            .output()
            .expect("run tern-server federation status");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: its server's log is the first thing to read.
            eprintln!(
                "----- server log -----\n{}----- end of server log -----",
                self.log()
            );
        }
    }
}

/// Whether the process `pid` still runs (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`) to a process.
pub fn signal(pid: u32, name: &str) {
    use nix::sys::signal::{kill, Signal};
    let signal = match name {
        "TERM" => Signal::SIGTERM,
        "INT" => Signal::SIGINT,
        "KILL" => Signal::SIGKILL,
        other => panic!("unknown signal {other}"),
    };
    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Waits for a child to exit, killing it after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the binary and reads its start-up report (bounded).
fn spawn_server(config: &Path, dir: &Path) -> (Child, Vec<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern-server"))
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn tern-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut report = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !report.iter().any(|l: &String| l.contains("federation")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => report.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tern-server did not report ready; stdout: {report:?}; log: {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
        }
    }
    (child, report)
}

fn addresses(report: &[String]) -> (SocketAddr, SocketAddr, SocketAddr) {
    let find = |label: &str| report_address(report, label);
    (find("c2s STARTTLS"), find("c2s TLS"), find("s2s STARTTLS"))
}

/// The address on the start-up report's line `label`.
fn report_address(report: &[String], label: &str) -> SocketAddr {
    report
        .iter()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in report {report:?}"))
        .trim()
        .parse()
        .expect("address")
}

/// The HTTPS listener: the port of the report's WebSocket URL, on the
/// c2s listener's address.
fn https_address(report: &[String], c2s: SocketAddr) -> SocketAddr {
    let url = report
        .iter()
        .find_map(|l| l.trim().strip_prefix("websocket"))
        .unwrap_or_else(|| panic!("no websocket in report {report:?}"))
        .trim();
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"));
    SocketAddr::new(c2s.ip(), port)
}

impl TestServer {
    /// The XMPP over WebSocket URL, by address.
    pub fn websocket_url(&self) -> String {
        format!("wss://{}/xmpp-websocket", self.https)
    }
}

/// How a client connects.
#[derive(Clone, Copy, Debug)]
pub enum Tls {
    StartTls,
    Direct,
}

/// A client logged into a test server: TLS, SASL PLAIN and resource
/// binding, then stanzas read with the server's own stanza reader. Reads
/// happen only in the caller's task, one at a time (tokio-xmpp's `Client`
/// could lose the wake-up of its receiver while a send held the stream).
pub struct TestClient {
    io: Box<dyn RawIo>,
    reader: StanzaReader,
    /// Bytes read but not yet taken by the reader.
    unread: Vec<u8>,
    pub jid: String,
    /// Stanzas that arrived while an IQ response was awaited.
    pending: std::collections::VecDeque<Element>,
    next_id: u64,
}

/// TLS to `domain` over `tcp`, trusting the test CA.
pub async fn tls_to(tcp: TcpStream, domain: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(TestCa::get().client_config());
    let name = rustls::pki_types::ServerName::try_from(domain.to_owned()).expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

impl TestClient {
    /// Logs in (STARTTLS) and waits until bound.
    pub async fn login(server: &TestServer, user: &str, password: &str) -> TestClient {
        Self::login_with(server, &server.jid(user), password, Tls::StartTls).await
    }

    /// Logs in with a given JID (may carry a resource) and transport.
    pub async fn login_with(
        server: &TestServer,
        jid: &str,
        password: &str,
        tls: Tls,
    ) -> TestClient {
        let parsed = jid::Jid::new(jid).expect("jid");
        let domain = parsed.domain().as_str().to_owned();
        let user = parsed
            .node()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let resource = parsed.resource().map(|r| r.as_str().to_owned());
        tokio::time::timeout(WAIT, async {
            let io: Box<dyn RawIo> = match tls {
                Tls::StartTls => {
                    let mut tcp = TcpStream::connect(server.c2s).await.expect("connect");
                    starttls_prelude(&mut tcp, &domain).await;
                    Box::new(tls_to(tcp, &domain).await)
                }
                Tls::Direct => {
                    let tcp = TcpStream::connect(server.c2s_tls).await.expect("connect");
                    Box::new(tls_to(tcp, &domain).await)
                }
            };
            let mut client = Self::over(io);
            client.open(&domain).await;
            let credentials = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{user}\0{password}"));
            client
                .write(&format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"
                ))
                .await;
            let outcome = client.read_element().await;
            assert_eq!(outcome.name(), "success", "login of {jid}: {}", String::from(&outcome));
            client.reader.restart();
            client.open(&domain).await;
            let resource = resource
                .map(|r| format!("<resource>{r}</resource>"))
                .unwrap_or_default();
            client
                .write(&format!(
                    "<iq xmlns='jabber:client' type='set' id='bind'>\
                     <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{resource}</bind></iq>"
                ))
                .await;
            let bound = client.read_element().await;
            client.jid = bound
                .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .and_then(|b| b.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
                .map(Element::text)
                .unwrap_or_else(|| panic!("binding {jid}: {}", String::from(&bound)));
            client
        })
        .await
        .unwrap_or_else(|_| panic!("login of {jid} timed out"))
    }

    fn over(io: Box<dyn RawIo>) -> TestClient {
        TestClient {
            io,
            reader: StanzaReader::new_stream(),
            unread: Vec::new(),
            jid: String::new(),
            pending: Default::default(),
            next_id: 0,
        }
    }

    /// Sends a stream header and reads the server's, then its features.
    async fn open(&mut self, domain: &str) {
        self.write(&stream_header(domain)).await;
        match self.read_item().await {
            Read::Header(_) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.read_element().await;
        assert_eq!(features.name(), "features", "{}", String::from(&features));
    }

    async fn write(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// The next item of the stream (unbounded: callers bound it).
    async fn read_item(&mut self) -> Read {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let (taken, read) = self.reader.read(&self.unread);
            self.unread.drain(..taken);
            match read.expect("the server's XML is well-formed") {
                Read::NeedMore if self.unread.is_empty() => {
                    let n = self.io.read(&mut buf).await.unwrap_or(0);
                    assert!(n > 0, "{}: the server closed the connection", self.jid);
                    self.unread.extend_from_slice(&buf[..n]);
                }
                Read::NeedMore => {}
                Read::Footer => panic!("{}: the server ended the stream", self.jid),
                item => return item,
            }
        }
    }

    /// The next stream-level element; a ping from the server is answered
    /// on the way.
    async fn read_element(&mut self) -> Element {
        loop {
            match self.read_item().await {
                Read::Element(element) if is_server_ping(&element) => {
                    let id = element.attr("id").unwrap_or_default().to_owned();
                    let from = element.attr("from").unwrap_or_default().to_owned();
                    self.write(&format!(
                        "<iq xmlns='jabber:client' type='result' id='{id}' to='{from}'/>"
                    ))
                    .await;
                }
                Read::Element(element) => return element,
                other => panic!("{}: unexpected {other:?}", self.jid),
            }
        }
    }

    /// Sends a stanza given as XML text (in `jabber:client`).
    pub async fn send_xml(&mut self, xml: &str) {
        let element: Element = xml.parse().expect("test XML parses");
        assert!(
            ["message", "presence", "iq"].contains(&element.name()),
            "a stanza: {xml}"
        );
        self.write(xml).await;
    }

    /// Sends an IQ and waits for its response.
    pub async fn iq(&mut self, to: Option<&str>, request: IqRequest) -> IqResponse {
        self.next_id += 1;
        let id = format!("test-iq-{}", self.next_id);
        let (kind, payload) = match request {
            IqRequest::Get(payload) => ("get", payload),
            IqRequest::Set(payload) => ("set", payload),
        };
        let to = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
        self.write(&format!(
            "<iq xmlns='jabber:client' type='{kind}' id='{id}'{to}>{}</iq>",
            String::from(&payload)
        ))
        .await;
        let response = tokio::time::timeout(WAIT, async {
            loop {
                let element = self.read_element().await;
                let answers = element.name() == "iq"
                    && element.attr("id") == Some(id.as_str())
                    && matches!(element.attr("type"), Some("result" | "error"));
                if answers {
                    return element;
                }
                self.pending.push_back(element);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: IQ {id} timed out", self.jid));
        if response.attr("type") == Some("result") {
            return IqResponse::Result(response.children().next().cloned());
        }
        let error = response
            .get_child("error", "jabber:client")
            .cloned()
            .expect("an IQ error has <error/>");
        IqResponse::Error(error.try_into().expect("a stanza error"))
    }

    /// Waits for a stanza matching `matches`, skipping others.
    pub async fn expect(&mut self, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
        if let Some(index) = self.pending.iter().position(&matches) {
            return self.pending.remove(index).expect("index is valid");
        }
        self.pending.clear();
        tokio::time::timeout(WAIT, async {
            loop {
                let element = self.read_element().await;
                if matches(&element) {
                    return element;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", self.jid))
    }

    /// Asserts that no stanza matching `matches` arrives within `within`.
    pub async fn expect_none(
        &mut self,
        what: &str,
        within: Duration,
        matches: impl Fn(&Element) -> bool,
    ) {
        for element in std::mem::take(&mut self.pending) {
            assert!(
                !matches(&element),
                "{}: unexpected {what}: {}",
                self.jid,
                String::from(&element)
            );
        }
        let _ = tokio::time::timeout(within, async {
            loop {
                let element = self.read_element().await;
                assert!(
                    !matches(&element),
                    "{}: unexpected {what}: {}",
                    self.jid,
                    String::from(&element)
                );
            }
        })
        .await;
    }

    /// Makes sure everything sent so far was processed by the server
    /// (stanzas of one session are handled in order).
    pub async fn sync(&mut self) {
        let ping = Element::bare("ping", "urn:xmpp:ping");
        match self.iq(None, IqRequest::Get(ping)).await {
            IqResponse::Result(_) => {}
            IqResponse::Error(e) => panic!("ping failed: {e:?}"),
        }
    }

    /// Sends initial presence.
    pub async fn available(&mut self) {
        self.send_xml("<presence xmlns='jabber:client'/>").await;
    }

    /// Disconnects cleanly: the stream's end, then (bounded) the server's.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, async {
            self.write("</stream:stream>").await;
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.io.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// A stream to `domain` up to the server's `<proceed/>` for STARTTLS.
async fn starttls_prelude(tcp: &mut TcpStream, domain: &str) {
    tcp.write_all(stream_header(domain).as_bytes())
        .await
        .expect("write");
    read_text_until(tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .expect("write");
    read_text_until(tcp, "<proceed").await;
}

/// Reads from `tcp` until the text read holds `needle` (the caller bounds
/// the time).
async fn read_text_until(tcp: &mut TcpStream, needle: &str) {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "the server closed before {needle}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Whether `element` is a ping (XEP-0199) the server sends to see that a
/// client is there.
fn is_server_ping(element: &Element) -> bool {
    element.name() == "iq"
        && element.attr("type") == Some("get")
        && element.has_child("ping", "urn:xmpp:ping")
        && !element.attr("from").unwrap_or_default().contains('@')
}

/// Whether an element is a `<message/>` with a child of namespace `ns`.
pub fn message_with(ns: &'static str) -> impl Fn(&Element) -> bool {
    move |e| e.name() == "message" && e.children().any(|c| c.ns() == ns)
}

/// An OMEMO-style encrypted message (the server only needs the payload's
/// namespace to accept it).
pub fn omemo_message(to: &str, id: &str, payload: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='{to}' id='{id}' type='chat'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>AAAA</key>\
         <iv>AAAAAAAAAAAAAAAA</iv></header><payload>{payload}</payload></encrypted>\
         <body>I sent you an OMEMO encrypted message.</body></message>"
    )
}

/// A raw byte-level client for bad-input tests.
pub struct RawClient {
    io: Box<dyn RawIo>,
    pub received: String,
}

/// Raw I/O object.
pub trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawIo for T {}

/// The opening of a c2s stream to `domain`.
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

impl RawClient {
    /// A raw client over an established connection.
    pub fn over(io: impl RawIo + 'static) -> RawClient {
        RawClient {
            io: Box::new(io),
            received: String::new(),
        }
    }

    /// Connects to the STARTTLS port without doing anything yet.
    pub async fn connect(server: &TestServer) -> RawClient {
        let tcp = TcpStream::connect(server.c2s).await.expect("connect");
        RawClient::over(tcp)
    }

    /// After `<proceed/>`: the TLS handshake with `server_name`, then
    /// nothing received yet.
    pub async fn upgrade(&mut self, config: Arc<rustls::ClientConfig>, server_name: &str) {
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let tls = connector.connect(name, io).await.expect("TLS handshake");
        self.io = Box::new(tls);
        self.received.clear();
    }

    /// Connects and upgrades with STARTTLS, up to the SASL features.
    pub async fn connect_tls(server: &TestServer) -> RawClient {
        let tcp = TcpStream::connect(server.c2s).await.expect("connect");
        Self::connect_tls_over(tcp).await
    }

    /// As [`RawClient::connect_tls`], over a connection made already
    /// (with socket options of the test's, say).
    pub async fn connect_tls_over(tcp: TcpStream) -> RawClient {
        let mut raw = RawClient::over(tcp);
        raw.send(&stream_header(DOMAIN)).await;
        raw.read_until("</stream:features>").await;
        raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        raw.read_until("<proceed").await;
        raw.upgrade(TestCa::get().client_config(), DOMAIN).await;
        raw.send(&stream_header(DOMAIN)).await;
        raw.read_until("</stream:features>").await;
        raw
    }

    /// Logs in with SASL PLAIN and binds a resource.
    pub async fn login(server: &TestServer, user: &str, password: &str) -> RawClient {
        Self::login_as(server, user, password, None).await
    }

    /// Logs in with SASL PLAIN and binds the given resource.
    pub async fn login_as(
        server: &TestServer,
        user: &str,
        password: &str,
        resource: Option<&str>,
    ) -> RawClient {
        let tcp = TcpStream::connect(server.c2s).await.expect("connect");
        Self::login_over(tcp, user, password, resource).await
    }

    /// Authenticates with SASL PLAIN and restarts the stream, without
    /// binding a resource (to resume a session, say).
    pub async fn login_as_unbound(server: &TestServer, user: &str, password: &str) -> RawClient {
        let tcp = TcpStream::connect(server.c2s).await.expect("connect");
        let mut raw = Self::authenticated_over(tcp, user, password).await;
        raw.received.clear();
        raw
    }

    /// STARTTLS, SASL PLAIN and the restarted stream's features, over a
    /// connection made already.
    async fn authenticated_over(tcp: TcpStream, user: &str, password: &str) -> RawClient {
        let mut raw = Self::connect_tls_over(tcp).await;
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        raw.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        raw.read_until("<success").await;
        raw.received.clear();
        raw.send(&stream_header(DOMAIN)).await;
        raw.read_until("</stream:features>").await;
        raw
    }

    /// Logs in over a connection made already.
    pub async fn login_over(
        tcp: TcpStream,
        user: &str,
        password: &str,
        resource: Option<&str>,
    ) -> RawClient {
        let mut raw = Self::authenticated_over(tcp, user, password).await;
        let resource = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        raw.send(&format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{resource}</bind></iq>"))
            .await;
        raw.read_until("</iq>").await;
        raw.received.clear();
        raw
    }

    /// The connection and what was received but not consumed, to read
    /// and write from separate tasks.
    pub fn into_parts(self) -> (Box<dyn RawIo>, String) {
        (self.io, self.received)
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, data: &str) {
        self.io.write_all(data.as_bytes()).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// Writes raw bytes, tolerating a closed connection.
    pub async fn try_send(&mut self, data: &[u8]) -> bool {
        self.io.write_all(data).await.is_ok() && self.io.flush().await.is_ok()
    }

    /// Reads until the received text contains `needle`; returns all text.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let result = tokio::time::timeout(WAIT, async {
            let mut buf = [0u8; 8192];
            while !self.received.contains(needle) {
                let n = self.io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            true
        })
        .await;
        assert!(
            matches!(result, Ok(true)),
            "did not receive {needle:?}; got: {:?}",
            self.received
        );
        self.received.clone()
    }

    /// Reads until the connection closes (bounded); returns all text.
    pub async fn read_to_close(&mut self, limit: Duration) -> Option<String> {
        let closed = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 8192];
            loop {
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.received.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        })
        .await;
        closed.ok().map(|_| self.received.clone())
    }
}

/// An s2s stream to `server` claiming to come from `from`, upgraded with
/// STARTTLS and a test-CA client certificate for `certificate_for`; the
/// stream and the features offered after TLS.
pub async fn s2s_stream(
    server: &TestServer,
    from: &str,
    certificate_for: &str,
) -> (RawClient, String) {
    let tcp = tokio::net::TcpStream::connect(server.s2s)
        .await
        .expect("connect");
    let mut raw = RawClient::over(tcp);
    raw.send(&s2s_header(from, &server.domain)).await;
    raw.read_until("</stream:features>").await;
    raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    raw.read_until("<proceed").await;
    raw.upgrade(
        TestCa::get().client_config_as(certificate_for),
        &server.domain,
    )
    .await;
    raw.send(&s2s_header(from, &server.domain)).await;
    let features = raw.read_until("</stream:features>").await;
    raw.received.clear();
    (raw, features)
}

pub fn s2s_header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream from='{from}' to='{to}' version='1.0' \
         xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
         xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// An s2s stream from `from` to `server`, authenticated with SASL
/// EXTERNAL and a test-CA certificate for `from`, up to the features of
/// the authenticated stream.
pub async fn s2s_stream_as(from: &str, server: &TestServer) -> RawClient {
    let (mut raw, features) = s2s_stream(server, from, from).await;
    assert!(features.contains("EXTERNAL"), "{features}");
    let authzid = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, from);
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
    ))
    .await;
    raw.read_until("<success").await;
    raw.received.clear();
    raw.send(&s2s_header(from, &server.domain)).await;
    raw.read_until("</stream:features>").await;
    raw.received.clear();
    raw
}

/// The regular files under `dir` (recursively) that contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file()
                && std::fs::read(&path)
                    .expect("read")
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}
