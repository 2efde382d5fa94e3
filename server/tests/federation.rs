//! Federation between real Tern servers: each on its own loopback
//! address and domain, found through dnsmasq SRV records (on ports only
//! the SRV records tell), with certificates from the test CA; users chat
//! across domains end-to-end encrypted with tern-e2ee devices.

mod common;

use common::bed::Bed;
use common::mls::{text_of, Member};
use common::{s2s_stream, s2s_stream_as, TestServer};
use tern_e2ee::Incoming;

#[tokio::test(flavor = "multi_thread")]
async fn users_on_three_servers_subscribe_claim_keys_and_share_a_group() {
    let Some(bed) = Bed::start(0, &[("a.test", ""), ("b.test", ""), ("c.test", "")]) else {
        return;
    };
    let marker = format!("FEDERATED-{:016x}", rand::random::<u64>());
    let said = |what: &str| format!("{what} {marker}");
    let mut alice = Member::new(bed.server("a.test"), "alice").await;
    let mut bob = Member::new(bed.server("b.test"), "bob").await;
    let mut carol = Member::new(bed.server("c.test"), "carol").await;

    // Presence subscription both ways across domains.
    alice
        .client
        .send_xml("<presence xmlns='jabber:client' to='bob@b.test' type='subscribe'/>")
        .await;
    bob.client
        .expect("alice's request", |e| {
            e.name() == "presence"
                && e.attr("type") == Some("subscribe")
                && e.attr("from") == Some("alice@a.test")
        })
        .await;
    bob.client
        .send_xml("<presence xmlns='jabber:client' to='alice@a.test' type='subscribed'/>")
        .await;
    alice
        .client
        .expect("bob's approval", |e| {
            e.name() == "presence"
                && e.attr("type") == Some("subscribed")
                && e.attr("from") == Some("bob@b.test")
        })
        .await;
    alice
        .client
        .expect("bob's presence", |e| {
            e.name() == "presence"
                && e.attr("type").is_none()
                && e.attr("from").is_some_and(|f| f.starts_with("bob@b.test/"))
        })
        .await;

    // Key packages claimed across domains; a group hosted on a.test.
    bob.upload(2).await;
    carol.upload(2).await;
    let (id, group) = alice.create_group().await;
    assert!(group.ends_with("@groups.a.test"), "{group}");
    let mut packages = Vec::new();
    for user in ["bob@b.test", "carol@c.test"] {
        let claimed = alice.claim(user).await.expect("remote key packages");
        packages.extend(claimed.key_packages.into_iter().map(|p| p.data));
    }
    let out = alice.device.add_members(&id, &packages).await.expect("add");
    let accepted = alice.submit(&group, &out).await.expect("commit accepted");
    alice
        .device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");
    let (bob_id, _) = bob.join_from_welcome(&group).await;
    let (carol_id, _) = carol.join_from_welcome(&group).await;
    assert_eq!((bob_id.clone(), carol_id.clone()), (id.clone(), id.clone()));
    assert_eq!(bob.next_entry(&group).await.seq, Some(1));
    assert_eq!(carol.next_entry(&group).await.seq, Some(1));
    assert!(matches!(
        alice.receive(&group, &id).await,
        Incoming::Duplicate
    ));

    // Messages from each domain reach the others through the hub.
    bob.send_text(&group, &id, &said("hello from b")).await;
    assert_eq!(
        text_of(&alice.receive(&group, &id).await),
        Some(said("hello from b").as_str())
    );
    assert_eq!(
        text_of(&carol.receive(&group, &id).await),
        Some(said("hello from b").as_str())
    );
    assert!(matches!(bob.receive(&group, &id).await, Incoming::OwnEcho));
    carol.send_text(&group, &id, &said("hello from c")).await;
    for member in [&mut alice, &mut bob] {
        assert_eq!(
            text_of(&member.receive(&group, &id).await),
            Some(said("hello from c").as_str())
        );
    }
    assert!(matches!(
        carol.receive(&group, &id).await,
        Incoming::OwnEcho
    ));

    // Concurrent commits from two domains: one wins, the other catches up
    // and commits again.
    let from_alice = alice.device.self_update(&id).await.expect("update");
    let from_bob = bob.device.self_update(&id).await.expect("update");
    let won = alice
        .submit(&group, &from_alice)
        .await
        .expect("first commit wins");
    alice
        .device
        .commit_accepted(&id, won.seq)
        .await
        .expect("merge");
    let lost = bob
        .submit(&group, &from_bob)
        .await
        .expect_err("second commit is stale");
    assert_eq!(common::mls::condition(&lost).as_deref(), Some("conflict"));
    bob.device.commit_refused(&id).await.expect("discard");
    assert!(matches!(
        bob.receive(&group, &id).await,
        Incoming::Commit { .. }
    ));
    assert!(matches!(
        carol.receive(&group, &id).await,
        Incoming::Commit { .. }
    ));
    assert!(matches!(
        alice.receive(&group, &id).await,
        Incoming::Duplicate
    ));
    let retry = bob.device.self_update(&id).await.expect("update again");
    let accepted = bob.submit(&group, &retry).await.expect("retry accepted");
    bob.device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");
    for member in [&mut alice, &mut carol] {
        assert!(matches!(
            member.receive(&group, &id).await,
            Incoming::Commit { .. }
        ));
    }
    assert!(matches!(
        bob.receive(&group, &id).await,
        Incoming::Duplicate
    ));

    // A remove across domains: carol leaves the group's epochs.
    let out = alice
        .device
        .remove_user(&id, &carol.device.name().jid)
        .await
        .expect("remove");
    let accepted = alice.submit(&group, &out).await.expect("remove accepted");
    alice
        .device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");
    assert!(matches!(
        bob.receive(&group, &id).await,
        Incoming::Commit { .. }
    ));
    assert!(matches!(
        carol.receive(&group, &id).await,
        Incoming::Commit { evicted: true, .. }
    ));
    alice.send_text(&group, &id, &said("without carol")).await;
    assert_eq!(
        text_of(&bob.receive(&group, &id).await),
        Some(said("without carol").as_str())
    );

    // No server wrote any of it in clear, anywhere.
    for server in &bed.servers {
        let hits = common::files_containing(server.dir.path(), marker.as_bytes());
        assert!(
            hits.is_empty(),
            "text in clear on {}: {hits:?}",
            server.domain
        );
    }

    let status = bed.server("a.test").federation_status();
    assert!(
        status.contains("out groups.a.test -> b.test: connected, certificate"),
        "{status}"
    );
    assert!(
        status.contains("out a.test -> b.test: connected, certificate"),
        "{status}"
    );
}

/// An OMEMO-style encrypted chat message (the server carries it, never
/// reads it).
fn encrypted_chat(to: &str, id: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='{to}' type='chat' id='{id}'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>{id}</payload></encrypted></message>"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dialback_authenticates_when_certificates_are_not_used() {
    let dialback_only = "certificate_auth = false";
    let Some(bed) = Bed::start(2, &[("a.test", dialback_only), ("b.test", dialback_only)]) else {
        return;
    };
    let alice = Member::new(bed.server("a.test"), "alice").await;
    let mut bob = Member::new(bed.server("b.test"), "bob").await;
    let mut alice = alice;
    alice
        .client
        .send_xml(&encrypted_chat("bob@b.test", "m1"))
        .await;
    bob.client
        .expect("alice's message", |e| e.attr("id") == Some("m1"))
        .await;
    bob.client
        .send_xml(&encrypted_chat("alice@a.test", "m2"))
        .await;
    alice
        .client
        .expect("bob's answer", |e| e.attr("id") == Some("m2"))
        .await;
    let status = bed.server("a.test").federation_status();
    assert!(
        status.contains("out a.test -> b.test: connected, dialback"),
        "{status}"
    );
    assert!(status.contains("a.test <- b.test (dialback)"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stanzas_for_a_stopped_server_wait_and_arrive_in_order() {
    let Some(mut bed) = Bed::start(3, &[("a.test", ""), ("b.test", "")]) else {
        return;
    };
    bed.server("b.test").add_user("bob", "secret");
    let mut alice = Member::new(bed.server("a.test"), "alice").await;
    alice
        .client
        .send_xml(&encrypted_chat("bob@b.test", "first"))
        .await;
    // b.test goes away; alice goes on sending.
    assert!(bed.servers[1].terminate(), "b.test stops cleanly");
    for n in 0..5 {
        alice
            .client
            .send_xml(&encrypted_chat("bob@b.test", &format!("while-down-{n}")))
            .await;
    }
    // a.test restarts meanwhile: its queue survives.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    alice.go_offline().await;
    assert!(bed.servers[0].terminate(), "a.test stops cleanly");
    bed.servers[0].restart();
    bed.servers[1].restart();
    let mut bob = Member::login(bed.server("b.test"), "bob").await;
    let mut ids = Vec::new();
    while ids.len() < 6 {
        let message = bob
            .client
            .expect("alice's messages", |e| e.name() == "message")
            .await;
        ids.push(message.attr("id").unwrap_or_default().to_owned());
    }
    let mut expected = vec!["first".to_owned()];
    expected.extend((0..5).map(|n| format!("while-down-{n}")));
    assert_eq!(ids, expected);
}

/// Waits (up to 20 s) until `server`'s federation status satisfies
/// `wanted`; returns it.
async fn wait_for_status(server: &TestServer, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = server.federation_status();
        if wanted(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "federation status never got there: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_a_certificate_for_another_domain_is_refused_both_ways() {
    // The server DNS gives for b.test holds a certificate for evil.test.
    let Some(bed) = Bed::start_with(
        4,
        &[("a.test", ""), ("b.test", "")],
        &[("b.test", "evil.test")],
    ) else {
        return;
    };
    let a = bed.server("a.test");
    let mut alice = Member::new(a, "alice").await;

    // a.test to b.test: the TLS handshake fails on b.test's certificate;
    // the message waits (and bounces in time), it never reaches b.test.
    alice
        .client
        .send_xml(&encrypted_chat("bob@b.test", "to-impostor"))
        .await;
    let status = wait_for_status(a, |s| {
        s.contains("out a.test -> b.test: retrying") && s.contains("last error")
    })
    .await;
    assert!(status.contains("not valid for name \"b.test\""), "{status}");
    assert!(status.contains("queued 1"), "{status}");

    // b.test to a.test with a certificate for evil.test: no EXTERNAL...
    let (mut b, features) = s2s_stream(a, "b.test", "evil.test").await;
    assert!(!features.contains("EXTERNAL"), "{features}");
    b.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi50ZXN0</auth>")
        .await;
    b.read_until("<not-authorized").await;
    // ...and dialback, verified against the server DNS names for b.test,
    // reaches the impostor, whose certificate a.test refuses again.
    b.send(
        "<db:result xmlns:db='jabber:server:dialback' from='b.test' to='a.test'>\
         c2a4a1b8e0f1d2c3</db:result>",
    )
    .await;
    let closed = b
        .read_to_close(std::time::Duration::from_secs(20))
        .await
        .expect("a.test closes the stream");
    assert!(
        closed.contains("type='invalid'") || closed.contains("type=\"invalid\""),
        "{closed}"
    );
    assert!(closed.contains("<not-authorized"), "{closed}");
    let status = a.federation_status();
    assert!(!status.contains("<- b.test"), "{status}");
    alice
        .client
        .expect_none(
            "a message from b.test",
            std::time::Duration::from_millis(500),
            |e| e.name() == "message",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stanza_from_a_domain_the_stream_did_not_authenticate_ends_it() {
    let Some(bed) = Bed::start(5, &[("a.test", "")]) else {
        return;
    };
    let a = bed.server("a.test");
    let mut alice = Member::new(a, "alice").await;
    let mut b = s2s_stream_as("b.test", a).await;

    // What b.test may say arrives...
    b.send(
        "<message xmlns='jabber:server' from='bob@b.test' to='alice@a.test' type='chat' id='real'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>real</payload></encrypted></message>",
    )
    .await;
    alice
        .client
        .expect("b.test's message", |e| e.attr("id") == Some("real"))
        .await;

    // ...a stanza claiming to come from c.test ends the stream.
    b.send(
        "<message xmlns='jabber:server' from='mallory@c.test' to='alice@a.test' type='chat' id='forged'>\
         <encrypted xmlns='eu.siacs.conversations.axolotl'><payload>forged</payload></encrypted></message>",
    )
    .await;
    let closed = b
        .read_to_close(std::time::Duration::from_secs(10))
        .await
        .expect("a.test closes the stream");
    assert!(closed.contains("<invalid-from"), "{closed}");
    alice
        .client
        .expect_none(
            "the forged message",
            std::time::Duration::from_secs(1),
            |e| e.attr("id") == Some("forged"),
        )
        .await;
}
