//! `tern` end to end: the real `tern` and `tern-server` binaries on
//! loopback, a private CA given with `--ca-file`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DOMAIN: &str = "tern.test";
const PASSWORD: &str = "correct horse";
/// The test server's upload limit.
const MAX_FILE: u64 = 6 * 1024 * 1024;

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
    // The upload service's URLs name 127.0.0.1 (nothing resolves
    // tern.test here).
    let params = rcgen::CertificateParams::new(vec![
        DOMAIN.to_owned(),
        format!("*.{DOMAIN}"),
        "127.0.0.1".to_owned(),
    ])
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
    ca: PathBuf,
    direct_tls: String,
    starttls: String,
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
                "domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\nregistration = \"open\"\n[listen]\nc2s = \"127.0.0.1:0\"\n\
                 c2s_tls = \"127.0.0.1:0\"\nupload = \"127.0.0.1:0\"\n\
                 [upload]\nurl_host = \"127.0.0.1\"\nmax_file_bytes = {MAX_FILE}\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
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
        let mut starttls = None;
        // The whole report, up to its last line.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("start-up report");
            if let Some(addr) = line.trim().strip_prefix("c2s TLS") {
                direct_tls = Some(addr.trim().to_owned());
            }
            if let Some(addr) = line.trim().strip_prefix("c2s STARTTLS") {
                starttls = Some(addr.trim().to_owned());
            }
            if line.trim().starts_with("plaintext") {
                break;
            }
        }
        let direct_tls = direct_tls.expect("the report names the direct-TLS port");
        let starttls = starttls.expect("the report names the STARTTLS port");
        Server {
            child,
            ca,
            direct_tls,
            starttls,
            _dir: dir,
        }
    }

    /// Every file the server wrote.
    fn files(&self) -> Vec<PathBuf> {
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
    /// Registers `user` and sets a profile up for them.
    fn new(server: &'a Server, user: &str) -> Tern<'a> {
        let tern = Tern::profile(server);
        tern.ok(&["account", "register", &jid(user)]);
        tern
    }

    /// Another device of an existing `user`.
    fn second_device(server: &'a Server, user: &str) -> Tern<'a> {
        let tern = Tern::profile(server);
        tern.ok(&["account", "login", &jid(user)]);
        tern
    }

    fn profile(server: &'a Server) -> Tern<'a> {
        Tern {
            server,
            profile: tempfile::tempdir().expect("profile"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.command_without_address(args);
        command.args(["--server", &self.server.direct_tls]);
        command
    }

    /// A command that finds the server through DNS.
    fn command_without_address(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
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
        bodies(&self.json(&["recv", "--json", "--wait", "2"]))
    }

    /// Starts `tern chat PEER --json`, ready for input.
    fn chat(&self, peer: &str) -> Chat {
        let mut child = self
            .command(&["--json", "chat", peer])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern chat");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut chat = Chat {
            child,
            stdin,
            lines,
        };
        chat.expect(|line| line["type"] == "ready");
        chat
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// The bodies of the messages among JSON lines.
fn bodies(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["type"] == "message")
        .filter_map(|line| line["body"].as_str().map(str::to_owned))
        .collect()
}

/// A running `tern chat --json`, stopped on drop.
struct Chat {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Chat {
    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to tern chat");
        stdin.flush().expect("flush");
    }

    /// The first line (within 20 s) that `wanted` accepts.
    fn expect(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
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
    fn quit(mut self) {
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

#[test]
fn two_users_talk_reply_edit_react_and_verify() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");

    let sent = alice.json(&["--json", "send", &jid("bob"), "hello bob"]);
    assert_eq!(sent[0]["type"], "sent");
    assert_eq!(bob.received(), ["hello bob"]);
    bob.ok(&["send", &jid("alice"), "hello alice"]);
    assert_eq!(alice.received(), ["hello alice"]);

    let history = bodies(&alice.json(&["--json", "history", &jid("bob")]));
    assert_eq!(history, ["hello bob", "hello alice"]);

    // alice chats; bob's question arrives live, she replies, corrects
    // her reply and reacts to the question.
    let mut chat = alice.chat(&jid("bob"));
    let sent = bob.json(&["--json", "send", &jid("alice"), "how are you?"]);
    let question_id = sent[0]["id"].as_str().expect("id").to_owned();
    let question = chat.expect(|line| line["body"] == "how are you?");
    assert_eq!(question["id"], question_id.as_str());
    let n = question["n"].as_u64().expect("numbered");
    chat.say(&format!("/reply {n} fine"));
    let reply = chat.expect(|line| line["body"] == "fine");
    chat.say("/edit fine, thanks");
    chat.expect(|line| line["body"] == "fine, thanks");
    chat.say(&format!("/react {n} 👍"));
    chat.expect(|line| line["reaction"].is_object());
    chat.quit();

    let arrived = bob.json(&["recv", "--json", "--wait", "2"]);
    let messages: Vec<&Value> = arrived.iter().filter(|l| l["type"] == "message").collect();
    assert_eq!(messages.len(), 3, "{arrived:?}");
    assert_eq!(messages[0]["reply_to"], question_id.as_str());
    assert_eq!(messages[0]["body"], "fine");
    assert_eq!(messages[1]["replaces"], reply["id"]);
    assert_eq!(messages[1]["body"], "fine, thanks");
    assert_eq!(messages[2]["reaction"]["to"], question_id.as_str());
    assert_eq!(messages[2]["reaction"]["emojis"][0], "👍");

    // Both see the same safety number; alice marks bob's device verified.
    let from_alice = alice.json(&["--json", "verify", &jid("bob"), "--mark-verified"]);
    let from_bob = bob.json(&["--json", "verify", &jid("alice")]);
    assert_eq!(from_alice[0]["safety_number"], from_bob[0]["safety_number"]);
    assert_eq!(from_alice[1]["verified"], true);
    assert_eq!(from_bob[1]["verified"], false);
    let again = alice.json(&["--json", "verify", &jid("bob")]);
    assert_eq!(again[1]["verified"], true);

    let devices = bob.json(&["--json", "account", "devices"]);
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["this_device"], true);
}

#[test]
fn errors_say_what_to_do() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let output = alice.run(&["send", &jid("nobody"), "hello?"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nobody@tern.test"), "{stderr}");

    let taken = Tern::profile(&server);
    let output = taken.run(&["account", "register", &jid("alice")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exists already"), "{stderr}");

    let output = taken
        .command(&["account", "login", &jid("alice")])
        .env("TERN_PASSWORD", "wrong")
        .stdin(Stdio::null())
        .output()
        .expect("run tern");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wrong password"), "{stderr}");

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
    assert!(stderr.contains("tern account register"), "{stderr}");
}

#[test]
fn a_group_changes_and_each_member_reads_exactly_their_part() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    let carol = Tern::new(&server, "carol");
    let dave = Tern::new(&server, "dave");

    let created = alice.json(&[
        "--json",
        "group",
        "create",
        "friends",
        "--member",
        &jid("bob"),
        "--member",
        &jid("carol"),
    ]);
    let group = created[0]["address"].as_str().expect("address").to_owned();
    assert!(group.ends_with(&format!("@groups.{DOMAIN}")), "{group}");
    let listed = alice.json(&["--json", "group", "list"]);
    assert_eq!(listed[0]["name"], "friends");
    assert_eq!(listed[0]["members"].as_array().map(Vec::len), Some(3));

    alice.ok(&["send", &group, "hello everyone"]);
    assert_eq!(bob.received(), ["hello everyone"]);
    bob.ok(&["send", &group, "hi from bob"]);
    assert_eq!(carol.received(), ["hello everyone", "hi from bob"]);
    carol.ok(&["send", &group, "hi from carol"]);
    assert_eq!(alice.received(), ["hi from bob", "hi from carol"]);

    // carol is removed: she is told, and reads nothing after.
    alice.ok(&["group", "remove", &group, &jid("carol")]);
    alice.ok(&["send", &group, "carol is gone"]);
    assert_eq!(bob.received(), ["hi from carol", "carol is gone"]);
    let carol_sees = carol.json(&["recv", "--json", "--wait", "2"]);
    assert!(
        carol_sees.iter().any(|e| e["type"] == "removed"),
        "carol is told: {carol_sees:?}"
    );
    assert!(bodies(&carol_sees).is_empty(), "{carol_sees:?}");

    // dave is added: he reads what follows, not what came before.
    bob.ok(&["group", "add", &group, &jid("dave")]);
    alice.ok(&["send", &group, "welcome dave"]);
    assert_eq!(dave.received(), ["welcome dave"]);
    assert_eq!(bodies(&dave.json(&["--json", "history"])), ["welcome dave"]);

    // bob leaves: the next message commits it, and bob reads no more.
    bob.ok(&["group", "leave", &group]);
    alice.ok(&["send", &group, "bye bob"]);
    assert_eq!(dave.received(), ["bye bob"]);
    assert!(bob.received().is_empty());
    let listed = alice.json(&["--json", "group", "list"]);
    let members: Vec<&str> = listed[0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(members, [jid("alice"), jid("dave")]);
}

#[test]
fn an_offline_member_gets_everything_in_order() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    let carol = Tern::new(&server, "carol");
    let created = alice.json(&["--json", "group", "create", "team", "--member", &jid("bob")]);
    let group = created[0]["address"].as_str().expect("address").to_owned();
    assert!(bob.received().is_empty());

    // bob is offline (no tern runs for him) while alice writes and
    // changes the group.
    let mut expected = Vec::new();
    for i in 0..10 {
        let text = format!("message {i}");
        alice.ok(&["send", &group, &text]);
        expected.push(text);
    }
    alice.ok(&["group", "add", &group, &jid("carol")]);
    for i in 10..20 {
        let text = format!("message {i}");
        alice.ok(&["send", &group, &text]);
        expected.push(text);
    }
    let arrived = bob.json(&["recv", "--json", "--wait", "2"]);
    assert_eq!(bodies(&arrived), expected);
    let change = arrived
        .iter()
        .position(|e| e["type"] == "members")
        .expect("the add is reported");
    let tenth = arrived
        .iter()
        .position(|e| e["body"] == "message 10")
        .expect("message 10");
    assert!(
        change < tenth,
        "the add comes before message 10: {arrived:?}"
    );
    assert_eq!(carol.received(), expected[10..]);

    // The server holds no message text anywhere.
    for file in server.files() {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let found = bytes.windows(b"message 1".len()).any(|w| w == b"message 1");
        assert!(!found, "{} holds a message text", file.display());
    }
}

#[test]
fn a_file_arrives_intact_and_the_server_keeps_only_ciphertext() {
    const MARKER: &[u8] = b"TERN-MARKER-7d1f";
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    alice.ok(&["send", &jid("bob"), "TERN-MARKER-7d1f in a body"]);
    bob.received();

    // 5 MiB of noise with the marker inside, under a name with the marker.
    let files = tempfile::tempdir().expect("dir");
    let mut contents: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for at in [0, 1 << 20, 5 * 1024 * 1024 - MARKER.len()] {
        contents[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let path = files.path().join("TERN-MARKER-7d1f holiday.bin");
    std::fs::write(&path, &contents).expect("write");
    let sent = alice.json(&[
        "--json",
        "file",
        "send",
        &jid("bob"),
        path.to_str().expect("path"),
    ]);
    let id = sent[0]["id"].as_str().expect("id").to_owned();

    let arrived = bob.json(&["recv", "--json", "--wait", "2"]);
    let message = arrived
        .iter()
        .find(|m| m["id"] == id.as_str())
        .expect("the file message arrives");
    assert_eq!(message["file"]["name"], "TERN-MARKER-7d1f holiday.bin");
    assert_eq!(message["file"]["size"], contents.len() as u64);
    let out = files.path().join("received");
    bob.ok(&["file", "get", &id, "--out", out.to_str().expect("path")]);
    assert!(
        std::fs::read(&out).expect("received file") == contents,
        "the file arrived intact"
    );

    // Too large a file is refused with the limit named.
    let big = files.path().join("big.bin");
    std::fs::write(&big, vec![0u8; MAX_FILE as usize + 1]).expect("write");
    let refused = alice.run(&["file", "send", &jid("bob"), big.to_str().expect("path")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("too large"), "{stderr}");

    // The blob is not the file, and no file the server wrote holds the
    // marker: not the body, not the name, not the contents.
    let blobs: Vec<PathBuf> = server
        .files()
        .into_iter()
        .filter(|f| f.parent().is_some_and(|p| p.ends_with("uploads")))
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let blob = std::fs::read(&blobs[0]).expect("blob");
    assert_eq!(blob.len(), contents.len() + 16);
    assert!(blob != contents);
    for file in server.files() {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let hits = bytes.windows(MARKER.len()).filter(|w| *w == MARKER).count();
        assert_eq!(hits, 0, "{} holds the marker", file.display());
    }
}

/// dnsmasq serving the test domain's records on a free loopback port,
/// stopped on drop.
struct Dns {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// `None` when dnsmasq is not installed (allowed outside CI).
    fn start(records: &str) -> Option<Dns> {
        let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(dnsmasq) = dnsmasq else {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("TERN_REQUIRE_PEERS").is_some();
            assert!(
                !required,
                "no dnsmasq: run the README's test command (scripts/test.sh)"
            );
            eprintln!("SKIPPED: no dnsmasq; run scripts/test.sh");
            return None;
        };
        let dir = tempfile::tempdir().expect("dir");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.path().join("dns.conf");
        std::fs::write(
            &conf,
            format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 no-poll\nlocal=/test/\n{records}"
            ),
        )
        .expect("dns.conf");
        let child = Command::new(dnsmasq)
            .arg("--no-daemon")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file=")
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        // Ready when it answers on TCP.
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Dns {
            child,
            address,
            _dir: dir,
        })
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_server_is_found_through_dns_srv() {
    let server = Server::start();
    let port = |address: &str| address.rsplit(':').next().expect("port").to_owned();
    // A dead direct-TLS record first, then the STARTTLS one that works.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let Some(dns) = Dns::start(&format!(
        "host-record=xmpp.{DOMAIN},127.0.0.1\n\
         srv-host=_xmpps-client._tcp.{DOMAIN},xmpp.{DOMAIN},{dead},0,0\n\
         srv-host=_xmpp-client._tcp.{DOMAIN},xmpp.{DOMAIN},{},10,0\n",
        port(&server.starttls)
    )) else {
        return;
    };
    let bob = Tern::new(&server, "bob");
    let alice = Tern::profile(&server);
    let run = |args: &[&str]| {
        let output = alice
            .command_without_address(args)
            .env("TERN_DNS", &dns.address)
            .stdin(Stdio::null())
            .output()
            .expect("tern");
        assert!(
            output.status.success(),
            "tern {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["account", "register", &jid("alice")]);
    run(&["send", &jid("bob"), "found you"]);
    assert_eq!(bob.received(), ["found you"]);

    // Without DNS records the error says so.
    let empty = Dns::start("").expect("dnsmasq");
    let output = alice
        .command_without_address(&["recv"])
        .env("TERN_DNS", &empty.address)
        .stdin(Stdio::null())
        .output()
        .expect("tern");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no server for tern.test"), "{stderr}");
}

#[test]
fn a_second_device_joins_existing_conversations() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    alice.ok(&["send", &jid("bob"), "before the new device"]);
    assert_eq!(bob.received(), ["before the new device"]);

    let bob_phone = Tern::second_device(&server, "bob");
    let devices = bob_phone.json(&["--json", "account", "devices"]);
    assert_eq!(devices.len(), 2);
    let alice_sees = alice.json(&["recv", "--json", "--wait", "2"]);
    assert!(
        alice_sees.iter().any(|e| e["type"] == "members"),
        "alice is told of bob's new device: {alice_sees:?}"
    );

    alice.ok(&["send", &jid("bob"), "to both devices"]);
    assert_eq!(bob_phone.received(), ["to both devices"]);
    assert_eq!(bob.received(), ["to both devices"]);
    bob_phone.ok(&["send", &jid("alice"), "from the phone"]);
    assert_eq!(alice.received(), ["from the phone"]);
    assert_eq!(bob.received(), ["from the phone"]);
}

#[test]
fn concurrent_commits_from_two_clients_both_land() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");
    let carol = Tern::new(&server, "carol");
    let dave = Tern::new(&server, "dave");
    let created = alice.json(&["--json", "group", "create", "g", "--member", &jid("bob")]);
    let group = created[0]["address"].as_str().expect("address").to_owned();
    bob.received();

    // Both add someone at the same moment.
    let carol_jid = jid("carol");
    let dave_jid = jid("dave");
    let mut adding_carol = alice
        .command(&["group", "add", &group, &carol_jid])
        .stdin(Stdio::null())
        .spawn()
        .expect("tern");
    let mut adding_dave = bob
        .command(&["group", "add", &group, &dave_jid])
        .stdin(Stdio::null())
        .spawn()
        .expect("tern");
    assert!(adding_carol.wait().expect("wait").success());
    assert!(adding_dave.wait().expect("wait").success());

    alice.ok(&["send", &group, "all four"]);
    assert_eq!(bob.received(), ["all four"]);
    assert_eq!(carol.received(), ["all four"]);
    assert_eq!(dave.received(), ["all four"]);
    dave.ok(&["send", &group, "dave here"]);
    assert_eq!(alice.received(), ["dave here"]);
    assert_eq!(carol.received(), ["dave here"]);
    let members = |tern: &Tern| tern.json(&["--json", "group", "list"])[0]["members"].clone();
    assert_eq!(members(&alice), members(&dave));
    assert_eq!(members(&alice).as_array().map(Vec::len), Some(4));
}
