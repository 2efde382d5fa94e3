//! The group hub, driven by real MLS clients (tern-e2ee devices) over
//! real c2s connections.

mod common;

use common::mls::{condition, text_of, Member, GROUPS, NS};
use common::TestServer;
use tern_e2ee::wire::hub::{GroupInfoData, Log, StaleEpoch};
use tern_e2ee::Incoming;

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_orders_a_group_and_only_members_take_part() {
    let server = TestServer::start();
    let mut alice = Member::new(&server, "alice").await;
    let mut bob = Member::new(&server, "bob").await;
    let mut carol = Member::new(&server, "carol").await;
    bob.upload(2).await;

    let (id, group) = alice.create_group().await;
    assert!(group.ends_with(&format!("@{GROUPS}")), "{group}");
    let packages = alice.claim(&bob.bare()).await.expect("bob's packages");
    let data: Vec<Vec<u8>> = packages.key_packages.into_iter().map(|p| p.data).collect();
    let out = alice.device.add_members(&id, &data).await.expect("add");
    let accepted = alice.submit(&group, &out).await.expect("commit accepted");
    assert_eq!((accepted.seq, accepted.epoch), (1, 1));
    alice
        .device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");

    // Bob gets the Welcome and the commit; he joins after it.
    let (bob_id, welcome_seq) = bob.join_from_welcome(&group).await;
    assert_eq!(welcome_seq, 1);
    assert_eq!(bob_id, id);
    assert_eq!(bob.next_entry(&group).await.seq, Some(1));
    assert!(matches!(
        alice.receive(&group, &id).await,
        Incoming::Duplicate
    ));

    // Both talk; each message reaches both in the hub's order.
    alice.send_text(&group, &id, "hello bob").await;
    assert_eq!(text_of(&bob.receive(&group, &id).await), Some("hello bob"));
    assert!(matches!(
        alice.receive(&group, &id).await,
        Incoming::OwnEcho
    ));
    bob.send_text(&group, &id, "hello alice").await;
    assert_eq!(
        text_of(&alice.receive(&group, &id).await),
        Some("hello alice")
    );
    assert!(matches!(bob.receive(&group, &id).await, Incoming::OwnEcho));

    // Two commits in the same epoch: the first wins, the second is told
    // the hub's epoch, catches up and commits again.
    let first = alice.device.self_update(&id).await.expect("update");
    let second = bob.device.self_update(&id).await.expect("update");
    let won = alice
        .submit(&group, &first)
        .await
        .expect("first commit wins");
    let lost = bob
        .submit(&group, &second)
        .await
        .expect_err("second is stale");
    assert_eq!(condition(&lost).as_deref(), Some("conflict"));
    let stale = StaleEpoch::try_from(
        lost.get_child("stale-epoch", NS)
            .expect("stale-epoch")
            .clone(),
    )
    .expect("stale epoch");
    assert_eq!((stale.epoch, stale.seq), (won.epoch, won.seq));
    alice
        .device
        .commit_accepted(&id, won.seq)
        .await
        .expect("merge");
    bob.device.commit_refused(&id).await.expect("drop");
    let log = Log::try_from(
        bob.get(
            Some(&group),
            Log {
                after: Some(bob.device.last_seq(&id).await.expect("cursor")),
                max: None,
                entries: vec![],
                more: None,
            },
        )
        .await
        .expect("log"),
    )
    .expect("log");
    for entry in &log.entries {
        bob.device
            .process(&id, entry.seq.expect("seq"), &entry.data)
            .await
            .expect("catch up");
    }
    let retry = bob.device.self_update(&id).await.expect("update again");
    let accepted = bob.submit(&group, &retry).await.expect("retry accepted");
    bob.device
        .commit_accepted(&id, accepted.seq)
        .await
        .expect("merge");
    while alice.device.last_seq(&id).await.expect("cursor") < accepted.seq {
        alice.receive(&group, &id).await;
    }
    assert_eq!(
        alice.device.epoch(&id).await.expect("epoch"),
        bob.device.epoch(&id).await.expect("epoch")
    );
    bob.send_text(&group, &id, "same epoch").await;
    loop {
        let incoming = alice.receive(&group, &id).await;
        if let Some(text) = text_of(&incoming) {
            assert_eq!(text, "same epoch");
            break;
        }
    }

    // The whole log, in order, for members only.
    let log = Log::try_from(
        bob.get(
            Some(&group),
            Log {
                after: Some(0),
                max: Some(3),
                entries: vec![],
                more: None,
            },
        )
        .await
        .expect("log"),
    )
    .expect("log");
    let seqs: Vec<_> = log.entries.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(log.more, Some(true));
    let refused = carol
        .get(
            Some(&group),
            Log {
                after: Some(0),
                max: None,
                entries: vec![],
                more: None,
            },
        )
        .await
        .expect_err("not a member");
    assert_eq!(condition(&refused).as_deref(), Some("forbidden"));
    carol.send_mls(&group, b"not even MLS".to_vec()).await;
    let error = carol
        .client
        .expect("an error", |e| {
            e.name() == "message" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        condition(error.get_child("error", "jabber:client").expect("error")).as_deref(),
        Some("forbidden")
    );
    let info = GroupInfoData::try_from(
        alice
            .get(
                Some(&group),
                GroupInfoData {
                    epoch: None,
                    data: vec![],
                },
            )
            .await
            .expect("group info"),
    )
    .expect("group info");
    assert_eq!(
        info.epoch,
        Some(alice.device.epoch(&id).await.expect("epoch"))
    );
}

/// A group holds at most `groups.max_members` devices: every message fans
/// out to every member, so a commit adding more is refused with
/// policy-violation.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_is_bounded_in_devices() {
    let server = TestServer::start_with(common::ServerOptions {
        sections: "[groups]\nmax_members = 2\n".to_owned(),
        ..Default::default()
    });
    let mut carol = Member::new(&server, "carol").await;
    let mut dave = Member::new(&server, "dave").await;
    let mut erin = Member::new(&server, "erin").await;
    dave.upload(2).await;
    erin.upload(2).await;
    let (id, group) = carol.create_group().await;
    carol
        .add_user(&id, &group, &dave.bare())
        .await
        .expect("two devices");
    let refused = carol
        .add_user(&id, &group, &erin.bare())
        .await
        .expect_err("three devices");
    assert_eq!(
        condition(&refused).as_deref(),
        Some("policy-violation"),
        "{}",
        String::from(&refused)
    );
}
