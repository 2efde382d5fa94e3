//! The key directory, driven by real MLS clients (tern-e2ee devices) over
//! real c2s connections.

mod common;

use std::collections::HashSet;

use common::mls::{condition, Member, NS};
use common::{ServerOptions, TestServer, DOMAIN};
use tern_e2ee::wire::keys::{Count, Upload};

#[tokio::test(flavor = "multi_thread")]
async fn key_directory_hands_each_package_out_once_then_the_last_resort() {
    let server = TestServer::start_with(ServerOptions {
        sections: "[keys]\nmax_per_device = 6\nlow_watermark = 4\n".into(),
        ..ServerOptions::default()
    });
    let mut alice = Member::new(&server, "alice").await;
    let mut bob = Member::new(&server, "bob").await;
    let mut carol = Member::new(&server, "carol").await;

    let count = alice.upload(5).await;
    assert_eq!((count.remaining, count.low), (Some(5), Some(false)));
    // Over the limit: refused whole.
    let refused = alice
        .set(
            None,
            Upload::new(
                alice.device.name().device.to_string(),
                alice
                    .device
                    .generate_key_packages(2)
                    .await
                    .expect("packages"),
                None,
            ),
        )
        .await
        .expect_err("over the limit");
    assert_eq!(condition(&refused).as_deref(), Some("resource-constraint"));
    // Someone else's package is not accepted as alice's.
    let bobs = bob.device.generate_key_packages(1).await.expect("packages");
    let forged = alice
        .set(
            None,
            Upload::new(
                alice.device.name().device.to_string(),
                vec![bobs[0].clone()],
                None,
            ),
        )
        .await
        .expect_err("forged");
    assert_eq!(condition(&forged).as_deref(), Some("not-acceptable"));

    // Bob and carol claim at the same time, three rounds each: five
    // distinct single-use packages, then only the last-resort one.
    let alice_jid = alice.bare();
    let mut handed_out = Vec::new();
    for _ in 0..3 {
        let (b, c) = tokio::join!(bob.claim(&alice_jid), carol.claim(&alice_jid));
        for answer in [b, c] {
            let packages = answer.expect("claim answered");
            assert_eq!(packages.key_packages.len(), 1, "one device, one package");
            handed_out.push(packages.key_packages[0].clone());
        }
    }
    let single: Vec<_> = handed_out
        .iter()
        .filter(|p| p.last_resort != Some(true))
        .collect();
    assert_eq!(single.len(), 5);
    let distinct: HashSet<_> = single.iter().map(|p| p.data.clone()).collect();
    assert_eq!(distinct.len(), 5, "a package was handed out twice");
    assert_eq!(
        handed_out
            .iter()
            .filter(|p| p.last_resort == Some(true))
            .count(),
        1
    );
    let count = Count::try_from(
        alice
            .get(
                None,
                Count {
                    device: alice.device.name().device.to_string(),
                    remaining: None,
                    low: None,
                },
            )
            .await
            .expect("count"),
    )
    .expect("count");
    assert_eq!((count.remaining, count.low), (Some(0), Some(true)));
    // A claimed package is a real one: bob can add alice with it.
    let (id, _group) = bob.create_group().await;
    bob.device
        .add_members(&id, &[single[0].data.clone()])
        .await
        .expect("claimed package is usable");

    // Nobody's packages: a clear error.
    let none = alice
        .claim(&carol.bare())
        .await
        .expect_err("carol has none");
    assert_eq!(condition(&none).as_deref(), Some("item-not-found"));
    assert!(none.get_child("no-key-packages", NS).is_some());
    let unknown = alice
        .claim(&format!("nobody@{DOMAIN}"))
        .await
        .expect_err("no such user");
    assert_eq!(condition(&unknown).as_deref(), Some("service-unavailable"));
}
