//! What the `tern` end-to-end tests and benchmarks share: the real
//! `tern-server` and `tern` binaries, a private CA, profiles, a running
//! chat, and dnsmasq for SRV records.

// Each user of this module takes what it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../../server/tests/common/dns.rs"]
mod dns;
#[allow(unused_imports)]
pub use dns::{federation_records, free_port, with_fresh_ports, Dns};

pub const DOMAIN: &str = "tern.test";
pub const PASSWORD: &str = "correct horse";
/// The test server's upload limit.
pub const MAX_FILE: u64 = 6 * 1024 * 1024;

/// The binaries of the workspace, next to this test's.
pub fn binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test executable");
    let dir = deps
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    // `cargo test -p X` alone does not build the other packages' binaries;
    // a benchmark builds the server (once) so as not to measure an old one.
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let release = dir.ends_with("release");
    let stale = !path.exists() || (release && name == "tern-server");
    if stale && !built.iter().any(|b| b == name) {
        let package = match name {
            "tern" => "tern-cli",
            other => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", package, "--bin", name]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// A private CA that issues the test servers' certificates (and that the
/// clients and servers are told to trust).
pub struct Ca {
    /// Its certificate (PEM), for `--ca-file` and `federation.ca_file`.
    pub path: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
}

impl Ca {
    pub fn new() -> Ca {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).expect("write");
        Ca {
            path,
            cert,
            key,
            _dir: dir,
        }
    }

    /// A certificate (and key) for `domain`, its subdomains and `ip` (the
    /// upload service's URLs name the IP: nothing resolves test domains
    /// for HTTP here), written into `dir`.
    pub fn issue(&self, domain: &str, ip: &str, dir: &Path) -> (PathBuf, PathBuf) {
        let params = rcgen::CertificateParams::new(vec![
            domain.to_owned(),
            format!("*.{domain}"),
            ip.to_owned(),
        ])
        .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        let paths = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&paths.0, cert.pem()).expect("write");
        std::fs::write(&paths.1, key.serialize_pem()).expect("write");
        paths
    }
}

/// Where a test server runs, and whether it federates.
pub struct ServerSpec<'a> {
    pub domain: &'a str,
    /// Its loopback address.
    pub address: &'a str,
    /// Its s2s STARTTLS port (for SRV records) and its `[federation]`
    /// section; federation is off without it.
    pub federation: Option<(u16, String)>,
}

impl Default for ServerSpec<'_> {
    fn default() -> Self {
        ServerSpec {
            domain: DOMAIN,
            address: "127.0.0.1",
            federation: None,
        }
    }
}

/// Starts `tern-server` with `config`, its log appended to `dir`'s, and
/// reads its report: the process and its direct-TLS and STARTTLS
/// addresses, or why it exited before reporting (a port was taken).
fn launch(config: &Path, dir: &Path) -> Result<(Child, String, String), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log");
    let mut child = Command::new(binary("tern-server"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start tern-server");
    let stdout = child.stdout.take().expect("stdout");
    let rx = lines_of(stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut direct_tls = None;
    let mut starttls = None;
    // The whole report, up to its last line.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                let last = log.lines().last().unwrap_or_default();
                return Err(format!("tern-server exited ({status}): {last}"));
            }
            Err(timeout) => panic!("no start-up report from tern-server: {timeout}"),
        };
        if let Some(addr) = line.trim().strip_prefix("c2s TLS") {
            direct_tls = Some(addr.trim().to_owned());
        }
        if let Some(addr) = line.trim().strip_prefix("c2s STARTTLS") {
            starttls = Some(addr.trim().to_owned());
        }
        if line.trim().starts_with("federation") {
            break;
        }
    }
    let direct_tls = direct_tls.expect("the report names the direct-TLS port");
    let starttls = starttls.expect("the report names the STARTTLS port");
    Ok((child, direct_tls, starttls))
}

/// A running tern-server, stopped on drop.
pub struct Server {
    child: std::sync::Mutex<Child>,
    pub domain: String,
    /// The CA its certificate comes from, for `--ca-file`.
    pub ca: PathBuf,
    pub direct_tls: String,
    pub starttls: String,
    _own_ca: Option<Ca>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server of [`DOMAIN`] on 127.0.0.1, with a CA of its own and no
    /// federation.
    pub fn start() -> Server {
        let ca = Ca::new();
        let mut server = Server::start_with(&ca, ServerSpec::default());
        server._own_ca = Some(ca);
        server
    }

    /// A server as `spec` says, with a certificate from `ca`.
    pub fn start_with(ca: &Ca, spec: ServerSpec) -> Server {
        with_fresh_ports("tern-server", || Server::try_start_with(ca, &spec))
    }

    /// As [`Server::start_with`], once: an error when the server exits
    /// before its report.
    fn try_start_with(ca: &Ca, spec: &ServerSpec) -> Result<Server, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = ca.issue(spec.domain, spec.address, dir.path());
        let config = dir.path().join("tern.toml");
        let address = spec.address;
        let (s2s, federation) = match &spec.federation {
            Some((port, section)) => (port.to_string(), format!("[federation]\n{section}\n")),
            None => ("0".to_owned(), "[federation]\nenabled = false\n".to_owned()),
        };
        std::fs::write(
            &config,
            format!(
                "domain = \"{domain}\"\ndata_dir = \"{data}\"\nregistration = \"open\"\n[listen]\n\
                 c2s = \"{address}:{c2s}\"\nc2s_tls = \"{address}:{c2s_tls}\"\nupload = \"{address}:0\"\n\
                 s2s = \"{address}:{s2s}\"\ns2s_tls = \"{address}:0\"\n\
                 [upload]\nurl_host = \"{address}\"\nmax_file_bytes = {MAX_FILE}\n\
                 [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n{federation}",
                domain = spec.domain,
                // Fixed, so that a restarted server is where it was.
                c2s = free_port(),
                c2s_tls = free_port(),
                data = dir.path().join("data").display(),
                cert = cert.display(),
                key = key.display()
            ),
        )
        .expect("config");
        let (child, direct_tls, starttls) = launch(&config, dir.path())?;
        Ok(Server {
            child: std::sync::Mutex::new(child),
            domain: spec.domain.to_owned(),
            ca: ca.path.clone(),
            direct_tls,
            starttls,
            _own_ca: None,
            _dir: dir,
        })
    }

    /// Kills the server and starts it again on the same data and ports.
    pub fn restart(&self) {
        let mut running = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = running.kill();
        let _ = running.wait();
        let config = self._dir.path().join("tern.toml");
        let (child, direct_tls, starttls) =
            launch(&config, self._dir.path()).unwrap_or_else(|why| panic!("restart: {why}"));
        assert_eq!(direct_tls, self.direct_tls, "restarted on another port");
        assert_eq!(starttls, self.starttls, "restarted on another port");
        *running = child;
    }

    /// A user's JID on this server.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// Every file the server wrote.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![self._dir.path().join("data")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.push(self._dir.path().join("server.log"));
        files
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default();
            eprintln!("----- server log -----\n{log}----- end of server log -----");
        }
    }
}

/// Two federating servers and their DNS; `None` without dnsmasq (allowed
/// outside CI).
pub fn two_domains(ca: &Ca) -> Option<(Server, Server, Dns)> {
    with_fresh_ports("two federating servers and their DNS", || {
        try_two_domains(ca)
    })
}

/// As [`two_domains`], once: an error when a server or dnsmasq could not
/// take its port.
fn try_two_domains(ca: &Ca) -> Result<Option<(Server, Server, Dns)>, String> {
    let dns_port = free_port();
    let federation = |s2s: u16| {
        Some((
            s2s,
            format!(
                "nameserver = \"127.0.0.1:{dns_port}\"\nca_file = \"{}\"\nretry_max_secs = 1",
                ca.path.display()
            ),
        ))
    };
    let (a_port, b_port) = (free_port(), free_port());
    let a = Server::try_start_with(
        ca,
        &ServerSpec {
            domain: "a.test",
            address: "127.9.0.2",
            federation: federation(a_port),
        },
    )?;
    let b = Server::try_start_with(
        ca,
        &ServerSpec {
            domain: "b.test",
            address: "127.9.0.3",
            federation: federation(b_port),
        },
    )?;
    let s2s = |address: &str, port: u16| format!("{address}:{port}").parse().expect("address");
    let records = federation_records([
        ("a.test", s2s("127.9.0.2", a_port)),
        ("b.test", s2s("127.9.0.3", b_port)),
    ]);
    let dns = Dns::try_start_at(dns_port, &records)?;
    Ok(dns.map(|dns| (a, b, dns)))
}

/// One user's `tern` profile.
pub struct Tern<'a> {
    pub server: &'a Server,
    pub profile: tempfile::TempDir,
}

impl<'a> Tern<'a> {
    /// Registers `user` and sets a profile up for them.
    pub fn new(server: &'a Server, user: &str) -> Tern<'a> {
        let tern = Tern::profile(server);
        tern.ok(&["account", "register", &server.jid(user)]);
        tern
    }

    /// Another device of an existing `user`.
    pub fn second_device(server: &'a Server, user: &str) -> Tern<'a> {
        let tern = Tern::profile(server);
        tern.ok(&["account", "login", &server.jid(user)]);
        tern
    }

    pub fn profile(server: &'a Server) -> Tern<'a> {
        Tern {
            server,
            profile: tempfile::tempdir().expect("profile"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.command_without_address(args);
        command.args(["--server", &self.server.direct_tls]);
        command
    }

    /// A command that finds the server through DNS.
    pub fn command_without_address(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("tern"));
        command
            .arg("--profile")
            .arg(self.profile.path())
            .arg("--ca-file")
            .arg(&self.server.ca)
            .args(args)
            .env("TERN_PASSWORD", PASSWORD);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tern")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tern {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    /// The bodies of the messages `tern recv --json` prints.
    pub fn received(&self) -> Vec<String> {
        bodies(&self.json(&["recv", "--json", "--wait", "2"]))
    }

    /// Starts `tern chat PEER --json`, ready for input.
    pub fn chat(&self, peer: &str) -> Chat {
        let mut child = self
            .command(&["--json", "chat", peer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern chat");
        let stdout = child.stdout.take().expect("stdout");
        let lines = lines_of(stdout);
        let stdin = child.stdin.take();
        let mut chat = Chat {
            child,
            stdin,
            lines,
            history: Vec::new(),
        };
        let mut shown = Vec::new();
        chat.expect(|line| {
            shown.push(line.clone());
            line["type"] == "ready"
        });
        chat.history = shown;
        chat
    }

    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

pub fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// The lines a child process prints, read on a thread of their own.
pub fn lines_of(stdout: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The string `field` of the first line of `kind` among JSON lines.
pub fn field_of(lines: &[Value], kind: &str, field: &str) -> String {
    lines
        .iter()
        .find(|line| line["type"] == kind)
        .and_then(|line| line[field].as_str())
        .unwrap_or_else(|| panic!("no {kind} line with {field} in {lines:?}"))
        .to_owned()
}

/// The bodies of the messages among JSON lines.
pub fn bodies(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["type"] == "message")
        .filter_map(|line| line["body"].as_str().map(str::to_owned))
        .collect()
}

/// A running `tern chat --json`, stopped on drop.
pub struct Chat {
    pub child: Child,
    pub stdin: Option<std::process::ChildStdin>,
    pub lines: Receiver<String>,
    /// What it printed before it was ready (the conversation's history).
    pub history: Vec<Value>,
}

impl Chat {
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to tern chat");
        stdin.flush().expect("flush");
    }

    /// The first line (within 20 s) that `wanted` accepts.
    pub fn expect(&mut self, mut wanted: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("tern chat printed the line in time");
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            if wanted(&value) {
                return value;
            }
        }
    }

    /// Ends the chat with /quit and waits for it to exit.
    pub fn quit(mut self) {
        self.say("/quit");
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "tern chat failed");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tern chat did not quit");
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
