//! The client's store: one SQLite database holding the MLS state (through
//! `openmls_sqlx_storage`) and the client's own tables (device, key
//! packages, conversations, contacts, known devices, decrypted history with
//! full-text search). Every operation runs in one transaction, so the MLS
//! state and what the client recorded about it never disagree, even after
//! a crash.

use std::path::Path;
use std::time::Duration;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlx_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::error::Error;

pub(crate) mod records;
pub use records::{DeviceSighting, KnownDevice, StoredMessage};

/// The serialisation of MLS state in the store (JSON, as the openmls
/// storage examples use).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// The openmls provider for one transaction: RustCrypto for crypto and
/// randomness, the store's transaction for state.
///
/// openmls_sqlx_storage drives sqlx with `block_in_place`, so the client
/// core runs on a multi-threaded tokio runtime.
pub struct TernProvider<'a> {
    crypto: &'a RustCrypto,
    storage: SqliteStorageProvider<'a, JsonCodec>,
}

impl<'a> TernProvider<'a> {
    /// A provider writing through `connection` (usually a transaction).
    pub fn new(crypto: &'a RustCrypto, connection: &'a mut SqliteConnection) -> Self {
        Self {
            crypto,
            storage: SqliteStorageProvider::new(connection),
        }
    }
}

impl<'a> OpenMlsProvider for TernProvider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
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

/// The client database.
#[derive(Debug, Clone)]
pub struct ClientStore {
    pool: SqlitePool,
}

impl ClientStore {
    /// Opens (creating if needed) the store at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives an application crash; a power
            // loss may drop the last transactions but never leaves MLS
            // state and cursor apart (they commit together), and the hub's
            // log is fetched again. An fsync per message would cost more
            // than all the cryptography.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let mut conn = pool.acquire().await?;
        tokio::task::block_in_place(|| {
            SqliteStorageProvider::<JsonCodec>::new(&mut conn).run_migrations()
        })?;
        Ok(Self { pool })
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        Ok(self.pool.begin().await?)
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
