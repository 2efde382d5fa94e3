//! `tern` end to end: the real `tern` and `tern-server` binaries on
//! loopback, a private CA given with `--ca-file`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DOMAIN: &str = "tern.test";
const PASSWORD: &str = "correct horse";

/// The binaries of the workspace, next to this test's.
fn binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test executable");
    let dir = deps
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    if !path.exists() {
        // `cargo test -p tern-cli` alone does not build the server.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "tern-server", "--bin", "tern-server"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building tern-server failed");
    }
    path
}

/// A CA and a certificate for the domain and its subdomains.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = params.self_signed(&ca_key).expect("CA");
    let params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned(), format!("*.{DOMAIN}")])
        .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// A running tern-server, stopped on drop.
struct Server {
    child: Child,
    config: PathBuf,
    ca: PathBuf,
    direct_tls: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, cert, key) = certificates(dir.path());
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\n[listen]\nc2s = \"127.0.0.1:0\"\n\
                 c2s_tls = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                dir.path().join("data").display(),
                cert.display(),
                key.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let mut child = Command::new(binary("tern-server"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tern-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut direct_tls = None;
        // The whole report, up to its last line.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("start-up report");
            if let Some(addr) = line.trim().strip_prefix("c2s TLS") {
                direct_tls = Some(addr.trim().to_owned());
            }
            if line.trim().starts_with("plaintext") {
                break;
            }
        }
        let direct_tls = direct_tls.expect("the report names the direct-TLS port");
        Server {
            child,
            config,
            ca,
            direct_tls,
            _dir: dir,
        }
    }

    fn add_user(&self, user: &str) {
        let status = Command::new(binary("tern-server"))
            .arg("--config")
            .arg(&self.config)
            .args(["user", "add", &format!("{user}@{DOMAIN}")])
            .env("TERN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .status()
            .expect("user add");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default();
            eprintln!("----- server log -----\n{log}----- end of server log -----");
        }
    }
}

/// One user's `tern` profile.
struct Tern<'a> {
    server: &'a Server,
    profile: tempfile::TempDir,
}

impl<'a> Tern<'a> {
    fn new(server: &'a Server, user: &str) -> Tern<'a> {
        server.add_user(user);
        let tern = Tern {
            server,
            profile: tempfile::tempdir().expect("profile"),
        };
        tern.ok(&["account", "login", &format!("{user}@{DOMAIN}")]);
        tern
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("tern"))
            .arg("--profile")
            .arg(self.profile.path())
            .args(["--server", &self.server.direct_tls])
            .arg("--ca-file")
            .arg(&self.server.ca)
            .args(args)
            .env("TERN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run tern")
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tern {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    /// The bodies of the messages `tern recv --json` prints.
    fn received(&self) -> Vec<String> {
        self.json(&["recv", "--json", "--wait", "2"])
            .into_iter()
            .filter(|line| line["type"] == "message")
            .map(|line| line["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

#[test]
fn two_users_talk_from_the_command_line() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");

    let sent = alice.json(&["--json", "send", &format!("bob@{DOMAIN}"), "hello bob"]);
    assert_eq!(sent[0]["type"], "sent");
    assert_eq!(bob.received(), ["hello bob"]);
    bob.ok(&["send", &format!("alice@{DOMAIN}"), "hello alice"]);
    assert_eq!(alice.received(), ["hello alice"]);

    let history: Vec<String> = alice
        .json(&["--json", "history", &format!("bob@{DOMAIN}")])
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(history, ["hello bob", "hello alice"]);

    let devices = bob.json(&["--json", "account", "devices"]);
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["this_device"], true);
}

#[test]
fn errors_say_what_to_do() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let output = alice.run(&["send", &format!("nobody@{DOMAIN}"), "hello?"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nobody@tern.test"), "{stderr}");

    let empty = tempfile::tempdir().expect("dir");
    let output = Command::new(binary("tern"))
        .arg("--profile")
        .arg(empty.path())
        .args(["recv"])
        .stdin(Stdio::null())
        .output()
        .expect("run tern");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tern account login"), "{stderr}");
}

#[test]
fn a_group_talks_and_a_removed_member_reads_nothing_more() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    let carol = Tern::new(&server, "carol");

    let created = alice.json(&[
        "--json",
        "group",
        "create",
        "friends",
        "--member",
        &format!("bob@{DOMAIN}"),
        "--member",
        &format!("carol@{DOMAIN}"),
    ]);
    let group = created[0]["address"].as_str().expect("address").to_owned();
    assert!(group.ends_with(&format!("@groups.{DOMAIN}")), "{group}");
    let listed = alice.json(&["--json", "group", "list"]);
    assert_eq!(listed[0]["name"], "friends");
    assert_eq!(listed[0]["members"].as_array().map(Vec::len), Some(3));

    alice.ok(&["send", &group, "hello everyone"]);
    assert_eq!(bob.received(), ["hello everyone"]);
    assert_eq!(carol.received(), ["hello everyone"]);

    alice.ok(&["group", "remove", &group, &format!("carol@{DOMAIN}")]);
    alice.ok(&["send", &group, "carol is gone"]);
    assert_eq!(bob.received(), ["carol is gone"]);
    let carol_sees = carol.json(&["recv", "--json", "--wait", "2"]);
    assert!(
        carol_sees.iter().any(|e| e["type"] == "removed"),
        "carol is told: {carol_sees:?}"
    );
    assert!(
        !carol_sees.iter().any(|e| e["body"] == "carol is gone"),
        "carol read a message sent after her removal"
    );
}
