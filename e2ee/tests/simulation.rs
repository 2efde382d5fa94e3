//! In-process simulations, no network: several users with several
//! devices, each device with its own SQLite store, and a minimal hub that
//! does what Tern's group hub does for ordering — one commit per epoch,
//! a sequence number per accepted message, the log for catching up.

use std::collections::HashMap;

use jid::BareJid;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::MlsMessageIn;
use tern_e2ee::envelope::{Content, Envelope, EnvelopeError};
use tern_e2ee::{ClientStore, CommitOut, ConversationId, Device, Incoming, ProcessError};

/// The ordering part of a group hub.
#[derive(Default)]
struct Hub {
    groups: HashMap<Vec<u8>, HubGroup>,
}

#[derive(Default)]
struct HubGroup {
    epoch: u64,
    log: Vec<Vec<u8>>,
}

impl Hub {
    fn create(&mut self, id: &ConversationId) {
        self.groups.insert(id.0.clone(), HubGroup::default());
    }

    /// Accepts the commit if it is for the current epoch; returns its
    /// position, or the current epoch when it is stale.
    fn commit(&mut self, id: &ConversationId, out: &CommitOut) -> Result<u64, u64> {
        let epoch = epoch_of(&out.commit);
        let group = self.groups.get_mut(&id.0).expect("group exists");
        if epoch != group.epoch {
            return Err(group.epoch);
        }
        group.epoch += 1;
        group.log.push(out.commit.clone());
        Ok(group.log.len() as u64)
    }

    fn send(&mut self, id: &ConversationId, data: Vec<u8>) -> u64 {
        let group = self.groups.get_mut(&id.0).expect("group exists");
        group.log.push(data);
        group.log.len() as u64
    }

    fn after(&self, id: &ConversationId, seq: u64) -> Vec<(u64, Vec<u8>)> {
        let group = &self.groups[&id.0];
        group
            .log
            .iter()
            .enumerate()
            .skip(seq as usize)
            .map(|(i, d)| (i as u64 + 1, d.clone()))
            .collect()
    }
}

fn epoch_of(message: &[u8]) -> u64 {
    let message = MlsMessageIn::tls_deserialize_exact(message).expect("MLS message");
    message
        .try_into_protocol_message()
        .expect("protocol message")
        .epoch()
        .as_u64()
}

/// A device with its own store in a temporary directory.
struct Dev {
    device: Device,
    dir: tempfile::TempDir,
}

impl Dev {
    async fn new(jid: &str) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let store = ClientStore::open(&dir.path().join("client.sqlite3")).unwrap();
        let device = Device::create(store, BareJid::new(jid).unwrap())
            .await
            .unwrap();
        Dev { device, dir }
    }

    async fn key_package(&self) -> Vec<u8> {
        self.device
            .generate_key_packages(1)
            .await
            .unwrap()
            .pop()
            .unwrap()
    }

    /// Closes the store and opens it again, as after a restart.
    async fn reopen(self) -> Dev {
        let Dev { device, dir } = self;
        device.store().close();
        drop(device);
        let store = ClientStore::open(&dir.path().join("client.sqlite3")).unwrap();
        Dev {
            device: Device::open(store).await.unwrap(),
            dir,
        }
    }

    /// Processes everything after this device's cursor, keeping errors.
    async fn catch_up_results(
        &self,
        hub: &Hub,
        id: &ConversationId,
    ) -> Vec<Result<Incoming, ProcessError>> {
        let from = self.device.last_seq(id).await.unwrap();
        let mut out = Vec::new();
        for (seq, data) in hub.after(id, from) {
            out.push(self.device.process(id, seq, &data).await);
        }
        out
    }

    /// Processes everything the hub has after this device's cursor.
    async fn catch_up(&self, hub: &Hub, id: &ConversationId) -> Vec<Incoming> {
        let from = self.device.last_seq(id).await.unwrap();
        let mut out = Vec::new();
        for (seq, data) in hub.after(id, from) {
            out.push(
                self.device
                    .process(id, seq, &data)
                    .await
                    .unwrap_or_else(|e| panic!("{} failed on seq {seq}: {e}", self.device.name())),
            );
        }
        out
    }

    fn jid(&self) -> BareJid {
        self.device.name().jid.clone()
    }
}

fn bodies(incoming: &[Incoming]) -> Vec<String> {
    incoming
        .iter()
        .filter_map(|i| match i {
            Incoming::Message { envelope, .. } => envelope.body().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// Creates a group on `creator`, registers it at the hub, and adds
/// `others` with one commit; every added device joins from the Welcome.
async fn group_of(hub: &mut Hub, creator: &Dev, others: &[&Dev]) -> ConversationId {
    let (id, _group_info) = creator.device.create_conversation().await.unwrap();
    hub.create(&id);
    if others.is_empty() {
        return id;
    }
    let mut packages = Vec::new();
    for other in others {
        packages.push(other.key_package().await);
    }
    let out = creator.device.add_members(&id, &packages).await.unwrap();
    let seq = hub.commit(&id, &out).expect("first commit accepted");
    creator.device.commit_accepted(&id, seq).await.unwrap();
    let welcome = out.welcome.expect("welcome");
    for other in others {
        let (joined, _) = other
            .device
            .join(&welcome, seq, &address_of(&id))
            .await
            .unwrap();
        assert_eq!(joined, id);
    }
    id
}

/// The group's address at a hub on `groups.a.example`.
fn address_of(id: &ConversationId) -> BareJid {
    BareJid::new(&format!("{}@groups.a.example", id.to_hex())).unwrap()
}

/// Alice, Bob and Carol, one device each.
async fn trio() -> (Dev, Dev, Dev) {
    (
        Dev::new("alice@a.example").await,
        Dev::new("bob@b.example").await,
        Dev::new("carol@c.example").await,
    )
}

async fn say(hub: &mut Hub, dev: &Dev, id: &ConversationId, text: &str) -> u64 {
    let (message, _) = dev
        .device
        .send(id, vec![Content::Body(text.into())])
        .await
        .unwrap();
    hub.send(id, message)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_users_with_two_devices_each_all_decrypt_everything() {
    let mut hub = Hub::default();
    let devs = [
        Dev::new("alice@a.example").await,
        Dev::new("alice@a.example").await,
        Dev::new("bob@b.example").await,
        Dev::new("bob@b.example").await,
        Dev::new("carol@c.example").await,
        Dev::new("carol@c.example").await,
    ];
    let others: Vec<&Dev> = devs[1..].iter().collect();
    let id = group_of(&mut hub, &devs[0], &others).await;
    assert_eq!(devs[3].device.members(&id).await.unwrap().len(), 6);

    for (i, dev) in devs.iter().enumerate() {
        say(&mut hub, dev, &id, &format!("hello from device {i}")).await;
    }
    for (i, dev) in devs.iter().enumerate() {
        let got = bodies(&dev.catch_up(&hub, &id).await);
        let expected: Vec<String> = (0..6)
            .filter(|j| *j != i)
            .map(|j| format!("hello from device {j}"))
            .collect();
        assert_eq!(got, expected, "device {i}");
    }
    // Messages from the other device of the same user carry the right sender.
    let (message, envelope) = devs[1]
        .device
        .send(&id, vec![Content::Body("sync".into())])
        .await
        .unwrap();
    let seq = hub.send(&id, message.clone());
    match devs[0].device.process(&id, seq, &message).await.unwrap() {
        Incoming::Message {
            sender,
            envelope: got,
        } => {
            assert_eq!(sender, *devs[1].device.name());
            assert_eq!(got, envelope);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_user_reads_nothing_after_removal_and_again_after_re_adding() {
    let mut hub = Hub::default();
    let (alice, bob, carol) = trio().await;
    let id = group_of(&mut hub, &alice, &[&bob, &carol]).await;
    say(&mut hub, &alice, &id, "before").await;

    let out = alice.device.remove_user(&id, &carol.jid()).await.unwrap();
    let seq = hub.commit(&id, &out).unwrap();
    alice.device.commit_accepted(&id, seq).await.unwrap();
    let after_seq = say(&mut hub, &alice, &id, "after removal").await;

    // Carol processes the removal, learns she was evicted, and cannot read on.
    let commit_seq = after_seq - 1;
    for (seq, data) in hub.after(&id, carol.device.last_seq(&id).await.unwrap()) {
        if seq <= commit_seq {
            carol.device.process(&id, seq, &data).await.unwrap();
        }
    }
    assert!(!carol.device.is_member(&id).await.unwrap());
    let (_, data) = hub.after(&id, commit_seq).remove(0);
    assert!(
        carol.device.process(&id, after_seq, &data).await.is_err(),
        "carol decrypted after removal"
    );
    assert_eq!(
        bodies(&bob.catch_up(&hub, &id).await),
        ["before", "after removal"]
    );
    assert_eq!(bob.device.members(&id).await.unwrap().len(), 2);

    // Re-added with a fresh key package, carol reads what follows.
    let out = bob
        .device
        .add_members(&id, &[carol.key_package().await])
        .await
        .unwrap();
    let seq = hub.commit(&id, &out).unwrap();
    bob.device.commit_accepted(&id, seq).await.unwrap();
    carol
        .device
        .join(out.welcome.as_ref().unwrap(), seq, &address_of(&id))
        .await
        .unwrap();
    alice.catch_up(&hub, &id).await;
    say(&mut hub, &alice, &id, "welcome back").await;
    assert_eq!(bodies(&carol.catch_up(&hub, &id).await), ["welcome back"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commits_the_second_recovers_through_the_stale_path() {
    let mut hub = Hub::default();
    let (alice, bob, carol) = trio().await;
    let id = group_of(&mut hub, &alice, &[&bob, &carol]).await;
    bob.catch_up(&hub, &id).await;

    // Both commit in the same epoch; the hub orders alice's first.
    let from_alice = alice.device.self_update(&id).await.unwrap();
    let from_bob = bob.device.self_update(&id).await.unwrap();
    let seq = hub.commit(&id, &from_alice).unwrap();
    alice.device.commit_accepted(&id, seq).await.unwrap();
    let current = hub.commit(&id, &from_bob).unwrap_err();
    assert_eq!(current, from_bob.epoch + 1);

    // Bob drops his commit, processes alice's, and commits again.
    bob.device.commit_refused(&id).await.unwrap();
    bob.catch_up(&hub, &id).await;
    let retry = bob.device.self_update(&id).await.unwrap();
    let seq = hub.commit(&id, &retry).expect("fresh commit accepted");
    bob.device.commit_accepted(&id, seq).await.unwrap();
    say(&mut hub, &bob, &id, "after the race").await;

    assert_eq!(bodies(&alice.catch_up(&hub, &id).await), ["after the race"]);
    assert_eq!(bodies(&carol.catch_up(&hub, &id).await), ["after the race"]);
    let epochs = [
        alice.device.epoch(&id).await.unwrap(),
        bob.device.epoch(&id).await.unwrap(),
        carol.device.epoch(&id).await.unwrap(),
    ];
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
    // The echo of bob's own commit is recognised, not an error.
    assert!(matches!(
        bob.catch_up(&hub, &id).await.as_slice(),
        [] | [Incoming::OwnEcho, ..]
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_member_catches_up_on_fifty_commits_and_messages() {
    let mut hub = Hub::default();
    let (alice, bob, carol) = trio().await;
    let id = group_of(&mut hub, &alice, &[&bob, &carol]).await;
    bob.catch_up(&hub, &id).await;
    let mut expected = Vec::new();
    for round in 0..50 {
        let committer = if round % 2 == 0 { &alice } else { &bob };
        committer.catch_up(&hub, &id).await;
        let out = committer.device.self_update(&id).await.unwrap();
        let seq = hub.commit(&id, &out).unwrap();
        committer.device.commit_accepted(&id, seq).await.unwrap();
        let text = format!("message {round}");
        say(&mut hub, committer, &id, &text).await;
        expected.push(text);
    }
    let got = carol.catch_up(&hub, &id).await;
    for (i, g) in got.iter().enumerate() {
        if !matches!(g, Incoming::Message { .. }) {
            eprintln!("{i}: {g:?}");
        }
    }
    assert_eq!(bodies(&got), expected);
    assert_eq!(
        got.iter()
            .filter(|i| matches!(i, Incoming::Commit { .. }))
            .count(),
        50
    );
    alice.catch_up(&hub, &id).await;
    assert_eq!(
        carol.device.epoch(&id).await.unwrap(),
        alice.device.epoch(&id).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_closing_and_reopening_the_store() {
    let mut hub = Hub::default();
    let (alice, bob) = (
        Dev::new("alice@a.example").await,
        Dev::new("bob@b.example").await,
    );
    let id = group_of(&mut hub, &alice, &[&bob]).await;
    say(&mut hub, &alice, &id, "one").await;
    assert_eq!(bodies(&bob.catch_up(&hub, &id).await), ["one"]);

    // Alice's own message comes back only after she restarted.
    let echo_seq = say(&mut hub, &alice, &id, "before the restart").await;
    let bob = bob.reopen().await;
    let alice = alice.reopen().await;
    let (_, echo) = hub.after(&id, echo_seq - 1).remove(0);
    assert_eq!(
        alice.device.process(&id, echo_seq, &echo).await.unwrap(),
        Incoming::OwnEcho
    );
    let history = alice.device.store().history(&id.0, 10).unwrap();
    let placed = history
        .iter()
        .find(|m| m.envelope.body() == Some("before the restart"))
        .unwrap();
    assert_eq!(
        placed.seq,
        Some(echo_seq),
        "own message placed at its log position"
    );
    assert_eq!(bob.device.last_seq(&id).await.unwrap(), 2);
    assert_eq!(
        bodies(&bob.catch_up(&hub, &id).await),
        ["before the restart"]
    );
    let out = bob.device.self_update(&id).await.unwrap();
    let seq = hub.commit(&id, &out).unwrap();
    bob.device.commit_accepted(&id, seq).await.unwrap();
    say(&mut hub, &bob, &id, "two").await;
    assert_eq!(bodies(&alice.catch_up(&hub, &id).await), ["two"]);
    // A reopened device still knows its own fingerprint and identity.
    let again = alice.reopen().await;
    assert_eq!(again.device.members(&id).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_are_rejected_with_typed_errors_and_the_group_stays_usable() {
    let mut hub = Hub::default();
    let (alice, bob, carol) = trio().await;
    let id = group_of(&mut hub, &alice, &[&bob, &carol]).await;
    bob.catch_up(&hub, &id).await;
    carol.catch_up(&hub, &id).await;

    // Tampered ciphertext.
    let (mut message, _) = alice
        .device
        .send(&id, vec![Content::Body("secret".into())])
        .await
        .unwrap();
    let last = message.len() - 20;
    message[last] ^= 0x55;
    let seq = hub.send(&id, message);
    let (_, data) = hub.after(&id, seq - 1).remove(0);
    assert!(matches!(
        bob.device.process(&id, seq, &data).await,
        Err(ProcessError::Tampered)
    ));

    // A replayed message under a new position.
    let (message, _) = alice
        .device
        .send(&id, vec![Content::Body("once".into())])
        .await
        .unwrap();
    let first = hub.send(&id, message.clone());
    let replayed = hub.send(&id, message.clone());
    assert!(matches!(
        bob.device.process(&id, first, &message).await,
        Ok(Incoming::Message { .. })
    ));
    let replay = bob.device.process(&id, replayed, &message).await;
    assert!(matches!(replay, Err(ProcessError::Replay)), "{replay:?}");
    // The same position twice is a duplicate, not an error.
    assert!(matches!(
        bob.device.process(&id, first, &message).await,
        Ok(Incoming::Duplicate)
    ));

    // An envelope whose from is not the MLS sender.
    let forged = Envelope::new(carol.jid(), vec![Content::Body("I am carol".into())]);
    let message = alice.device.send_envelope(&id, &forged).await.unwrap();
    let seq = hub.send(&id, message.clone());
    let result = bob.device.process(&id, seq, &message).await;
    assert!(
        matches!(
            result,
            Err(ProcessError::Envelope(EnvelopeError::SenderMismatch { .. }))
        ),
        "{result:?}"
    );

    // A message from an epoch older than the retention window.
    let (old, _) = carol
        .device
        .send(&id, vec![Content::Body("stale".into())])
        .await
        .unwrap();
    for _ in 0..=tern_e2ee::conversation::MAX_PAST_EPOCHS {
        alice.catch_up(&hub, &id).await;
        let out = alice.device.self_update(&id).await.unwrap();
        let seq = hub.commit(&id, &out).unwrap();
        alice.device.commit_accepted(&id, seq).await.unwrap();
    }
    bob.catch_up(&hub, &id).await;
    let seq = hub.send(&id, old.clone());
    let result = bob.device.process(&id, seq, &old).await;
    assert!(matches!(result, Err(ProcessError::TooOld(_))), "{result:?}");

    // Carol meets the same bad entries, with the same errors, and goes on.
    let carol_saw = carol.catch_up_results(&hub, &id).await;
    assert!(matches!(carol_saw[0], Err(ProcessError::Tampered)));
    assert!(carol_saw
        .iter()
        .any(|r| matches!(r, Err(ProcessError::Replay))));
    assert!(carol_saw
        .iter()
        .any(|r| matches!(r, Err(ProcessError::Envelope(_)))));

    // After all of that the group works for everyone.
    let alice_saw = alice.catch_up_results(&hub, &id).await;
    assert!(
        matches!(alice_saw.last(), Some(Err(ProcessError::TooOld(_)))),
        "{alice_saw:?}"
    );
    say(&mut hub, &alice, &id, "still fine").await;
    assert_eq!(bodies(&bob.catch_up(&hub, &id).await), ["still fine"]);
    assert_eq!(bodies(&carol.catch_up(&hub, &id).await), ["still fine"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn leaving_and_key_package_bookkeeping() {
    let mut hub = Hub::default();
    let (alice, bob) = (
        Dev::new("alice@a.example").await,
        Dev::new("bob@b.example").await,
    );
    bob.device.generate_key_packages(4).await.unwrap();
    bob.device.generate_last_resort_key_package().await.unwrap();
    let before = bob.device.unconsumed_key_packages().await.unwrap();
    let id = group_of(&mut hub, &alice, &[&bob]).await;
    // group_of generated one more and consumed it.
    assert_eq!(bob.device.unconsumed_key_packages().await.unwrap(), before);
    assert_eq!(
        bob.device.key_packages_to_replenish(10, 20).await.unwrap(),
        16
    );

    // Bob leaves: his proposal is committed by alice.
    let proposals = bob.device.leave(&id).await.unwrap();
    assert_eq!(proposals.len(), 1, "bob has one device");
    let seq = hub.send(&id, proposals.into_iter().next().unwrap());
    assert!(matches!(
        alice.catch_up(&hub, &id).await.as_slice(),
        [Incoming::Proposal]
    ));
    let out = alice.device.commit_pending_proposals(&id).await.unwrap();
    let commit_seq = hub.commit(&id, &out).unwrap();
    alice.device.commit_accepted(&id, commit_seq).await.unwrap();
    assert_eq!(alice.device.members(&id).await.unwrap().len(), 1);
    let _ = seq;
    let got = bob.catch_up(&hub, &id).await;
    assert!(
        matches!(got.last(), Some(Incoming::Commit { evicted: true, .. })),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_search_known_devices_and_verification() {
    let mut hub = Hub::default();
    let (alice, bob) = (
        Dev::new("alice@a.example").await,
        Dev::new("bob@b.example").await,
    );
    let id = group_of(&mut hub, &alice, &[&bob]).await;
    say(&mut hub, &alice, &id, "the quick brown fox").await;
    say(&mut hub, &bob, &id, "jumps over the lazy dog").await;
    bob.catch_up(&hub, &id).await;

    let store = bob.device.store();
    let history = store.history(&id.0, 10).unwrap();
    let texts: Vec<_> = history.iter().filter_map(|m| m.envelope.body()).collect();
    assert_eq!(texts, ["the quick brown fox", "jumps over the lazy dog"]);
    let found = store.search("fox", 10).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].envelope.body(), Some("the quick brown fox"));
    assert!(found[0].sender.starts_with("alice@a.example#"));
    assert!(store.search("elephant", 10).unwrap().is_empty());

    // Bob saw alice's device when he joined; he verifies it.
    let devices = store.known_devices("alice@a.example").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].fingerprint, alice.device.fingerprint());
    assert!(!devices[0].verified);
    assert!(store
        .set_verified("alice@a.example", &devices[0].device, true)
        .unwrap());
    assert!(!store
        .set_verified("alice@a.example", "0000000000000000", true)
        .unwrap());

    // Alice adds a second device: bob learns of it, unverified.
    let alice2 = Dev::new("alice@a.example").await;
    let out = alice
        .device
        .add_members(&id, &[alice2.key_package().await])
        .await
        .unwrap();
    let seq = hub.commit(&id, &out).unwrap();
    alice.device.commit_accepted(&id, seq).await.unwrap();
    let got = bob.catch_up(&hub, &id).await;
    assert!(
        matches!(&got[..], [Incoming::Commit { added, .. }] if added[0] == *alice2.device.name())
    );
    let devices = store.known_devices("alice@a.example").unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices.iter().filter(|d| d.verified).count(), 1);

    store.add_contact("alice@a.example", Some("Alice")).unwrap();
    assert_eq!(
        store.contacts().unwrap(),
        [("alice@a.example".to_owned(), Some("Alice".to_owned()))]
    );
}

/// A Welcome made outside any Tern device, by an attacker who claimed one
/// of `victim`'s key packages: a group with the given id, the victim
/// added.
fn attackers_welcome(group_id: &[u8], victim_package: &[u8]) -> Vec<u8> {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;

    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(tern_e2ee::CIPHERSUITE.signature_algorithm()).unwrap();
    signer.store(provider.storage()).unwrap();
    let credential = BasicCredential::new(b"mallory@evil.example#00112233aabbccdd".to_vec());
    let with_key = CredentialWithKey {
        credential: credential.into(),
        signature_key: signer.public().into(),
    };
    let mut group = MlsGroup::new_with_group_id(
        &provider,
        &signer,
        &tern_e2ee::conversation::create_config(),
        GroupId::from_slice(group_id),
        with_key,
    )
    .unwrap();
    let package = tern_e2ee::verify::verify_key_package(victim_package)
        .unwrap()
        .package;
    let (_, welcome, _) = group.add_members(&provider, &signer, &[package]).unwrap();
    group.merge_pending_commit(&provider).unwrap();
    welcome.tls_serialize_detached().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn welcomes_that_would_hijack_or_misname_a_conversation_are_refused() {
    let mut hub = Hub::default();
    let (alice, bob, _) = trio().await;
    let id = group_of(&mut hub, &alice, &[&bob]).await;
    say(&mut hub, &alice, &id, "before").await;
    assert_eq!(bodies(&bob.catch_up(&hub, &id).await), ["before"]);

    // The same group id, from an attacker holding a fresh key package of
    // bob's: joining would replace the conversation bob is in.
    let hijack = attackers_welcome(&id.0, &bob.key_package().await);
    let refused = bob.device.join(&hijack, 1, &address_of(&id)).await;
    assert!(
        matches!(refused, Err(tern_e2ee::Error::WelcomeForActiveGroup)),
        "{refused:?}"
    );

    // A group whose id is not the one its address names.
    let other = attackers_welcome(&[7u8; 16], &bob.key_package().await);
    let refused = bob.device.join(&other, 1, &address_of(&id)).await;
    assert!(
        matches!(refused, Err(tern_e2ee::Error::WelcomeForAnotherGroup(_))),
        "{refused:?}"
    );

    // The conversation is as it was: both ways still work.
    say(&mut hub, &alice, &id, "after").await;
    assert_eq!(bodies(&bob.catch_up(&hub, &id).await), ["after"]);
    say(&mut hub, &bob, &id, "and back").await;
    assert_eq!(bodies(&alice.catch_up(&hub, &id).await), ["and back"]);

    // A Welcome with the right address for a group bob is not in joins.
    let new_id = ConversationId(vec![9u8; 16]);
    let invited = attackers_welcome(&new_id.0, &bob.key_package().await);
    let (joined, _) = bob
        .device
        .join(&invited, 1, &address_of(&new_id))
        .await
        .expect("a new conversation");
    assert_eq!(joined, new_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn claimed_key_packages_must_be_the_users_published_devices() {
    use tern_e2ee::verify::published_packages;
    use tern_e2ee::wire::devices::{Device as Listed, DeviceList};
    let (alice, bob, _) = trio().await;
    let listed = |dev: &Dev| Listed {
        id: dev.device.name().device.to_string(),
        key: dev.device.signature_key().to_vec(),
        label: None,
    };
    let bobs = DeviceList {
        devices: vec![listed(&bob)],
    };
    let bob_jid = bob.device.name().jid.clone();
    let package = bob.key_package().await;

    let (kept, refused) = published_packages(&bob_jid, &bobs, vec![package.clone()]);
    assert_eq!((kept.len(), refused.len()), (1, 0), "{refused:?}");

    // alice's package handed out as bob's, a device bob never published,
    // a published id with another key, garbage.
    let (kept, refused) = published_packages(&bob_jid, &bobs, vec![alice.key_package().await]);
    assert!(
        kept.is_empty() && refused[0].contains("claimed for"),
        "{refused:?}"
    );
    let (kept, refused) =
        published_packages(&bob_jid, &DeviceList::default(), vec![package.clone()]);
    assert!(
        kept.is_empty() && refused[0].contains("device list"),
        "{refused:?}"
    );
    let mut wrong_key = listed(&bob);
    wrong_key.key = listed(&alice).key;
    let (kept, refused) = published_packages(
        &bob_jid,
        &DeviceList {
            devices: vec![wrong_key],
        },
        vec![package],
    );
    assert!(kept.is_empty() && refused[0].contains("key"), "{refused:?}");
    let (kept, refused) = published_packages(&bob_jid, &bobs, vec![b"garbage".to_vec()]);
    assert!(kept.is_empty() && refused.len() == 1);
}
