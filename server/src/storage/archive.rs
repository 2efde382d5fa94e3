//! The message archive (XEP-0313): encrypted messages per user, written in
//! group commits by an [`ArchiveWriter`] and read back in pages.

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
    /// The table and the column naming the owner.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Self::User => ("archive", "username"),
            Self::Room => ("muc_archive", "room"),
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

/// One message to archive for one user or room.
#[derive(Debug, Clone)]
pub struct ArchiveEntry {
    /// Whose archive.
    pub kind: ArchiveKind,
    /// The archive's owner (user name or room JID).
    pub username: String,
    /// The stanza id given to the message in this archive.
    pub id: String,
    /// The other party's bare JID.
    pub with: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// The serialised message.
    pub stanza: String,
}

/// An archived message as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its stanza id.
    pub id: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// The serialised message.
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

/// Writes archive entries in group commits without making message
/// routing wait for them; [`ArchiveWriter::flushed`] waits for what was
/// queued before, so a query sees every message routed before it.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    writer: BatchWriter<Change>,
}

/// One archive change.
#[derive(Debug)]
enum Change {
    Insert(ArchiveEntry),
    /// Nothing to write: its completion says the changes before it are.
    Barrier,
}

impl ArchiveWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(storage: Storage) -> Self {
        Self {
            writer: BatchWriter::spawn(storage),
        }
    }

    /// Queues an entry (waits only while the writer's queue is full).
    pub async fn append(&self, entry: ArchiveEntry) {
        if let Err(e) = self.writer.submit(Change::Insert(entry)).await {
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

/// Rows written by one statement (5 parameters each, far below SQLite's
/// limit of 32766).
const ROWS_PER_STATEMENT: usize = 100;

impl BatchChange for Change {
    /// Writes the batch's entries with one multi-row statement per
    /// hundred rows and archive kind, in one transaction.
    async fn apply(storage: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
        let mut tx = storage.pool.begin().await?;
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let entries: Vec<&ArchiveEntry> = changes
                .iter()
                .filter_map(|c| match c {
                    Change::Insert(entry) if entry.kind == kind => Some(entry),
                    _ => None,
                })
                .collect();
            for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                insert_rows(kind, chunk).build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(vec![0; changes.len()])
    }
}

/// `INSERT … SELECT … FROM (VALUES …)` of entries of one kind; an owner
/// deleted meanwhile makes its rows a no-op, not a failure of the batch.
fn insert_rows<'a>(kind: ArchiveKind, entries: &[&'a ArchiveEntry]) -> QueryBuilder<'a, Sqlite> {
    let (table, owner) = kind.table();
    let (owners, key) = kind.owners();
    let mut query = QueryBuilder::new(format!(
        "INSERT OR IGNORE INTO {table} ({owner}, id, with_jid, stamp, stanza) \
         SELECT column1, column2, column3, column4, column5 FROM ("
    ));
    query.push_values(
        entries.iter().copied(),
        |mut row, entry: &'a ArchiveEntry| {
            // As `&str`, bound without a copy.
            row.push_bind(entry.username.as_str())
                .push_bind(entry.id.as_str())
                .push_bind(entry.with.as_str())
                .push_bind(entry.stamp)
                .push_bind(entry.stanza.as_str());
        },
    );
    query.push(format!(
        ") WHERE EXISTS (SELECT 1 FROM {owners} WHERE {key} = column1)"
    ));
    query
}

impl Storage {
    /// The messages of `username`'s archive that `filter` selects, oldest
    /// first.
    pub async fn archive_query(
        &self,
        kind: ArchiveKind,
        username: &str,
        filter: &ArchiveFilter,
    ) -> Result<Vec<ArchivedMessage>> {
        let (table, owner) = kind.table();
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT id, stamp, stanza FROM {table} WHERE {owner} = "
        ));
        query.push_bind(username);
        if let Some(with) = &filter.with {
            query.push(" AND with_jid = ").push_bind(with);
        }
        if let Some(start) = filter.start {
            query.push(" AND stamp >= ").push_bind(start);
        }
        if let Some(end) = filter.end {
            query.push(" AND stamp <= ").push_bind(end);
        }
        for (id, comparison) in [(&filter.after_id, " > "), (&filter.before_id, " < ")] {
            if let Some(id) = id {
                query
                    .push(" AND seq")
                    .push(comparison)
                    .push(format!("(SELECT seq FROM {table} WHERE {owner} = "))
                    .push_bind(username)
                    .push(" AND id = ")
                    .push_bind(id)
                    .push(")");
            }
        }
        if !filter.ids.is_empty() {
            query.push(" AND id IN (");
            let mut ids = query.separated(", ");
            for id in &filter.ids {
                ids.push_bind(id);
            }
            query.push(")");
        }
        query.push(if filter.from_the_end {
            " ORDER BY seq DESC LIMIT "
        } else {
            " ORDER BY seq LIMIT "
        });
        query.push_bind(filter.limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut messages: Vec<ArchivedMessage> = rows
            .into_iter()
            .map(|r| ArchivedMessage {
                id: r.get(0),
                stamp: r.get(1),
                stanza: r.get(2),
            })
            .collect();
        if filter.from_the_end {
            messages.reverse();
        }
        Ok(messages)
    }

    /// Whether `username`'s archive holds a message with this id.
    pub async fn archive_has(&self, kind: ArchiveKind, username: &str, id: &str) -> Result<bool> {
        let (table, owner) = kind.table();
        let found: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT seq FROM {table} WHERE {owner} = ? AND id = ?"
        ))
        .bind(username)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
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
                "SELECT id, stamp, stanza FROM {table} WHERE {owner} = ? ORDER BY seq {order} LIMIT 1"
            ))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(r) => ends.push(ArchivedMessage {
                    id: r.get(0),
                    stamp: r.get(1),
                    stanza: r.get(2),
                }),
                None => return Ok(None),
            }
        }
        let newest = ends.pop();
        Ok(ends.pop().zip(newest))
    }

    /// Deletes archived messages (of users and rooms) older than
    /// `stamp`; how many.
    pub async fn archive_expire(&self, stamp: i64) -> Result<u64> {
        let mut deleted = 0;
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let (table, _) = kind.table();
            // Rows are appended in stamp order: everything before the
            // first row stamped at or after the cut-off is older.
            let done = sqlx::query(&format!(
                "DELETE FROM {table} WHERE seq < COALESCE(
                     (SELECT seq FROM {table} WHERE stamp >= ?1 ORDER BY seq LIMIT 1),
                     (SELECT MAX(seq) + 1 FROM {table}))"
            ))
            .bind(stamp)
            .execute(&self.pool)
            .await?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }
}
