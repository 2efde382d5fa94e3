//! `tern` across domains: alice@a.test and bob@b.test, each on their own
//! `tern-server` (own loopback address, certificate from one test CA),
//! found by each other through dnsmasq SRV records; they subscribe to each
//! other's presence and chat end-to-end encrypted, their key packages
//! claimed across the federation.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// `who`'s subscription to `contact` as `tern contact list` shows it,
/// once it is `wanted` (within 20 s).
fn wait_for_subscription(who: &Tern, contact: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let contacts = who.json(&["--json", "contact", "list"]);
        let now = contacts
            .iter()
            .find(|line| line["jid"] == contact)
            .and_then(|line| line["subscription"].as_str())
            .unwrap_or("absent")
            .to_owned();
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscription to {contact} is {now}, not {wanted}: {contacts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bodies `who` receives, waiting (up to 20 s) until there are `n`.
fn receive(who: &Tern, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bodies = Vec::new();
    while bodies.len() < n && Instant::now() < deadline {
        bodies.extend(who.received());
    }
    bodies
}

#[test]
fn users_of_two_domains_subscribe_and_chat_end_to_end() {
    let ca = Ca::new();
    let Some((a, b, _dns)) = two_domains(&ca) else {
        return;
    };
    let marker = format!("FEDERATED-{:016x}", rand::random::<u64>());
    let alice = Tern::new(&a, "alice");
    let bob = Tern::new(&b, "bob");

    // Presence subscriptions both ways, across the federation.
    alice.ok(&["contact", "add", "bob@b.test", "--name", "Bob"]);
    bob.ok(&["contact", "add", "alice@a.test"]);
    wait_for_subscription(&alice, "bob@b.test", "both");
    wait_for_subscription(&bob, "alice@a.test", "both");

    // alice writes first: bob's key packages are claimed from b.test, the
    // conversation's hub is groups.a.test.
    let first = format!("hello bob {marker}");
    let sent = alice.json(&["--json", "send", "bob@b.test", &first]);
    assert_eq!(sent[0]["type"], "sent");
    assert_eq!(receive(&bob, 1), [first.as_str()]);

    // A live chat on alice's side; bob answers in the same conversation.
    let mut chat = alice.chat("bob@b.test");
    let answer = format!("hello alice {marker}");
    bob.ok(&["send", "alice@a.test", &answer]);
    chat.expect(|line| line["body"] == answer.as_str());
    let again = format!("how is b.test? {marker}");
    chat.say(&again);
    chat.expect(|line| line["body"] == again.as_str());
    chat.quit();
    assert_eq!(receive(&bob, 1), [again.as_str()]);

    // One conversation, in the same order, on both sides.
    let alice_history = bodies(&alice.json(&["--json", "history", "bob@b.test"]));
    let bob_history = bodies(&bob.json(&["--json", "history", "alice@a.test"]));
    assert_eq!(
        alice_history,
        [first.clone(), answer.clone(), again.clone()]
    );
    assert_eq!(bob_history, alice_history);

    // The same safety number on both domains.
    let from_alice = alice.json(&["--json", "verify", "bob@b.test"]);
    let from_bob = bob.json(&["--json", "verify", "alice@a.test"]);
    assert_eq!(from_alice[0]["safety_number"], from_bob[0]["safety_number"]);

    // Neither server wrote the text anywhere.
    for server in [&a, &b] {
        for file in server.files() {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let hit = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
            assert!(!hit, "{} holds the text in clear", file.display());
        }
    }
}
