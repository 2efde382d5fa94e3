//! tern-bridge end to end: the real `tern-server`, `tern` and
//! `tern-bridge` binaries on loopback; a slixmpp client logged into the
//! bridge as alice chats with bob's `tern` (receipts, corrections and
//! reactions both ways), and the server keeps only ciphertext.

#[path = "../../client-cli/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BRIDGE_PASSWORD: &str = "bridge secret";

/// A running tern-bridge, stopped on drop.
struct Bridge {
    child: Child,
    /// Where clients connect.
    address: String,
    /// Its certificate (self-signed), for clients to trust.
    certificate: PathBuf,
    _profile: Option<tempfile::TempDir>,
}

impl Bridge {
    fn start(server: &Server, user: &str) -> Bridge {
        let profile = tempfile::tempdir().expect("profile");
        let mut bridge = Self::start_in(server, user, profile.path(), None);
        bridge._profile = Some(profile);
        bridge
    }

    /// Starts the bridge on `profile` (which outlives it), its store
    /// encrypted with `passphrase` if given.
    fn start_in(server: &Server, user: &str, profile: &Path, passphrase: Option<&str>) -> Bridge {
        let mut command = bridge_command(server, user, profile);
        if let Some(passphrase) = passphrase {
            command.env("TERN_BRIDGE_PASSPHRASE", passphrase);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern-bridge");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut address = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("the bridge's start-up report");
            if let Some(rest) = line.trim().strip_prefix("clients") {
                address = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.trim().starts_with("store") {
                break;
            }
        }
        Bridge {
            child,
            address: address.expect("the report names the clients' address"),
            certificate: profile.join("tls/cert.pem"),
            _profile: None,
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bridge_command(server: &Server, user: &str, profile: &Path) -> Command {
    let mut command = Command::new(binary("tern-bridge"));
    command
        .args([
            "--account",
            &server.jid(user),
            "--server",
            &server.direct_tls,
        ])
        .arg("--profile")
        .arg(profile)
        .arg("--ca-file")
        .arg(&server.ca)
        .env("TERN_PASSWORD", PASSWORD)
        .env("TERN_BRIDGE_PASSWORD", BRIDGE_PASSWORD)
        .env("TERN_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TERN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// bob's messages from `tern recv --json`, until one satisfies `wanted`
/// (within 60 s).
fn receive_until(bob: &Tern, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = bob.json(&["recv", "--json", "--wait", "1"]);
        if let Some(line) = lines.into_iter().find(|l| wanted(l)) {
            return line;
        }
        assert!(Instant::now() < deadline, "bob never got the message");
    }
}

#[test]
fn a_standard_client_chats_through_the_bridge_with_a_tern_user() {
    let Some(python) = python() else {
        return missing_python();
    };
    // alice and her bridge on a.test, bob on b.test: federated.
    let ca = Ca::new();
    let Some((a, b, _dns)) = two_domains(&ca) else {
        return;
    };
    let bob = Tern::new(&b, "bob");
    let _alice_phone = Tern::new(&a, "alice");
    let profile = tempfile::tempdir().expect("profile");
    let store = profile.path().to_owned();
    let bridge = Bridge::start_in(&a, "alice", &store, Some("store passphrase"));
    let (alice_jid, bob_jid) = (a.jid("alice"), b.jid("bob"));
    let marker = format!("BRIDGED-{:016x}", rand_u64());

    let (host, port) = bridge.address.rsplit_once(':').expect("HOST:PORT");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/bridge_client.py");
    let mut client = Command::new(python)
        .arg(script)
        .args([host, port, &alice_jid, BRIDGE_PASSWORD])
        .arg(&bridge.certificate)
        .args([&bob_jid, &marker])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the slixmpp client");

    // bob reads alice's message (his `tern` sends the receipt she asked
    // for), answers in a live chat, and sees her correction and reaction.
    let first = receive_until(&bob, |l| {
        l["body"] == format!("hello bob {marker}").as_str()
    });
    assert_eq!(first["type"], "message");
    let mut chat = bob.chat(&alice_jid);
    let shown = chat
        .history
        .iter()
        .find(|l| l["body"] == format!("hello bob {marker}").as_str())
        .expect("the chat shows alice's message");
    let n = shown["n"].as_u64().expect("numbered");
    chat.say("hello alice");
    chat.expect(|l| l["body"] == "hello alice");
    let corrected = chat.expect(|l| l["body"] == format!("hello bob! {marker}").as_str());
    assert_eq!(corrected["replaces"], first["id"]);
    let reaction = chat.expect(|l| l["reaction"].is_object());
    assert_eq!(reaction["reaction"]["emojis"][0], "🎉");
    chat.say("/edit hello alice!");
    chat.say(&format!("/react {n} 👍"));

    // Its steps print as they pass; it exits non-zero on a failed one.
    assert!(
        wait_for(&mut client, Duration::from_secs(120)),
        "the slixmpp client failed (its output is above)"
    );
    chat.quit();

    // Neither server ever had the text; the bridge's store has it only
    // encrypted.
    for server in [&a, &b] {
        assert_no_marker(server, &marker);
    }
    drop(bridge);
    for file in std::fs::read_dir(&store).expect("profile").flatten() {
        let bytes = std::fs::read(file.path()).unwrap_or_default();
        let name = file.file_name().to_string_lossy().into_owned();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{name}"
        );
        if name == "client.sqlite3" {
            assert!(
                !bytes.starts_with(b"SQLite format 3"),
                "the store is not encrypted"
            );
        }
    }
    // Keys, password and store: the owner's only.
    let mut pending = vec![store.clone()];
    while let Some(path) = pending.pop() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}

/// No file `server` wrote holds `marker`.
fn assert_no_marker(server: &Server, marker: &str) {
    for file in server.files() {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let hit = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        assert!(!hit, "{} holds the text in clear", file.display());
    }
}

#[test]
fn a_standard_client_takes_part_in_a_group_as_a_room() {
    let Some(python) = python() else {
        return missing_python();
    };
    let server = Server::start();
    let bob = Tern::new(&server, "bob");
    let carol = Tern::new(&server, "carol");
    let _alice_phone = Tern::new(&server, "alice");
    let bridge = Bridge::start(&server, "alice");
    let created = bob.json(&[
        "--json",
        "group",
        "create",
        "friends",
        "--member",
        &jid("alice"),
        "--member",
        &jid("carol"),
    ]);
    let room = field_of(&created, "group", "address");
    let marker = format!("ROOM-{:016x}", rand_u64());

    let (host, port) = bridge.address.rsplit_once(':').expect("HOST:PORT");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/muc_client.py");
    let mut client = Command::new(python)
        .arg(script)
        .args([host, port, &jid("alice"), BRIDGE_PASSWORD])
        .arg(&bridge.certificate)
        .args([&room, &marker, &jid("bob"), &jid("carol")])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the slixmpp client");

    // Both tern users hear the client; bob answers; then removes carol.
    let said = format!("hi all {marker}");
    receive_until(&bob, |l| l["body"] == said.as_str());
    receive_until(&carol, |l| l["body"] == said.as_str());
    bob.ok(&["send", &room, "hello room"]);
    bob.ok(&["group", "remove", &room, &jid("carol")]);
    // The client makes a room of its own and brings bob in.
    receive_until(&bob, |l| {
        l["body"] == format!("made here {marker}").as_str()
    });
    // bob gets a second device, which alice's client is asked to verify.
    let _bob_tablet = Tern::second_device(&server, "bob");

    assert!(
        wait_for(&mut client, Duration::from_secs(150)),
        "the slixmpp client failed (its output is above)"
    );
    assert_no_marker(&server, &marker);
}

/// A terminal program under a private tmux server, stopped on drop.
struct Terminal {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Terminal {
    /// Runs `command` (a shell line) in a 160×50 terminal.
    fn start(command: &str) -> Terminal {
        let dir = tempfile::tempdir().expect("dir");
        let socket = dir.path().join("tmux.sock");
        let terminal = Terminal { socket, _dir: dir };
        terminal.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "50",
            command,
        ]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types a line.
    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// What the screen shows.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits (up to 60 s) until the screen shows `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

#[test]
fn profanity_chats_through_the_bridge() {
    if !Path::new("/usr/bin/profanity").exists() || !Path::new("/usr/bin/tmux").exists() {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("TERN_REQUIRE_PEERS").is_some();
        assert!(!required, "no profanity or tmux: run scripts/test.sh");
        eprintln!("SKIPPED: no profanity or tmux; run scripts/test.sh");
        return;
    }
    let server = Server::start();
    let bob = Tern::new(&server, "bob");
    let _alice_phone = Tern::new(&server, "alice");
    let bridge = Bridge::start(&server, "alice");
    let home = tempfile::tempdir().expect("profanity home");
    let marker = format!("PROFANITY-{:016x}", rand_u64());

    let terminal = Terminal::start(&format!(
        "env HOME={home} XDG_CONFIG_HOME={home}/config XDG_DATA_HOME={home}/data profanity",
        home = home.path().display()
    ));
    terminal.wait_for("Profanity");
    let (host, port) = bridge.address.rsplit_once(':').expect("HOST:PORT");
    terminal.type_line(&format!(
        "/connect {} server {host} port {port} tls trust",
        jid("alice")
    ));
    terminal.wait_for("password");
    terminal.type_line(BRIDGE_PASSWORD);
    terminal.wait_for("logged in successfully");
    terminal.type_line(&format!(
        "/msg {} hello from profanity {marker}",
        jid("bob")
    ));

    receive_until(&bob, |l| {
        l["body"] == format!("hello from profanity {marker}").as_str()
    });
    bob.ok(&["send", &jid("alice"), "hello profanity"]);
    terminal.wait_for("hello profanity");

    assert_no_marker(&server, &marker);
}

#[test]
fn the_bridge_reconnects_when_the_home_server_comes_back() {
    let Some(python) = python() else {
        return missing_python();
    };
    let server = Server::start();
    let bob = Tern::new(&server, "bob");
    let _alice_phone = Tern::new(&server, "alice");
    let bridge = Bridge::start(&server, "alice");
    let (host, port) = bridge.address.rsplit_once(':').expect("HOST:PORT");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slixmpp/wait_message.py");
    let mut client = Command::new(python)
        .arg(script)
        .args([host, port, &jid("alice"), BRIDGE_PASSWORD])
        .arg(&bridge.certificate)
        .arg("after the restart")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the slixmpp client");
    let lines = lines_of(client.stdout.take().expect("stdout"));
    let ready = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the client logged in");
    assert!(ready.contains("ready"), "{ready}");

    // The home server goes away and comes back; the client stays on the
    // bridge, which logs in again and catches up.
    server.restart();
    bob.ok(&["send", &jid("alice"), "after the restart"]);
    assert!(
        wait_for(&mut client, Duration::from_secs(120)),
        "the message sent after the restart did not reach the client"
    );
}

fn missing_python() {
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("TERN_REQUIRE_PEERS").is_some();
    assert!(!required, "no Python with slixmpp: run scripts/test.sh");
    eprintln!("SKIPPED: no Python venv with slixmpp; run scripts/test.sh");
}

#[test]
fn the_bridge_refuses_a_wrong_password_and_a_remote_address() {
    let server = Server::start();
    let _alice = Tern::new(&server, "alice");
    let profile = tempfile::tempdir().expect("profile");
    let mut remote = bridge_command(&server, "alice", profile.path());
    remote.args(["--listen", "0.0.0.0:0"]);
    let stderr = fails(remote);
    assert!(stderr.contains("--allow-remote"), "{stderr}");

    // A store encrypted with one passphrase does not open with another.
    let encrypted = tempfile::tempdir().expect("profile");
    drop(Bridge::start_in(
        &server,
        "alice",
        encrypted.path(),
        Some("right"),
    ));
    let mut wrong = bridge_command(&server, "alice", encrypted.path());
    wrong
        .args(["--listen", "127.0.0.1:0"])
        .env("TERN_BRIDGE_PASSPHRASE", "wrong");
    let stderr = fails(wrong);
    assert!(stderr.contains("wrong or missing passphrase"), "{stderr}");

    let bridge = Bridge::start(&server, "alice");
    let refused = sasl_plain(&bridge, "alice", "not the bridge password");
    assert!(refused.contains("not-authorized"), "{refused}");
    let accepted = sasl_plain(&bridge, "alice", BRIDGE_PASSWORD);
    assert!(accepted.contains("<success"), "{accepted}");
}

/// Runs a bridge that must refuse to start (within 60 s); its error
/// output.
fn fails(mut command: Command) -> String {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-bridge");
    let stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the bridge started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the bridge exited successfully");
    errors.join().unwrap_or_default()
}

/// What the bridge answers to SASL PLAIN after STARTTLS.
fn sasl_plain(bridge: &Bridge, user: &str, password: &str) -> String {
    let script = format!(
        "import base64, socket, ssl, sys\n\
         s = socket.create_connection(('{host}', {port}))\n\
         hdr = b\"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\"\n\
         def until(sock, end):\n\
         \x20   data = b''\n\
         \x20   while end not in data:\n\
         \x20       chunk = sock.recv(4096)\n\
         \x20       if not chunk: break\n\
         \x20       data += chunk\n\
         \x20   return data\n\
         s.sendall(hdr); until(s, b'</stream:features>')\n\
         s.sendall(b\"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\"); until(s, b'<proceed')\n\
         ctx = ssl.create_default_context(cafile='{cert}')\n\
         t = ctx.wrap_socket(s, server_hostname='{domain}')\n\
         t.sendall(hdr); until(t, b'</stream:features>')\n\
         creds = base64.b64encode(b'\\0{user}\\0{password}').decode()\n\
         t.sendall((\"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>\" % creds).encode())\n\
         sys.stdout.write(until(t, b'</').decode())\n",
        host = bridge.address.rsplit_once(':').expect("address").0,
        port = bridge.address.rsplit_once(':').expect("address").1,
        domain = DOMAIN,
        cert = bridge.certificate.display(),
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Waits for a child (bounded); whether it exited successfully.
fn wait_for(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rand_u64() -> u64 {
    rand::random()
}
