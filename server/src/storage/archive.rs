//! The message archive (XEP-0313): encrypted messages, each stored once
//! and listed in the archive of every local user (or room) it belongs to,
//! written in group commits by an [`ArchiveWriter`] and read back in
//! pages. The layout is in `migrations/0011_archive_shared_messages.sql`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::batch::{BatchChange, BatchWriter};
use super::{Result, Storage};

/// Whose archive: a user's or a room's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A local user's (owner: the user name).
    User,
    /// A MUC room's (owner: the room's bare JID).
    Room,
}

impl ArchiveKind {
    /// The table of the archive's entries and the column naming the owner.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Self::User => ("archive_entries", "username"),
            Self::Room => ("muc_archive_entries", "room"),
        }
    }

    /// The table of the owners.
    fn owners(self) -> (&'static str, &'static str) {
        match self {
            Self::User => ("accounts", "username"),
            Self::Room => ("muc_rooms", "room"),
        }
    }
}

/// A message as the archive stores it, once, whichever archives list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its place in the archiving order.
    pub seq: i64,
    /// The stanza id every archive listing it knows it by.
    pub id: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// The serialised message, without the archive's own `<stanza-id/>`.
    pub stanza: String,
}

/// A message's place in the archive, taken before the message is
/// serialised (so that the id can go into what is delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSlot {
    /// The archiving order.
    pub seq: i64,
    /// The stanza id: `seq` in 16 hex digits, then 32 random bits in 8.
    pub id: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
}

impl ArchiveSlot {
    /// The stored message of this slot.
    pub fn message(self, stanza: String) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            seq: self.seq,
            id: self.id,
            stamp: self.stamp,
            stanza,
        })
    }
}

/// The seq an id of this server's format names; `None` for other ids
/// (those of rows migrated from the per-archive tables).
fn seq_of(id: &str) -> Option<i64> {
    let hex = id.get(..16).filter(|_| id.len() == 24)?;
    i64::from_str_radix(hex, 16).ok().filter(|seq| *seq >= 0)
}

/// Seqs below this are rows migrated from the per-archive tables, whose
/// ids do not name their seq (new seqs are microseconds since 1970, above
/// 10¹⁵ since 2001).
const FIRST_TIMED_SEQ: i64 = 1_000_000_000_000_000;

/// One archive's listing of a stored message.
#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    /// Whose archive.
    pub kind: ArchiveKind,
    /// The archive's owner (user name or room JID).
    pub username: String,
    /// The other party's bare JID.
    pub with: String,
    /// The message, shared with the other archives listing it.
    pub message: Arc<StoredMessage>,
}

/// An archived message as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its stanza id.
    pub id: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// The serialised message, without this archive's `<stanza-id/>`.
    pub stanza: String,
}

/// Which messages a query asks for. Bounds are exclusive for ids and
/// inclusive for times.
#[derive(Debug, Clone, Default)]
pub struct ArchiveFilter {
    /// Only messages with this bare JID.
    pub with: Option<String>,
    /// Only messages at or after this time (microseconds).
    pub start: Option<i64>,
    /// Only messages at or before this time (microseconds).
    pub end: Option<i64>,
    /// Only messages after the one with this id.
    pub after_id: Option<String>,
    /// Only messages before the one with this id.
    pub before_id: Option<String>,
    /// Only messages with these ids.
    pub ids: Vec<String>,
    /// At most this many.
    pub limit: u32,
    /// The newest `limit` matches (still returned oldest first), not the
    /// oldest.
    pub from_the_end: bool,
}

/// How long the writer gathers archive entries before a commit, unless a
/// reader waits ([`ArchiveWriter::flushed`]) or the batch is full.
/// Routing never waits for the archive, so this costs no latency; larger
/// commits rewrite each archive's last index page once instead of many
/// times.
const LINGER: Duration = Duration::from_millis(20);

/// Writes archive entries in group commits without making message
/// routing wait for them; [`ArchiveWriter::flushed`] waits for what was
/// queued before, so a query sees every message routed before it.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    writer: BatchWriter<Change>,
    /// The last seq given out.
    last_seq: Arc<AtomicI64>,
}

/// One archive change.
#[derive(Debug)]
enum Change {
    Insert(ArchiveEntry),
    /// Nothing to write: its completion says the changes before it are.
    Barrier,
}

impl ArchiveWriter {
    /// Starts the writer task (it ends when the last handle is dropped);
    /// `last_seq` is the archive's highest ([`Storage::archive_last_seq`]).
    pub fn spawn(storage: Storage, last_seq: i64) -> Self {
        Self {
            writer: BatchWriter::spawn_lingering(storage, LINGER),
            last_seq: Arc::new(AtomicI64::new(last_seq)),
        }
    }

    /// A new place in the archive: now, or just after the last one if the
    /// clock has not moved on (or went back).
    pub fn slot(&self) -> ArchiveSlot {
        let now = chrono::Utc::now().timestamp_micros();
        let after = |last: i64| last.saturating_add(1).max(now);
        let previous = self
            .last_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(after(last))
            })
            .unwrap_or_else(|last| last);
        let seq = after(previous);
        let tag: u32 = rand::thread_rng().gen();
        ArchiveSlot {
            seq,
            id: format!("{seq:016x}{tag:08x}"),
            stamp: now,
        }
    }

    /// Queues an entry (waits only while the writer's queue is full).
    pub async fn append(&self, entry: ArchiveEntry) {
        if let Err(e) = self.writer.queue(Change::Insert(entry)).await {
            tracing::error!("cannot archive a message: {e}");
        }
    }

    /// Returns once everything queued before is on disk.
    pub async fn flushed(&self) {
        if let Err(e) = self.writer.write(Change::Barrier).await {
            tracing::error!("the archive writer failed: {e}");
        }
    }
}

/// Rows written by one statement (at most 4 parameters each, far below
/// SQLite's limit of 32766).
const ROWS_PER_STATEMENT: usize = 100;

impl BatchChange for Change {
    /// Writes the batch's messages (each once), then its entries per
    /// archive kind, with one multi-row statement per hundred rows, in
    /// one transaction.
    async fn apply(storage: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
        let entries: Vec<&ArchiveEntry> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Insert(entry) => Some(entry),
                Change::Barrier => None,
            })
            .collect();
        let mut seen = HashSet::with_capacity(entries.len());
        let messages: Vec<&StoredMessage> = entries
            .iter()
            .map(|e| &*e.message)
            .filter(|m| seen.insert(m.seq))
            .collect();
        let mut tx = storage.pool.begin().await?;
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            insert_messages(chunk).build().execute(&mut *tx).await?;
        }
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let of_kind: Vec<&ArchiveEntry> =
                entries.iter().copied().filter(|e| e.kind == kind).collect();
            for chunk in of_kind.chunks(ROWS_PER_STATEMENT) {
                insert_entries(kind, chunk)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(vec![0; changes.len()])
    }

    fn urgent(&self) -> bool {
        matches!(self, Change::Barrier)
    }
}

/// `INSERT` of stored messages; one already written by an earlier batch
/// (listed by a second archive) is left as it is.
fn insert_messages<'a>(messages: &[&'a StoredMessage]) -> QueryBuilder<'a, Sqlite> {
    let mut query =
        QueryBuilder::new("INSERT OR IGNORE INTO archive_messages (seq, id, stamp, stanza) ");
    query.push_values(messages.iter().copied(), |mut row, message| {
        // As `&str`: borrowed until the query runs (sqlx then copies each
        // value once, for its worker thread).
        row.push_bind(message.seq)
            .push_bind(message.id.as_str())
            .push_bind(message.stamp)
            .push_bind(message.stanza.as_str());
    });
    query
}

/// `INSERT … SELECT … FROM (VALUES …)` of entries of one kind; an owner
/// deleted meanwhile makes its rows a no-op, not a failure of the batch.
fn insert_entries<'a>(kind: ArchiveKind, entries: &[&'a ArchiveEntry]) -> QueryBuilder<'a, Sqlite> {
    let (table, owner) = kind.table();
    let (owners, key) = kind.owners();
    let mut query = QueryBuilder::new(format!(
        "INSERT OR IGNORE INTO {table} ({owner}, seq, with_jid) \
         SELECT column1, column2, column3 FROM ("
    ));
    query.push_values(entries.iter().copied(), |mut row, entry| {
        row.push_bind(entry.username.as_str())
            .push_bind(entry.message.seq)
            .push_bind(entry.with.as_str());
    });
    query.push(format!(
        ") WHERE EXISTS (SELECT 1 FROM {owners} WHERE {key} = column1)"
    ));
    query
}

impl Storage {
    /// The highest seq in the archive (0 when empty), for
    /// [`ArchiveWriter::spawn`].
    pub async fn archive_last_seq(&self) -> Result<i64> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM archive_messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.unwrap_or(0))
    }

    /// The messages of `username`'s archive that `filter` selects, oldest
    /// first; `None` when its `after_id` or `before_id` is not in the
    /// archive.
    pub async fn archive_query(
        &self,
        kind: ArchiveKind,
        username: &str,
        filter: &ArchiveFilter,
    ) -> Result<Option<Vec<ArchivedMessage>>> {
        let mut bounds = [None, None];
        for (bound, id) in bounds.iter_mut().zip([&filter.after_id, &filter.before_id]) {
            if let Some(id) = id {
                match self.archive_seq(kind, username, id).await? {
                    Some(seq) => *bound = Some(seq),
                    None => return Ok(None),
                }
            }
        }
        let (table, owner) = kind.table();
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT m.id, m.stamp, m.stanza FROM {table} e \
             JOIN archive_messages m ON m.seq = e.seq WHERE e.{owner} = "
        ));
        query.push_bind(username);
        if let Some(with) = &filter.with {
            query.push(" AND e.with_jid = ").push_bind(with);
        }
        if let Some(start) = filter.start {
            query.push(" AND m.stamp >= ").push_bind(start);
        }
        if let Some(end) = filter.end {
            query.push(" AND m.stamp <= ").push_bind(end);
        }
        for (seq, comparison) in bounds.into_iter().zip([" > ", " < "]) {
            if let Some(seq) = seq {
                query.push(" AND e.seq").push(comparison).push_bind(seq);
            }
        }
        if !filter.ids.is_empty() {
            let seqs: Option<Vec<i64>> = filter.ids.iter().map(|id| seq_of(id)).collect();
            // Ids of this server's format are looked up by seq; others
            // (migrated rows) by a scan.
            if let Some(seqs) = seqs {
                query.push(" AND e.seq IN (");
                let mut list = query.separated(", ");
                for seq in seqs {
                    list.push_bind(seq);
                }
                query.push(")");
            }
            query.push(" AND m.id IN (");
            let mut list = query.separated(", ");
            for id in &filter.ids {
                list.push_bind(id);
            }
            query.push(")");
        }
        query.push(if filter.from_the_end {
            " ORDER BY e.seq DESC LIMIT "
        } else {
            " ORDER BY e.seq LIMIT "
        });
        query.push_bind(filter.limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut messages: Vec<ArchivedMessage> = rows.into_iter().map(archived).collect();
        if filter.from_the_end {
            messages.reverse();
        }
        Ok(Some(messages))
    }

    /// The seq of the message with this id in `username`'s archive.
    async fn archive_seq(
        &self,
        kind: ArchiveKind,
        username: &str,
        id: &str,
    ) -> Result<Option<i64>> {
        let (table, owner) = kind.table();
        let select = format!(
            "SELECT e.seq FROM {table} e JOIN archive_messages m ON m.seq = e.seq \
             WHERE e.{owner} = ?1 AND m.id = ?2 AND "
        );
        if let Some(seq) = seq_of(id) {
            let found = sqlx::query_scalar(&format!("{select} e.seq = ?3"))
                .bind(username)
                .bind(id)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        // A migrated row keeps an id of another format.
        Ok(sqlx::query_scalar(&format!("{select} e.seq < ?3"))
            .bind(username)
            .bind(id)
            .bind(FIRST_TIMED_SEQ)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether `username`'s archive holds a message with this id.
    #[cfg(test)]
    pub async fn archive_has(&self, kind: ArchiveKind, username: &str, id: &str) -> Result<bool> {
        Ok(self.archive_seq(kind, username, id).await?.is_some())
    }

    /// The oldest and newest message of `username`'s archive.
    pub async fn archive_bounds(
        &self,
        kind: ArchiveKind,
        username: &str,
    ) -> Result<Option<(ArchivedMessage, ArchivedMessage)>> {
        let (table, owner) = kind.table();
        let mut ends = Vec::with_capacity(2);
        for order in ["ASC", "DESC"] {
            let row = sqlx::query(&format!(
                "SELECT m.id, m.stamp, m.stanza FROM {table} e \
                 JOIN archive_messages m ON m.seq = e.seq \
                 WHERE e.{owner} = ? ORDER BY e.seq {order} LIMIT 1"
            ))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(row) => ends.push(archived(row)),
                None => return Ok(None),
            }
        }
        let newest = ends.pop();
        Ok(ends.pop().zip(newest))
    }

    /// Deletes archived messages (of users and rooms) older than
    /// `stamp`; how many archive entries went.
    pub async fn archive_expire(&self, stamp: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Messages are stored in stamp order: everything before the first
        // one stamped at or after the cut-off is older.
        let cut: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(
                 (SELECT seq FROM archive_messages WHERE stamp >= ?1 ORDER BY seq LIMIT 1),
                 (SELECT MAX(seq) + 1 FROM archive_messages))",
        )
        .bind(stamp)
        .fetch_one(&mut *tx)
        .await?;
        let Some(cut) = cut else {
            return Ok(0);
        };
        let mut deleted = 0;
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let (table, _) = kind.table();
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE seq < ?"))
                .bind(cut)
                .execute(&mut *tx)
                .await?;
            deleted += done.rows_affected();
        }
        sqlx::query("DELETE FROM archive_messages WHERE seq < ?")
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes the stored messages that only `owner`'s archive lists, in
    /// `tx`, before the owner (and, by cascade, its entries) goes.
    pub(super) async fn archive_forget(
        tx: &mut sqlx::SqliteConnection,
        kind: ArchiveKind,
        owner: &str,
    ) -> Result<()> {
        let (table, column) = kind.table();
        let (other_table, _) = match kind {
            ArchiveKind::User => ArchiveKind::Room.table(),
            ArchiveKind::Room => ArchiveKind::User.table(),
        };
        sqlx::query(&format!(
            "DELETE FROM archive_messages WHERE seq IN (
                 SELECT e.seq FROM {table} e WHERE e.{column} = ?1
                 AND NOT EXISTS (SELECT 1 FROM {table} o WHERE o.seq = e.seq AND o.{column} != ?1)
                 AND NOT EXISTS (SELECT 1 FROM {other_table} o WHERE o.seq = e.seq))"
        ))
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// An archived message from a row of `id, stamp, stanza`.
fn archived(row: sqlx::sqlite::SqliteRow) -> ArchivedMessage {
    ArchivedMessage {
        id: row.get(0),
        stamp: row.get(1),
        stanza: row.get(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).await.expect("storage");
        (dir, storage)
    }

    fn stanza(text: &str) -> String {
        format!("<message xmlns='jabber:client'><body>{text}</body></message>")
    }

    fn entry(owner: &str, with: &str, message: &Arc<StoredMessage>) -> ArchiveEntry {
        ArchiveEntry {
            kind: ArchiveKind::User,
            username: owner.into(),
            with: with.into(),
            message: message.clone(),
        }
    }

    async fn stored_messages(storage: &Storage) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM archive_messages")
            .fetch_one(&storage.pool)
            .await
            .expect("count")
    }

    async fn everything(storage: &Storage, owner: &str) -> Vec<ArchivedMessage> {
        let filter = ArchiveFilter {
            limit: 100,
            ..ArchiveFilter::default()
        };
        storage
            .archive_query(ArchiveKind::User, owner, &filter)
            .await
            .expect("query")
            .expect("no id bounds")
    }

    #[test]
    fn ids_name_their_seq() {
        assert_eq!(seq_of("0000000000000010deadbeef"), Some(16));
        assert_eq!(seq_of("de305d54-75b4-431b-adb2-eb6b9e546013"), None);
        assert_eq!(seq_of("zz00000000000010deadbeef"), None);
        assert_eq!(seq_of("ffffffffffffffffdeadbeef"), None);
    }

    #[tokio::test]
    async fn slots_increase_past_the_archive_and_the_clock() {
        let (_dir, storage) = open().await;
        let ahead = chrono::Utc::now().timestamp_micros() + 60_000_000;
        let writer = ArchiveWriter::spawn(storage, ahead);
        let (first, second) = (writer.slot(), writer.slot());
        assert_eq!((first.seq, second.seq), (ahead + 1, ahead + 2));
        assert_eq!(seq_of(&first.id), Some(first.seq));
        assert_ne!(first.id, second.id);
    }

    #[tokio::test]
    async fn a_message_between_two_users_is_stored_once_and_outlives_one_of_them() {
        let (_dir, storage) = open().await;
        for user in ["a", "b"] {
            storage.create_account(user, "pw").await.expect("account");
        }
        let writer = ArchiveWriter::spawn(storage.clone(), 0);
        let message = writer.slot().message(stanza("hi"));
        writer.append(entry("a", "b@x", &message)).await;
        writer.append(entry("b", "a@x", &message)).await;
        writer.flushed().await;
        assert_eq!(stored_messages(&storage).await, 1);
        for user in ["a", "b"] {
            let found = everything(&storage, user).await;
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].id, message.id);
            assert!(storage
                .archive_has(ArchiveKind::User, user, &message.id)
                .await
                .expect("has"));
        }
        storage.delete_account("a").await.expect("delete");
        assert_eq!(stored_messages(&storage).await, 1, "still in b's archive");
        assert_eq!(everything(&storage, "b").await.len(), 1);
        storage.delete_account("b").await.expect("delete");
        assert_eq!(stored_messages(&storage).await, 0, "in nobody's archive");
    }

    #[tokio::test]
    async fn stanzas_come_back_byte_for_byte() {
        let (_dir, storage) = open().await;
        storage.create_account("a", "pw").await.expect("account");
        let writer = ArchiveWriter::spawn(storage.clone(), 0);
        let tricky = stanza("\"quoted\" back\\slash\ttab\nline\u{1}\u{7f} é 🦀 &amp; &lt;");
        let message = writer.slot().message(tricky.clone());
        writer.append(entry("a", "b\"@x", &message)).await;
        writer.flushed().await;
        let found = everything(&storage, "a").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].stanza, tricky);
        let with_quote = ArchiveFilter {
            with: Some("b\"@x".into()),
            limit: 1,
            ..ArchiveFilter::default()
        };
        let page = storage
            .archive_query(ArchiveKind::User, "a", &with_quote)
            .await
            .expect("query")
            .expect("no id bounds");
        assert_eq!(page.len(), 1);
    }

    #[tokio::test]
    async fn pages_follow_ids_and_unknown_ids_select_nothing() {
        let (_dir, storage) = open().await;
        storage.create_account("a", "pw").await.expect("account");
        let writer = ArchiveWriter::spawn(storage.clone(), 0);
        let mut ids = Vec::new();
        for n in 0..5 {
            let message = writer.slot().message(stanza(&n.to_string()));
            ids.push(message.id.clone());
            let with = if n % 2 == 0 { "even@x" } else { "odd@x" };
            writer.append(entry("a", with, &message)).await;
        }
        writer.flushed().await;
        let query = |filter: ArchiveFilter| {
            let storage = storage.clone();
            async move {
                let page = storage
                    .archive_query(ArchiveKind::User, "a", &filter)
                    .await
                    .expect("query")
                    // An unknown id bound selects nothing.
                    .unwrap_or_default();
                page.into_iter().map(|m| m.id).collect::<Vec<_>>()
            }
        };
        let after = query(ArchiveFilter {
            after_id: Some(ids[1].clone()),
            limit: 2,
            ..ArchiveFilter::default()
        });
        assert_eq!(after.await, ids[2..4]);
        let last_odd = query(ArchiveFilter {
            with: Some("odd@x".into()),
            limit: 1,
            from_the_end: true,
            ..ArchiveFilter::default()
        });
        assert_eq!(last_odd.await, ids[3..4]);
        let chosen = query(ArchiveFilter {
            ids: vec![ids[0].clone(), ids[4].clone()],
            limit: 10,
            ..ArchiveFilter::default()
        });
        assert_eq!(chosen.await, [ids[0].clone(), ids[4].clone()]);
        let forged = format!("{}00000000", &ids[2][..16]);
        let unknown = query(ArchiveFilter {
            after_id: Some(forged),
            limit: 10,
            ..ArchiveFilter::default()
        });
        assert!(unknown.await.is_empty(), "an id's random part is checked");
    }

    /// Archives written in the per-archive layout (before migration 11)
    /// keep their messages, order and ids.
    #[tokio::test]
    async fn messages_of_the_earlier_layout_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let earlier = dir.path().join("earlier-migrations");
        std::fs::create_dir(&earlier).expect("dir");
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for file in std::fs::read_dir(&migrations)
            .expect("migrations")
            .flatten()
        {
            let name = file.file_name();
            if name.to_string_lossy().as_ref() < "0011" {
                std::fs::copy(file.path(), earlier.join(&name)).expect("copy");
            }
        }
        let data = dir.path().join("data");
        {
            let storage = Storage::connect(&data).await.expect("open");
            sqlx::migrate::Migrator::new(earlier.as_path())
                .await
                .expect("earlier migrations")
                .run(&storage.pool)
                .await
                .expect("migrate");
            for statement in [
                "INSERT INTO accounts VALUES ('a', 'now')",
                "INSERT INTO archive (username, id, with_jid, stamp, stanza) VALUES \
                 ('a', 'uuid-1', 'b@x', 10, '<message xmlns=''jabber:client''/>'), \
                 ('a', '0000000000000001deadbeef', 'c@x', 20, '<message xmlns=''jabber:client''/>')",
                "INSERT INTO muc_rooms (room, created_at) VALUES ('r@muc.x', 'now')",
                "INSERT INTO muc_archive (room, id, with_jid, stamp, stanza) VALUES \
                 ('r@muc.x', 'room-1', 'b@x', 30, '<message xmlns=''jabber:client''/>')",
            ] {
                sqlx::query(statement)
                    .execute(&storage.pool)
                    .await
                    .expect(statement);
            }
            storage.pool.close().await;
        }
        let storage = Storage::open(&data).await.expect("migrated");
        let ids: Vec<String> = everything(&storage, "a")
            .await
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["uuid-1", "0000000000000001deadbeef"]);
        for id in &ids {
            assert!(storage
                .archive_has(ArchiveKind::User, "a", id)
                .await
                .expect("has"));
        }
        let after_first = ArchiveFilter {
            after_id: Some("uuid-1".into()),
            limit: 10,
            ..ArchiveFilter::default()
        };
        let page = storage
            .archive_query(ArchiveKind::User, "a", &after_first)
            .await
            .expect("query")
            .expect("a known id");
        assert_eq!(page.len(), 1);
        assert!(storage
            .archive_has(ArchiveKind::Room, "r@muc.x", "room-1")
            .await
            .expect("has"));
        let last = storage.archive_last_seq().await.expect("last seq");
        let writer = ArchiveWriter::spawn(storage, last);
        assert!(writer.slot().seq > FIRST_TIMED_SEQ);
    }
}
