//! `tern` end to end: the real `tern` and `tern-server` binaries on
//! loopback, a private CA given with `--ca-file`.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

#[test]
fn two_users_talk_reply_edit_react_and_verify() {
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let bob = Tern::new(&server, "bob");

    let sent = alice.json(&["--json", "send", &jid("bob"), "hello bob"]);
    assert_eq!(sent[0]["type"], "sent");
    // bob answers without having read anything: his `send` reads alice's
    // message first (and shows it), and answers in the same conversation.
    let answered = bob.json(&["--json", "send", &jid("alice"), "hello alice"]);
    assert_eq!(bodies(&answered), ["hello bob"]);
    assert_eq!(alice.received(), ["hello alice"]);
    assert!(bob.received().is_empty());

    let history = bodies(&alice.json(&["--json", "history", &jid("bob")]));
    assert_eq!(history, ["hello bob", "hello alice"]);

    // alice chats; bob's question arrives live, she replies, corrects
    // her reply and reacts to the question.
    let mut chat = alice.chat(&jid("bob"));
    let sent = bob.json(&["--json", "send", &jid("alice"), "how are you?"]);
    let question_id = field_of(&sent, "sent", "id");
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
    fails_saying(
        &mut alice.command(&["send", &jid("nobody"), "hello?"]),
        "nobody@tern.test",
    );
    let taken = Tern::profile(&server);
    fails_saying(
        &mut taken.command(&["account", "register", &jid("alice")]),
        "exists already",
    );
    fails_saying(
        taken
            .command(&["account", "login", &jid("alice")])
            .env("TERN_PASSWORD", "wrong"),
        "wrong password",
    );
    // A certificate from an unknown CA: the error says how to trust it.
    fails_saying(
        Command::new(binary("tern"))
            .arg("--profile")
            .arg(alice.profile.path())
            .args(["--server", &server.direct_tls, "recv"])
            .env("TERN_PASSWORD", PASSWORD)
            .env("SSL_CERT_FILE", "/nonexistent"),
        "--ca-file",
    );
    let empty = tempfile::tempdir().expect("dir");
    fails_saying(
        Command::new(binary("tern"))
            .arg("--profile")
            .arg(empty.path())
            .arg("recv"),
        "tern account register",
    );
}

/// Runs `command`, which must fail with `what` in its error output.
fn fails_saying(command: &mut Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().expect("run tern");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(what), "{stderr}");
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
    let group = field_of(&created, "group", "address");
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
    let group = field_of(&created, "group", "address");
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
    let id = field_of(&sent, "sent", "id");

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
    let group = field_of(&created, "group", "address");
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

/// The mode bits of `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_profile_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let alice = Tern::new(&server, "alice");
    let dir = alice.profile.path();
    let store = dir.join("client.sqlite3");
    let check = |when: &str| {
        assert_eq!(mode_of(dir), 0o700, "the profile {when}");
        for file in ["client.sqlite3", "profile.toml"] {
            assert_eq!(mode_of(&dir.join(file)), 0o600, "{file} {when}");
        }
        for entry in std::fs::read_dir(dir).expect("profile") {
            let path = entry.expect("entry").path();
            let wanted = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode_of(&path), wanted, "{} {when}", path.display());
        }
    };
    check("after registration");
    // A profile an earlier version left readable is tightened at the next
    // start.
    let loosen = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    loosen(dir, 0o755);
    loosen(&store, 0o644);
    loosen(&dir.join("profile.toml"), 0o644);
    alice.json(&["--json", "account", "devices"]);
    check("after a start with a loose profile");
}
