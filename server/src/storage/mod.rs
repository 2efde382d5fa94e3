//! Storage of the home server: SQLite through sqlx, migrations in
//! `server/migrations/`. All queries of the crate live here.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a write that
//! returned is on disk: a client told "accepted" keeps its data through a
//! crash. Nothing stored here is message plaintext: accounts hold salted
//! SCRAM secrets, offline messages are end-to-end encrypted stanzas.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::sasl::{ScramHash, StoredCredentials};

mod account_data;
mod archive;
pub(crate) mod archive_chunk;
mod batch;
mod hub;
mod keys;
mod message_log;
mod muc;
mod s2s_queue;

pub use account_data::LogoutWriter;
pub use s2s_queue::QueueWriter;
mod uploads;
pub use archive::{
    ArchiveEntry, ArchiveFilter, ArchiveKind, ArchiveSlot, ArchiveWriter, ArchivedMessage,
    StoredMessage, DEFAULT_COMMIT_DELAY,
};
pub use hub::{Appended, CommitUpdate, HubGroup, LogAppend, StateChange};
pub use keys::{ClaimedKeyPackage, KeyUpload};
pub use muc::{RoomCreation, RoomLimits, StoredRoom};
pub use uploads::UploadSlot;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The archive's message log failed.
    #[error("message log error: {0}")]
    Log(std::io::Error),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

type Result<T> = std::result::Result<T, StorageError>;

/// The presence subscription between a user and a contact (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    /// Neither side is subscribed.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both receive each other's presence.
    Both,
}

impl Subscription {
    /// The attribute value of RFC 6121.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    /// Whether the user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    /// Whether the contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Self::From | Self::Both)
    }

    /// Builds the state from its two directions.
    pub fn from_parts(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Self::None,
            (true, false) => Self::To,
            (false, true) => Self::From,
            (true, true) => Self::Both,
        }
    }
}

impl FromStr for Subscription {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Self::None,
            "to" => Self::To,
            "from" => Self::From,
            "both" => Self::Both,
            other => return Err(StorageError::Corrupt(format!("subscription {other:?}"))),
        })
    }
}

/// One contact in a user's roster, with its subscription state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: String,
    /// The name the user gave the contact.
    pub name: Option<String>,
    /// The groups the user put the contact in.
    pub groups: Vec<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// The user asked to subscribe to the contact and awaits an answer.
    pub ask_out: bool,
    /// The contact asked to subscribe to the user, who has not answered.
    pub pending_in: bool,
    /// The user pre-approved a subscription request from the contact.
    pub approved: bool,
    /// Shown in the roster (false for a contact known only through a
    /// pending inbound request).
    pub listed: bool,
}

/// Who may read a PEP node's items (XEP-0060 access models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone.
    Open,
    /// The owner and contacts subscribed to the owner's presence (the PEP
    /// default).
    Presence,
    /// The owner only.
    Whitelist,
}

impl AccessModel {
    /// The `pubsub#access_model` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Presence => "presence",
            Self::Whitelist => "whitelist",
        }
    }

    /// Parses a `pubsub#access_model` value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "open" => Some(Self::Open),
            "presence" => Some(Self::Presence),
            "whitelist" => Some(Self::Whitelist),
            _ => None,
        }
    }
}

/// The configuration of one PEP node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PepNodeConfig {
    /// Who may read it.
    pub access_model: AccessModel,
    /// How many items it keeps; older ones are dropped.
    pub max_items: u32,
}

/// A stored offline message.
#[derive(Debug, Clone)]
pub struct OfflineMessage {
    /// Row id, to delete it once delivered.
    pub id: i64,
    /// The serialised stanza.
    pub stanza: String,
    /// When the server accepted it (RFC 3339).
    pub received_at: String,
}

/// The server's database.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: SqlitePool,
    /// The archive writer's own connection ([`ARCHIVE_THREAD`]).
    archive_pool: SqlitePool,
    /// The archived stanzas.
    log: std::sync::Arc<message_log::MessageLog>,
}

/// The name of the archive writer's SQLite thread (Linux keeps 15 bytes
/// of a thread's name).
const ARCHIVE_THREAD: &str = "tern-archive-db";

/// How far below routing the archive writer's thread runs, as a nice
/// increment. Its group commits are bursts of some milliseconds of CPU;
/// at the same priority they take the core from routing for that long.
/// At 28,000 msg/s on one core with the archive on, delivery latency was
/// p90 3.7–4.4 ms and p99 6.8–8.9 ms without this, 1.1–1.3 ms and 2.6–3.7
/// ms with it. Archived throughput at saturation is the same (routing
/// waits for the archive when its queue is full). A larger increment, or
/// `SCHED_IDLE`, starves the writer until routing waits, and cost a
/// quarter to a third of that throughput.
const ARCHIVE_NICENESS: i32 = 5;

/// How much of a user's offline storage senders may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineQuota {
    /// Messages in all (`limits.max_offline_messages`).
    pub total: u32,
    /// Messages from one sender (`limits.max_offline_per_sender`).
    pub per_sender: u32,
    /// Messages from senders not in the roster, together
    /// (`limits.max_offline_from_strangers`).
    pub strangers: u32,
}

impl Storage {
    /// Opens (creating if needed) the database in `data_dir` and brings its
    /// schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let storage = Self::connect(data_dir).await?;
        sqlx::migrate!("./migrations").run(&storage.pool).await?;
        Ok(storage)
    }

    /// Opens (creating if needed) the database in `data_dir` as it is.
    async fn connect(data_dir: &Path) -> Result<Self> {
        // Owner only: SCRAM secrets, the archive's ciphertext, the TLS
        // key. A tree written by an earlier version is tightened here.
        let database = data_dir.join("tern.sqlite3");
        tern_xmpp::private::private_dir(data_dir)
            .and_then(|()| tern_xmpp::private::tighten_tree(data_dir))
            .and_then(|()| tern_xmpp::private::private_file(&database))
            .map_err(|source| StorageError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let options = SqliteConnectOptions::new()
            .filename(&database)
            .create_if_missing(true)
            // 16 KiB pages for a new database (an existing one keeps its
            // own): the archive writes tens of MiB a second at full load,
            // and the WAL and its checkpoints move it a page per system
            // call.
            .page_size(16384)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Up to 64 MiB of page cache per connection (SQLite's default
            // is 2 MiB): the archive's per-owner entries are written all
            // over, and pages not in cache are read back at every commit.
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // sqlx pings a connection at every acquire by default: a
            // round trip to the connection's worker thread before each
            // query, which detects dropped network connections. A SQLite
            // connection is in-process and cannot drop.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let archive_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .after_connect(|_, _| {
                Box::pin(async {
                    lower_priority_of_threads(ARCHIVE_THREAD, ARCHIVE_NICENESS);
                    Ok(())
                })
            })
            .connect_with(options.thread_name(|_| ARCHIVE_THREAD.to_owned()))
            .await?;
        let log = message_log::MessageLog::open(&data_dir.join("archive-log"))?;
        Ok(Self {
            pool,
            archive_pool,
            log: std::sync::Arc::new(log),
        })
    }

    /// The connection pool for archive writes (one connection, on a thread
    /// of lower priority than routing).
    pub(crate) fn archive_writes(&self) -> &SqlitePool {
        &self.archive_pool
    }

    /// Checkpoints the WAL and closes every connection.
    pub async fn close(&self) {
        self.archive_pool.close().await;
        self.log.close();
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!("WAL checkpoint on shutdown failed: {e}");
        }
        self.pool.close().await;
    }

    // ----- accounts ---------------------------------------------------

    /// Creates an account with the secrets of `password`. Returns false if
    /// it exists already.
    pub async fn create_account(&self, username: &str, password: &str) -> Result<bool> {
        let secrets = derive_all(password).await;
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO accounts (username, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(username)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !created {
            return Ok(false);
        }
        write_credentials(&mut tx, username, &secrets).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the secrets of an account. Returns false if there is no
    /// such account.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<bool> {
        let secrets = derive_all(password).await;
        let mut tx = self.pool.begin().await?;
        if !account_exists(&mut tx, username).await? {
            return Ok(false);
        }
        write_credentials(&mut tx, username, &secrets).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes an account and everything it owns. Returns false if there
    /// was no such account.
    pub async fn delete_account(&self, username: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM accounts WHERE username = ?")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether an account exists.
    pub async fn account_exists(&self, username: &str) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        account_exists(&mut conn, username).await
    }

    /// All user names, sorted.
    pub async fn list_accounts(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT username FROM accounts ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The stored SCRAM secret of a user for one hash.
    pub async fn credentials(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<StoredCredentials>> {
        let row = sqlx::query(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials
             WHERE username = ? AND hash = ?",
        )
        .bind(username)
        .bind(hash.storage_name())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredCredentials {
            salt: r.get(0),
            iterations: r.get::<i64, _>(1) as u32,
            stored_key: r.get(2),
            server_key: r.get(3),
        }))
    }

    // ----- rosters ----------------------------------------------------

    /// The roster version of a user (0 before any change).
    pub async fn roster_version(&self, username: &str) -> Result<i64> {
        let v = sqlx::query("SELECT version FROM roster_versions WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.map(|r| r.get(0)).unwrap_or(0))
    }

    /// Every roster item of a user, listed or not.
    pub async fn roster_items(&self, username: &str) -> Result<Vec<RosterItem>> {
        let rows = sqlx::query(
            "SELECT contact, name, groups, subscription, ask_out, pending_in, approved, listed
             FROM roster_items WHERE username = ? ORDER BY contact",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(roster_item_from_row).collect()
    }

    /// One roster item.
    pub async fn roster_item(&self, username: &str, contact: &str) -> Result<Option<RosterItem>> {
        let row = sqlx::query(
            "SELECT contact, name, groups, subscription, ask_out, pending_in, approved, listed
             FROM roster_items WHERE username = ? AND contact = ?",
        )
        .bind(username)
        .bind(contact)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(roster_item_from_row).transpose()
    }

    /// Inserts or replaces a roster item; returns the new roster version.
    pub async fn save_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64> {
        let groups = serde_json::to_string(&item.groups)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT OR REPLACE INTO roster_items
             (username, contact, name, groups, subscription, ask_out, pending_in, approved, listed)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(&item.contact)
        .bind(&item.name)
        .bind(groups)
        .bind(item.subscription.as_str())
        .bind(item.ask_out)
        .bind(item.pending_in)
        .bind(item.approved)
        .bind(item.listed)
        .execute(&mut *tx)
        .await?;
        let version = bump_roster_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Removes a roster item; returns the new roster version.
    pub async fn delete_roster_item(&self, username: &str, contact: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM roster_items WHERE username = ? AND contact = ?")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
        let version = bump_roster_version(&mut tx, username).await?;
        tx.commit().await?;
        Ok(version)
    }

    // ----- offline messages ---------------------------------------------

    /// Stores an offline message for `username` from `sender` (a bare
    /// JID; `from_contact`: in the user's roster) unless that would
    /// exceed a quota: `quota.total` messages in all, `quota.per_sender`
    /// from one sender, `quota.strangers` from senders not in the roster
    /// together. Returns whether it was stored.
    pub async fn store_offline(
        &self,
        username: &str,
        sender: &str,
        from_contact: bool,
        stanza: &str,
        quota: OfflineQuota,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO offline_messages (username, stanza, received_at, sender, from_contact)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE (SELECT COUNT(*) FROM offline_messages WHERE username = ?1) < ?6
               AND (SELECT COUNT(*) FROM offline_messages WHERE username = ?1 AND sender = ?4) < ?7
               AND (?5 OR (SELECT COUNT(*) FROM offline_messages
                           WHERE username = ?1 AND from_contact = 0) < ?8)",
        )
        .bind(username)
        .bind(stanza)
        .bind(now_rfc3339())
        .bind(sender)
        .bind(from_contact)
        .bind(i64::from(quota.total))
        .bind(i64::from(quota.per_sender))
        .bind(i64::from(quota.strangers))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The offline messages of a user, oldest first.
    pub async fn offline_messages(&self, username: &str) -> Result<Vec<OfflineMessage>> {
        let rows = sqlx::query(
            "SELECT id, stanza, received_at FROM offline_messages WHERE username = ? ORDER BY id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OfflineMessage {
                id: r.get(0),
                stanza: r.get(1),
                received_at: r.get(2),
            })
            .collect())
    }

    /// Deletes delivered offline messages.
    pub async fn delete_offline(&self, username: &str, up_to_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM offline_messages WHERE username = ? AND id <= ?")
            .bind(username)
            .bind(up_to_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ----- PEP --------------------------------------------------------

    /// The configuration of a PEP node, if it exists.
    pub async fn pep_node(&self, owner: &str, node: &str) -> Result<Option<PepNodeConfig>> {
        let row = sqlx::query(
            "SELECT access_model, max_items FROM pep_nodes WHERE owner = ? AND node = ?",
        )
        .bind(owner)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let model: String = r.get(0);
            Ok(PepNodeConfig {
                access_model: AccessModel::parse(&model)
                    .ok_or_else(|| StorageError::Corrupt(format!("access model {model:?}")))?,
                max_items: r.get::<i64, _>(1) as u32,
            })
        })
        .transpose()
    }

    /// The names of a user's PEP nodes.
    pub async fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, PepNodeConfig)>> {
        let rows = sqlx::query(
            "SELECT node, access_model, max_items FROM pep_nodes WHERE owner = ? ORDER BY node",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let model: String = r.get(1);
                Ok((
                    r.get(0),
                    PepNodeConfig {
                        access_model: AccessModel::parse(&model).ok_or_else(|| {
                            StorageError::Corrupt(format!("access model {model:?}"))
                        })?,
                        max_items: r.get::<i64, _>(2) as u32,
                    },
                ))
            })
            .collect()
    }

    /// Publishes an item, creating the node with `config` if needed (or
    /// reconfiguring it to `config`), replacing an item of the same id, and
    /// dropping the oldest items beyond `max_items`.
    pub async fn pep_publish(
        &self,
        owner: &str,
        node: &str,
        config: PepNodeConfig,
        item_id: &str,
        payload: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pep_nodes (owner, node, access_model, max_items) VALUES (?, ?, ?, ?)
             ON CONFLICT (owner, node) DO UPDATE SET access_model = excluded.access_model,
             max_items = excluded.max_items",
        )
        .bind(owner)
        .bind(node)
        .bind(config.access_model.as_str())
        .bind(config.max_items as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM pep_items WHERE owner = ? AND node = ? AND item_id = ?")
            .bind(owner)
            .bind(node)
            .bind(item_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO pep_items (owner, node, item_id, payload) VALUES (?, ?, ?, ?)")
            .bind(owner)
            .bind(node)
            .bind(item_id)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        trim_items(&mut tx, owner, node, config.max_items).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes a node's configuration, dropping items beyond the new
    /// `max_items`.
    pub async fn pep_configure(
        &self,
        owner: &str,
        node: &str,
        config: PepNodeConfig,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE pep_nodes SET access_model = ?, max_items = ? WHERE owner = ? AND node = ?",
        )
        .bind(config.access_model.as_str())
        .bind(config.max_items as i64)
        .bind(owner)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        trim_items(&mut tx, owner, node, config.max_items).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Items of a node, newest first: all, the `max` newest, or those with
    /// the given ids.
    pub async fn pep_items(
        &self,
        owner: &str,
        node: &str,
        max: Option<u32>,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT item_id, payload FROM pep_items WHERE owner = ? AND node = ?
             ORDER BY seq DESC LIMIT ?",
        )
        .bind(owner)
        .bind(node)
        .bind(max.map(i64::from).unwrap_or(-1))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Removes one item. Returns false if it did not exist.
    pub async fn pep_retract(&self, owner: &str, node: &str, item_id: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM pep_items WHERE owner = ? AND node = ? AND item_id = ?")
                .bind(owner)
                .bind(node)
                .bind(item_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a node and its items. Returns false if it did not exist.
    pub async fn pep_delete_node(&self, owner: &str, node: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pep_nodes WHERE owner = ? AND node = ?")
            .bind(owner)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// PBKDF2 is deliberately slow: run it off the async workers.
async fn derive_all(password: &str) -> Vec<(ScramHash, StoredCredentials)> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        ScramHash::ALL
            .iter()
            .map(|&h| (h, StoredCredentials::derive(h, &password)))
            .collect()
    })
    .await
    .expect("key derivation does not panic")
}

async fn account_exists(conn: &mut sqlx::SqliteConnection, username: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM accounts WHERE username = ?")
        .bind(username)
        .fetch_optional(conn)
        .await?
        .is_some())
}

async fn write_credentials(
    conn: &mut sqlx::SqliteConnection,
    username: &str,
    secrets: &[(ScramHash, StoredCredentials)],
) -> Result<()> {
    for (hash, c) in secrets {
        sqlx::query(
            "INSERT OR REPLACE INTO scram_credentials
             (username, hash, salt, iterations, stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(hash.storage_name())
        .bind(&c.salt)
        .bind(c.iterations as i64)
        .bind(&c.stored_key)
        .bind(&c.server_key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops the oldest items of a node beyond `max_items`.
async fn trim_items(
    conn: &mut sqlx::SqliteConnection,
    owner: &str,
    node: &str,
    max_items: u32,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND seq NOT IN
         (SELECT seq FROM pep_items WHERE owner = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3)",
    )
    .bind(owner)
    .bind(node)
    .bind(max_items as i64)
    .execute(conn)
    .await?;
    Ok(())
}

async fn bump_roster_version(conn: &mut sqlx::SqliteConnection, username: &str) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO roster_versions (username, version) VALUES (?, 1)
         ON CONFLICT (username) DO UPDATE SET version = version + 1 RETURNING version",
    )
    .bind(username)
    .fetch_one(conn)
    .await?;
    Ok(row.get(0))
}

fn roster_item_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RosterItem> {
    let groups: String = r.get(2);
    let subscription: String = r.get(3);
    Ok(RosterItem {
        contact: r.get(0),
        name: r.get(1),
        groups: serde_json::from_str(&groups).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        subscription: subscription.parse()?,
        ask_out: r.get(4),
        pending_in: r.get(5),
        approved: r.get(6),
        listed: r.get(7),
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs this process's threads called `name` at `niceness` below the
/// calling thread (Linux: a thread's nice value is its own); a failure is
/// logged, and the threads run as they were.
fn lower_priority_of_threads(name: &str, niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        let own = rustix::process::getpriority_process(None).unwrap_or(0);
        let lowered = own.saturating_add(niceness).min(19);
        let tasks = match std::fs::read_dir("/proc/self/task") {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!("cannot list this process's threads: {e}");
                return;
            }
        };
        for task in tasks.flatten() {
            let named = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name);
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
            // With PRIO_PROCESS, Linux takes a thread id for that thread.
            if let Some(tid) = tid
                .filter(|_| named)
                .and_then(rustix::process::Pid::from_raw)
            {
                if let Err(e) = rustix::process::setpriority_process(Some(tid), lowered) {
                    tracing::warn!("cannot lower the priority of thread {name}: {e}");
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (name, niceness);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        (dir, storage)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_archive_writer_runs_below_routing() {
        let (_dir, s) = open().await;
        let own = rustix::process::getpriority_process(None).unwrap();
        let lowered = (own + ARCHIVE_NICENESS).min(19);
        // Other tests open databases meanwhile, so some writer threads may
        // not be lowered yet; this database's is.
        let mut lowered_writers = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != ARCHIVE_THREAD {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // The nice value is the 19th field; the name before is in
            // parentheses and has no spaces here.
            let nice: i32 = stat.split(' ').nth(18).unwrap().parse().unwrap();
            assert!(nice == own || nice == lowered, "{stat}");
            lowered_writers += usize::from(nice == lowered);
        }
        assert!(
            lowered_writers >= 1,
            "no {ARCHIVE_THREAD} thread at nice {lowered}"
        );
        s.close().await;
    }

    #[tokio::test]
    async fn accounts_keep_only_scram_secrets() {
        let (dir, s) = open().await;
        assert!(s.create_account("alice", "hunter2-unique").await.unwrap());
        assert!(!s.create_account("alice", "other").await.unwrap());
        let c = s
            .credentials("alice", ScramHash::Sha256)
            .await
            .unwrap()
            .unwrap();
        assert!(c.verify_password(ScramHash::Sha256, "hunter2-unique"));
        assert!(s.set_password("alice", "new").await.unwrap());
        let c = s
            .credentials("alice", ScramHash::Sha1)
            .await
            .unwrap()
            .unwrap();
        assert!(c.verify_password(ScramHash::Sha1, "new"));
        assert!(!s.set_password("bob", "x").await.unwrap());
        assert_eq!(s.list_accounts().await.unwrap(), vec!["alice"]);
        s.close().await;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            assert!(!bytes.windows(14).any(|w| w == b"hunter2-unique"));
        }
    }

    #[tokio::test]
    async fn roster_versions_grow_and_deletes_cascade() {
        let (_dir, s) = open().await;
        s.create_account("alice", "pw").await.unwrap();
        assert_eq!(s.roster_version("alice").await.unwrap(), 0);
        let item = RosterItem {
            contact: "bob@x".into(),
            groups: vec!["Friends".into()],
            listed: true,
            ..Default::default()
        };
        assert_eq!(s.save_roster_item("alice", &item).await.unwrap(), 1);
        assert_eq!(
            s.roster_item("alice", "bob@x").await.unwrap().unwrap(),
            item
        );
        assert_eq!(s.delete_roster_item("alice", "bob@x").await.unwrap(), 2);
        assert!(s.roster_items("alice").await.unwrap().is_empty());
        let quota = OfflineQuota {
            total: 10,
            per_sender: 10,
            strangers: 10,
        };
        s.store_offline("alice", "bob@x", true, "<message/>", quota)
            .await
            .unwrap();
        assert!(s.delete_account("alice").await.unwrap());
        assert!(s.offline_messages("alice").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn offline_quota_and_pep_trimming() {
        let (_dir, s) = open().await;
        s.create_account("a", "pw").await.unwrap();
        let quota = OfflineQuota {
            total: 2,
            per_sender: 2,
            strangers: 2,
        };
        assert!(s.store_offline("a", "b@x", true, "1", quota).await.unwrap());
        assert!(s.store_offline("a", "b@x", true, "2", quota).await.unwrap());
        assert!(!s.store_offline("a", "c@x", true, "3", quota).await.unwrap());
        let msgs = s.offline_messages("a").await.unwrap();
        s.delete_offline("a", msgs[1].id).await.unwrap();
        assert!(s.offline_messages("a").await.unwrap().is_empty());

        // One sender's share, and the strangers' share of the rest.
        let quota = OfflineQuota {
            total: 10,
            per_sender: 3,
            strangers: 4,
        };
        let store = |sender: &'static str, contact: bool| {
            let s = s.clone();
            async move {
                s.store_offline("a", sender, contact, "m", quota)
                    .await
                    .unwrap()
            }
        };
        for _ in 0..3 {
            assert!(store("s1@evil", false).await);
        }
        assert!(!store("s1@evil", false).await, "one sender's share");
        assert!(store("s2@evil", false).await);
        assert!(!store("s3@evil", false).await, "the strangers' share");
        for _ in 0..3 {
            assert!(store("friend@x", true).await, "a contact still has room");
        }
        assert!(!store("friend@x", true).await);
        assert!(store("other@x", true).await);
        s.delete_offline("a", i64::MAX).await.unwrap();

        let config = PepNodeConfig {
            access_model: AccessModel::Open,
            max_items: 2,
        };
        for id in ["i1", "i2", "i3", "i2"] {
            s.pep_publish("a", "n", config, id, id).await.unwrap();
        }
        let ids: Vec<_> = s
            .pep_items("a", "n", None)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.0)
            .collect();
        assert_eq!(ids, ["i2", "i3"]);
        assert_eq!(s.pep_items("a", "n", Some(1)).await.unwrap().len(), 1);
        assert!(s.pep_retract("a", "n", "i3").await.unwrap());
        assert!(s.pep_delete_node("a", "n").await.unwrap());
        assert!(s.pep_node("a", "n").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn uploads_and_archived_messages_expire() {
        let (_dir, s) = open().await;
        s.create_account("a", "pw").await.unwrap();
        s.upload_slot_create("done", "a", 10).await.unwrap();
        s.upload_slot_create("unused", "a", 10).await.unwrap();
        assert!(s.upload_complete("done").await.unwrap());
        let past = "2000-01-01T00:00:00.000Z";
        assert!(s.uploads_expire(past, past).await.unwrap().is_empty());
        let future = "2999-01-01T00:00:00.000Z";
        assert!(s.uploads_expire("", future).await.unwrap().is_empty());
        assert!(s.upload_slot("unused").await.unwrap().is_none());
        assert!(s.upload_slot("done").await.unwrap().is_some());
        assert_eq!(s.uploads_expire(future, future).await.unwrap(), ["done"]);

        let archive = ArchiveWriter::spawn(s.clone(), 0, DEFAULT_COMMIT_DELAY);
        for (seq, id, stamp) in [(1, "old", 1), (2, "new", i64::MAX)] {
            let slot = ArchiveSlot {
                seq,
                id: id.into(),
                stamp,
            };
            let message = slot.message("<message xmlns='jabber:client'/>".into());
            let entry = ArchiveEntry {
                kind: ArchiveKind::User,
                owner: "a",
                with: "b@x",
                message: &message,
            };
            archive.append(entry).await;
        }
        archive.flushed().await;
        assert_eq!(archive.expire(2).await.unwrap(), 1);
        assert!(!s.archive_has(ArchiveKind::User, "a", "old").await.unwrap());
        assert!(s.archive_has(ArchiveKind::User, "a", "new").await.unwrap());
    }
}
