//! Tern's MLS layer against raw openmls, in the same run:
//!
//! - `message/{tern,openmls_sqlx,openmls}/N`: encrypt and decrypt one
//!   1 KiB envelope in a group of N members. `tern`: envelope, padding, one
//!   SQLite transaction per side with MLS state, history and cursor;
//!   `openmls_sqlx`: raw openmls on openmls_sqlx_storage (SQLite set up
//!   like Tern's store), one transaction per side: openmls with
//!   off-the-shelf durable storage; `openmls`: raw openmls with in-memory
//!   state (nothing survives a restart);
//! - `commit_add/{tern,openmls}/N`: a commit adding one member;
//! - `process_add/{tern,openmls}/N`: another member processing it.
//!
//! Run: `cargo bench -p tern-e2ee --bench mls`. Groups of 2, 100 and 1,000
//! (commits: 100 and 1,000). Members other than the two measured devices
//! are joined from raw key packages: they only need to exist in the tree.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jid::BareJid;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_sqlx_storage::SqliteStorageProvider;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use tern_e2ee::envelope::Content;
use tern_e2ee::identity::{DeviceId, DeviceName};
use tern_e2ee::{ClientStore, ConversationId, Device, CIPHERSUITE};
use tokio::runtime::Runtime;

const MESSAGE_SIZES: [usize; 3] = [2, 100, 1000];
const COMMIT_SIZES: [usize; 2] = [100, 1000];
/// A body that makes a 1 KiB envelope (the envelope's own fields and
/// padding make up the rest).
const BODY_CHARS: usize = 700;

// ----- raw openmls ----------------------------------------------------------

struct RawMember {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl RawMember {
    fn new(name: &str) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let jid = BareJid::new(&format!("{name}@bench.example")).unwrap();
        let identity = DeviceName {
            jid,
            device: DeviceId::random(),
        }
        .to_credential_identity();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider,
            signer,
            credential,
        }
    }

    fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap()
            .key_package()
            .clone()
    }

    fn serialized_key_package(&self) -> Vec<u8> {
        MlsMessageOut::from(self.key_package())
            .tls_serialize_detached()
            .unwrap()
    }
}

/// Raw openmls runs on the groups Tern uses: same ciphersuite, wire
/// format, retention of past epochs and sender ratchet.
fn raw_config() -> MlsGroupCreateConfig {
    tern_e2ee::conversation::create_config()
}

fn raw_join_config() -> MlsGroupJoinConfig {
    tern_e2ee::conversation::join_config()
}

fn parse_welcome(bytes: &[u8]) -> Welcome {
    match MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
    {
        MlsMessageBodyIn::Welcome(welcome) => welcome,
        _ => panic!("not a welcome"),
    }
}

/// Silent members: they only sit in the tree (each needs its own key).
fn silent_key_packages(count: usize) -> Vec<KeyPackage> {
    (0..count)
        .map(|i| RawMember::new(&format!("silent{i}")).key_package())
        .collect()
}

struct RawPair {
    a: RawMember,
    b: RawMember,
    group_a: MlsGroup,
    group_b: MlsGroup,
}

fn raw_pair(size: usize) -> RawPair {
    let a = RawMember::new("alice");
    let b = RawMember::new("bob");
    let mut group_a =
        MlsGroup::new(&a.provider, &a.signer, &raw_config(), a.credential.clone()).unwrap();
    let mut packages = vec![b.key_package()];
    packages.extend(silent_key_packages(size - 2));
    let (_, welcome, _) = group_a
        .add_members(&a.provider, &a.signer, &packages)
        .unwrap();
    group_a.merge_pending_commit(&a.provider).unwrap();
    let welcome = parse_welcome(&welcome.tls_serialize_detached().unwrap());
    let join = raw_join_config();
    let group_b = StagedWelcome::new_from_welcome(&b.provider, &join, welcome, None)
        .unwrap()
        .into_group(&b.provider)
        .unwrap();
    RawPair {
        a,
        b,
        group_a,
        group_b,
    }
}

fn raw_process(
    group: &mut MlsGroup,
    provider: &OpenMlsRustCrypto,
    bytes: &[u8],
) -> ProcessedMessageContent {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).unwrap();
    group
        .process_message(provider, message.try_into_protocol_message().unwrap())
        .unwrap()
        .into_content()
}

// ----- raw openmls on durable SQLite storage ---------------------------------------

/// openmls_sqlx_storage's codec: JSON, as openmls' own providers use.
#[derive(Default)]
struct JsonCodec;

impl openmls_sqlx_storage::Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// openmls' provider over one sqlx transaction.
struct SqlxProvider<'a> {
    crypto: &'a openmls_rust_crypto::RustCrypto,
    storage: SqliteStorageProvider<'a, JsonCodec>,
}

impl<'a> SqlxProvider<'a> {
    fn new(
        crypto: &'a openmls_rust_crypto::RustCrypto,
        tx: &'a mut sqlx::SqliteConnection,
    ) -> Self {
        Self {
            crypto,
            storage: SqliteStorageProvider::new(tx),
        }
    }
}

impl<'a> OpenMlsProvider for SqlxProvider<'a> {
    type CryptoProvider = openmls_rust_crypto::RustCrypto;
    type RandProvider = openmls_rust_crypto::RustCrypto;
    type StorageProvider = SqliteStorageProvider<'a, JsonCodec>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

/// A SQLite database set up as Tern's client store is (WAL, synchronous
/// NORMAL) with openmls_sqlx_storage's tables.
async fn sqlx_store(dir: &tempfile::TempDir) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("openmls.sqlite3"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    tokio::task::block_in_place(|| {
        SqliteStorageProvider::<JsonCodec>::new(&mut conn)
            .run_migrations()
            .unwrap()
    });
    drop(conn);
    pool
}

/// Two raw openmls members on openmls_sqlx_storage (one database each,
/// one transaction per operation, groups kept in memory): openmls with
/// off-the-shelf durable storage, without Tern's layer.
struct StoredPair {
    a: (RawMember, SqlitePool, MlsGroup, tempfile::TempDir),
    b: (RawMember, SqlitePool, MlsGroup, tempfile::TempDir),
    crypto: openmls_rust_crypto::RustCrypto,
}

async fn stored_pair(size: usize) -> StoredPair {
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (sqlx_store(&dir_a).await, sqlx_store(&dir_b).await);
    let (a, b) = (RawMember::new("alice"), RawMember::new("bob"));
    let mut tx = store_b.begin().await.unwrap();
    let package_b = {
        let provider = SqlxProvider::new(&crypto, &mut tx);
        b.signer.store(provider.storage()).unwrap();
        KeyPackage::builder()
            .build(CIPHERSUITE, &provider, &b.signer, b.credential.clone())
            .unwrap()
            .key_package()
            .clone()
    };
    tx.commit().await.unwrap();
    let mut packages = vec![package_b];
    packages.extend(silent_key_packages(size - 2));
    let mut tx = store_a.begin().await.unwrap();
    let (group_a, welcome) = {
        let provider = SqlxProvider::new(&crypto, &mut tx);
        let mut group =
            MlsGroup::new(&provider, &a.signer, &raw_config(), a.credential.clone()).unwrap();
        let (_, welcome, _) = group.add_members(&provider, &a.signer, &packages).unwrap();
        group.merge_pending_commit(&provider).unwrap();
        (group, welcome.tls_serialize_detached().unwrap())
    };
    tx.commit().await.unwrap();
    let welcome = parse_welcome(&welcome);
    let join = raw_join_config();
    let mut tx = store_b.begin().await.unwrap();
    let group_b = {
        let provider = SqlxProvider::new(&crypto, &mut tx);
        StagedWelcome::new_from_welcome(&provider, &join, welcome, None)
            .unwrap()
            .into_group(&provider)
            .unwrap()
    };
    tx.commit().await.unwrap();
    StoredPair {
        a: (a, store_a, group_a, dir_a),
        b: (b, store_b, group_b, dir_b),
        crypto,
    }
}

impl StoredPair {
    async fn round(&mut self, payload: &[u8]) {
        let mut tx = self.a.1.begin().await.unwrap();
        let bytes = {
            let provider = SqlxProvider::new(&self.crypto, &mut tx);
            tokio::task::block_in_place(|| {
                self.a
                    .2
                    .create_message(&provider, &self.a.0.signer, payload)
                    .unwrap()
                    .tls_serialize_detached()
                    .unwrap()
            })
        };
        tx.commit().await.unwrap();
        let mut tx = self.b.1.begin().await.unwrap();
        {
            let provider = SqlxProvider::new(&self.crypto, &mut tx);
            tokio::task::block_in_place(|| {
                let message = MlsMessageIn::tls_deserialize_exact(&bytes).unwrap();
                self.b
                    .2
                    .process_message(&provider, message.try_into_protocol_message().unwrap())
                    .unwrap();
            });
        }
        tx.commit().await.unwrap();
    }
}

// ----- Tern ---------------------------------------------------------------------

struct TernPair {
    sender: Device,
    receiver: Device,
    id: ConversationId,
    seq: u64,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn tern_device(name: &str) -> (Device, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = ClientStore::open(&dir.path().join("client.sqlite3")).unwrap();
    let device = Device::create(
        store,
        BareJid::new(&format!("{name}@bench.example")).unwrap(),
    )
    .await
    .unwrap();
    (device, dir)
}

async fn tern_pair(size: usize) -> TernPair {
    let (sender, dir_a) = tern_device("alice").await;
    let (receiver, dir_b) = tern_device("bob").await;
    let (id, _) = sender.create_conversation().await.unwrap();
    let mut packages = receiver.generate_key_packages(1).await.unwrap();
    packages.extend(
        silent_key_packages(size - 2)
            .into_iter()
            .map(|kp| MlsMessageOut::from(kp).tls_serialize_detached().unwrap()),
    );
    let out = sender.add_members(&id, &packages).await.unwrap();
    sender.commit_accepted(&id, 1).await.unwrap();
    let address = jid::BareJid::new(&format!("{}@groups.bench.example", id.to_hex())).unwrap();
    receiver
        .join(out.welcome.as_ref().unwrap(), 1, &address)
        .await
        .unwrap();
    TernPair {
        sender,
        receiver,
        id,
        seq: 1,
        _dirs: (dir_a, dir_b),
    }
}

// ----- benchmarks ------------------------------------------------------------------

fn messages(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let body = "m".repeat(BODY_CHARS);
    let mut group = c.benchmark_group("message");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for size in MESSAGE_SIZES {
        let mut raw = raw_pair(size);
        let payload = vec![0x42u8; 1024];
        group.bench_with_input(BenchmarkId::new("openmls", size), &size, |bench, _| {
            bench.iter(|| {
                let out = raw
                    .group_a
                    .create_message(&raw.a.provider, &raw.a.signer, &payload)
                    .unwrap();
                let bytes = out.tls_serialize_detached().unwrap();
                raw_process(&mut raw.group_b, &raw.b.provider, &bytes)
            })
        });
        let mut stored = runtime.block_on(stored_pair(size));
        group.bench_with_input(BenchmarkId::new("openmls_sqlx", size), &size, |bench, _| {
            bench.iter(|| runtime.block_on(stored.round(&payload)))
        });
        let mut tern = runtime.block_on(tern_pair(size));
        group.bench_with_input(BenchmarkId::new("tern", size), &size, |bench, _| {
            bench.iter(|| {
                runtime.block_on(async {
                    let (message, _) = tern
                        .sender
                        .send(&tern.id, vec![Content::Body(body.clone())])
                        .await
                        .unwrap();
                    tern.seq += 1;
                    tern.receiver
                        .process(&tern.id, tern.seq, &message)
                        .await
                        .unwrap()
                })
            })
        });
    }
    group.finish();
}

/// Times adding one member and processing that commit, removing the member
/// again (untimed) so that every iteration starts from the same size.
fn commits(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let mut group = c.benchmark_group("commit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    for size in COMMIT_SIZES {
        let newcomer = RawMember::new("newcomer");
        let mut raw = raw_pair(size);
        let mut process_time = Duration::ZERO;
        let mut processed = 0u32;
        group.bench_with_input(BenchmarkId::new("openmls_add", size), &size, |bench, _| {
            bench.iter_custom(|iters| {
                let mut commit_time = Duration::ZERO;
                for _ in 0..iters {
                    let package = newcomer.key_package();
                    let start = Instant::now();
                    let (commit, _, _) = raw
                        .group_a
                        .add_members(&raw.a.provider, &raw.a.signer, &[package])
                        .unwrap();
                    raw.group_a.merge_pending_commit(&raw.a.provider).unwrap();
                    commit_time += start.elapsed();
                    let bytes = commit.tls_serialize_detached().unwrap();
                    let start = Instant::now();
                    if let ProcessedMessageContent::StagedCommitMessage(staged) =
                        raw_process(&mut raw.group_b, &raw.b.provider, &bytes)
                    {
                        raw.group_b
                            .merge_staged_commit(&raw.b.provider, *staged)
                            .unwrap();
                    }
                    process_time += start.elapsed();
                    processed += 1;
                    // Back to the original size, untimed.
                    let last = raw.group_a.members().last().unwrap().index;
                    let (remove, _, _) = raw
                        .group_a
                        .remove_members(&raw.a.provider, &raw.a.signer, &[last])
                        .unwrap();
                    raw.group_a.merge_pending_commit(&raw.a.provider).unwrap();
                    let bytes = remove.tls_serialize_detached().unwrap();
                    if let ProcessedMessageContent::StagedCommitMessage(staged) =
                        raw_process(&mut raw.group_b, &raw.b.provider, &bytes)
                    {
                        raw.group_b
                            .merge_staged_commit(&raw.b.provider, *staged)
                            .unwrap();
                    }
                }
                commit_time
            })
        });
        report("openmls", size, process_time, processed);

        let mut tern = runtime.block_on(tern_pair(size));
        let mut process_time = Duration::ZERO;
        let mut processed = 0u32;
        group.bench_with_input(BenchmarkId::new("tern_add", size), &size, |bench, _| {
            bench.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut commit_time = Duration::ZERO;
                    let newcomer_jid = BareJid::new("newcomer@bench.example").unwrap();
                    for _ in 0..iters {
                        let package = newcomer.serialized_key_package();
                        let start = Instant::now();
                        let out = tern.sender.add_members(&tern.id, &[package]).await.unwrap();
                        tern.seq += 1;
                        tern.sender
                            .commit_accepted(&tern.id, tern.seq)
                            .await
                            .unwrap();
                        commit_time += start.elapsed();
                        let start = Instant::now();
                        tern.receiver
                            .process(&tern.id, tern.seq, &out.commit)
                            .await
                            .unwrap();
                        process_time += start.elapsed();
                        processed += 1;
                        let out = tern
                            .sender
                            .remove_user(&tern.id, &newcomer_jid)
                            .await
                            .unwrap();
                        tern.seq += 1;
                        tern.sender
                            .commit_accepted(&tern.id, tern.seq)
                            .await
                            .unwrap();
                        tern.receiver
                            .process(&tern.id, tern.seq, &out.commit)
                            .await
                            .unwrap();
                    }
                    commit_time
                })
            })
        });
        report("tern", size, process_time, processed);
    }
    group.finish();
}

/// Processing times are measured beside the commit benchmark (they need
/// the commit) and printed here.
fn report(what: &str, size: usize, total: Duration, count: u32) {
    if count > 0 {
        println!(
            "commit/{what}_process/{size}: mean {:.3} ms over {count} commits",
            total.as_secs_f64() * 1000.0 / count as f64
        );
    }
}

criterion_group!(benches, messages, commits);
criterion_main!(benches);
