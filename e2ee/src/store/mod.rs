//! The client's store: one SQLite database holding the MLS state (through
//! [`MlsStorage`]) and the client's own tables (device, key packages,
//! conversations, contacts, known devices, decrypted history with
//! full-text search). Every operation's writes go out as one [`Batch`] in
//! one transaction, so the MLS state and what the client recorded about
//! it never disagree, even after a crash.

use std::path::Path;
use std::sync::{Arc, Mutex};

use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

mod batch;
pub(crate) mod records;
pub use batch::{Arg, Batch};

use crate::mls_storage::{MlsStorage, RowSource, StorageError};
pub use records::{DeviceSighting, KnownDevice, StoredMessage};

/// The openmls provider for one operation: RustCrypto for crypto and
/// randomness, [`MlsStorage`] for state.
///
pub struct TernProvider<'a> {
    crypto: &'a RustCrypto,
    storage: MlsStorage<'a, ClientStore>,
}

impl<'a> TernProvider<'a> {
    /// A provider whose writes go out with `batch`.
    pub fn new(crypto: &'a RustCrypto, store: &'a ClientStore, batch: &'a Batch) -> Self {
        Self {
            crypto,
            storage: MlsStorage::new(store, batch.journal()),
        }
    }

    /// A provider that only reads (e.g. to load a group); writes fail.
    pub fn read_only(crypto: &'a RustCrypto, store: &'a ClientStore) -> Self {
        Self {
            crypto,
            storage: MlsStorage::read_only(store),
        }
    }
}

impl<'a> OpenMlsProvider for TernProvider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MlsStorage<'a, ClientStore>;

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

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The store's file could not be created or made private.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process has the store open.
    #[error("the store is in use by another process")]
    InUse,
    /// The store is encrypted with another passphrase (or one is needed).
    #[error("the store is encrypted: wrong or missing passphrase")]
    Locked,
    /// A passphrase was given, but this build cannot encrypt stores.
    #[error("this build cannot encrypt stores (built without the `encryption` feature)")]
    NoEncryption,
    /// The database was written by a newer version of Tern.
    #[error("store schema version {found} is newer than this client's ({supported})")]
    TooNew {
        /// The database's schema version.
        found: usize,
        /// The newest this client knows.
        supported: usize,
    },
}

/// The schema, one script per version (`PRAGMA user_version` counts the
/// ones applied).
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_client.sql"),
    include_str!("../../migrations/0002_leaving_and_lookup.sql"),
];

/// The client database: one SQLite connection, used on the calling
/// thread.
///
/// Statements are short (microseconds), so they run in place rather than
/// on a database thread: on a small machine the hop to another thread and
/// back costs more than a message's whole transaction.
#[derive(Debug, Clone)]
pub struct ClientStore {
    conn: Arc<Mutex<Option<Connection>>>,
}

impl ClientStore {
    /// Opens (creating if needed) the store at `path` and migrates it. The
    /// store stays locked to this process until closed: two processes
    /// driving one device would fork its MLS state.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// Opens (creating if needed) the store at `path`, encrypted at rest
    /// with a key derived from `passphrase` when one is given (SQLCipher:
    /// needs the `encryption` feature; without it, asking for a
    /// passphrase is an error, never a silently clear store).
    pub fn open_with(path: &Path, passphrase: Option<&str>) -> Result<Self, StoreError> {
        make_private(path)?;
        let mut conn = Connection::open(path)?;
        if let Some(passphrase) = passphrase {
            conn.pragma_update(None, "key", passphrase)?;
            let cipher: rusqlite::Result<String> =
                conn.query_row("PRAGMA cipher_version", [], |row| row.get(0));
            if cipher.is_err() {
                return Err(StoreError::NoEncryption);
            }
        }
        // Fail at once if another process holds the store.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        lock_and_configure(&conn).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::InUse
            }
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Locked,
            _ => StoreError::Sqlite(e),
        })?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Some(conn))),
        })
    }

    /// Runs `work` with the connection (reads, or writes outside an
    /// operation's batch).
    pub(crate) fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(work(conn.as_mut().ok_or(StoreError::Closed)?)?)
    }

    /// Applies an operation's writes in one transaction. On failure
    /// nothing of it was written.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let statements = batch.into_statements();
        if statements.is_empty() {
            return Ok(());
        }
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for statement in &statements {
                tx.prepare_cached(&statement.sql)?
                    .execute(rusqlite::params_from_iter(&statement.args))?;
            }
            tx.commit()
        })
    }

    /// Closes the database; later operations fail with
    /// [`StoreError::Closed`].
    pub fn close(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(conn) = conn {
            // On failure the connection is dropped, which closes it too.
            let _ = conn.close();
        }
    }
}

/// Takes the store's lock for good and sets the journal up.
fn lock_and_configure(conn: &Connection) -> rusqlite::Result<()> {
    // Exclusive: no other process may use the store while this one does,
    // and without other processes SQLite skips file locking per
    // transaction and keeps the WAL index in memory.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    // WAL + NORMAL: a commit survives an application crash; a power loss
    // may drop the last transactions but never leaves MLS state and
    // cursor apart (they commit together), and the hub's log is fetched
    // again. An fsync per message would cost more than all the
    // cryptography.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A checkpoint (copying the WAL into the database) syncs both files;
    // every 1,000 pages (SQLite's default) that cost ~100 us per message
    // on average. Every 8,192 pages (32 MiB) it is ~10 us; the file is cut
    // back to 4 MiB after each.
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    conn.pragma_update_and_check(None, "journal_size_limit", 4 << 20, |row| {
        row.get::<_, i64>(0)
    })?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // A write takes the exclusive lock, and keeps it.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT")
}

/// The committed MLS state, for providers' reads.
impl RowSource for ClientStore {
    fn row(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT value FROM mls_state WHERE key = ?")?
                .query_row([key], |row| row.get::<_, Vec<u8>>(0))
                .optional()
        })
        .map_err(|e| StorageError::Source(e.to_string()))
    }
}

/// Brings the schema up to date, one transaction per version.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: version,
            supported: MIGRATIONS.len(),
        });
    }
    for (applied, script) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", applied + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Makes the store's files readable by their owner only (the store
/// holds MLS private keys and decrypted history): the database is created
/// 0600 before SQLite opens it, so its journal and WAL files get the same
/// mode, and files left looser by an earlier version are tightened.
fn make_private(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    tern_xmpp::private::private_file(path).map_err(io)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let companion = std::path::PathBuf::from(companion);
        if companion.exists() {
            tern_xmpp::private::tighten_tree(&companion).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact_count(store: &ClientStore) -> usize {
        store.contacts().map(|c| c.len()).unwrap_or(usize::MAX)
    }

    #[test]
    fn a_store_is_used_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.sqlite3");
        let first = ClientStore::open(&path).unwrap();
        assert!(matches!(ClientStore::open(&path), Err(StoreError::InUse)));
        first.close();
        assert!(matches!(first.contacts(), Err(StoreError::Closed)));
        ClientStore::open(&path).unwrap();
    }

    #[test]
    fn a_failing_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClientStore::open(&dir.path().join("client.sqlite3")).unwrap();
        let mut batch = Batch::default();
        batch.add(
            "INSERT INTO contacts (jid, name) VALUES (?, ?)",
            ["a@example.org".into(), Arg::Null],
        );
        batch.add(
            "INSERT INTO contacts (jid, name) VALUES (?, ?)",
            ["a@example.org".into(), Arg::Null],
        );
        assert!(matches!(store.apply(batch), Err(StoreError::Sqlite(_))));
        assert_eq!(contact_count(&store), 0);
        // The connection is usable afterwards.
        store.add_contact("a@example.org", None).unwrap();
        assert_eq!(contact_count(&store), 1);
    }
}
