//! The message archive (XEP-0313): the encrypted messages of each local
//! user (or room), written in group commits by an [`ArchiveWriter`] and
//! read back in pages. Each commit appends the messages' stanzas to the
//! message log ([`message_log`](super::message_log)), once per message
//! however many archives list it, and writes in SQLite one chunk per
//! archive: a run of consecutive entries saying where their stanzas are
//! ([`archive_chunk`](super::archive_chunk)). The layout is in
//! `migrations/0012_archive_chunks.sql` and
//! `migrations/0013_archive_message_log.sql`; compaction, which takes
//! deleted messages off the disk, in [`compaction`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite};

use super::archive_chunk::{self, ChunkEntry, Format, Stanza};
use super::message_log::{Appended, Place};
use super::{Result, Storage};

mod compaction;
mod writer;

pub use writer::{ArchiveWriter, DEFAULT_COMMIT_DELAY};

/// Whose archive: a user's or a room's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveKind {
    /// A local user's (owner: the user name).
    User,
    /// A MUC room's (owner: the room's bare JID).
    Room,
}

impl ArchiveKind {
    /// The table of the archive's chunks and the column naming the owner.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Self::User => ("archive_chunks", "username"),
            Self::Room => ("muc_archive_chunks", "room"),
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

/// A message as the archive stores it, shared by the entries that list it
/// until they are staged ([`ArchiveSlot::message`] makes one).
#[derive(Debug)]
pub struct StoredMessage {
    /// Its place in the archiving order.
    pub seq: i64,
    /// The stanza id every archive listing it knows it by.
    pub id: String,
    /// When it was archived, microseconds since the Unix epoch.
    pub stamp: i64,
    /// The serialised message, without the archive's own `<stanza-id/>`.
    pub stanza: String,
    /// The random part of `id`, when the id has this server's format
    /// (stored as such, in 4 bytes).
    tag: Option<u32>,
    /// Where the writer staged the stanza, so that the next archive
    /// listing it in the same commit shares it.
    staged: StagedAt,
}

/// A commit's generation (0: none) and an offset in its stanzas.
#[derive(Debug, Default)]
struct StagedAt {
    generation: AtomicU64,
    offset: AtomicU64,
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
            tag: archive_chunk::tagged(self.seq, &self.id),
            id: self.id,
            stamp: self.stamp,
            stanza,
            staged: StagedAt::default(),
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

/// One archive's listing of a stored message, as
/// [`ArchiveWriter::append`] stages it.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveEntry<'a> {
    /// Whose archive.
    pub kind: ArchiveKind,
    /// The archive's owner (user name or room JID).
    pub owner: &'a str,
    /// The other party's bare JID.
    pub with: &'a str,
    /// The message, shared with the other archives listing it.
    pub message: &'a StoredMessage,
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

/// Rows written by one statement (at most 8 parameters each, far below
/// SQLite's limit of 32766).
const ROWS_PER_STATEMENT: usize = 100;

/// Most entries of one chunk the writer makes, and most bytes of stanzas
/// (an entry larger than that is a chunk of its own): a query reads whole
/// chunks.
const CHUNK_ENTRIES: usize = 256;
const CHUNK_BYTES: usize = 256 * 1024;

/// The stanzas of a batch, as they go to the message log: each once, at
/// a place relative to the start of the batch until it is written.
#[derive(Debug, Default)]
struct LogBatch {
    bytes: Vec<u8>,
    /// Where each stanza went, by its address: the archives listing a
    /// message share one string.
    placed: HashMap<(usize, usize), Place>,
}

impl LogBatch {
    /// A batch that starts with `bytes` (placed already).
    fn with_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            placed: HashMap::default(),
        }
    }

    /// `entries` (inline) with their stanzas placed in the batch.
    fn place_all<'a>(&mut self, entries: &[ChunkEntry<'a>]) -> Vec<ChunkEntry<'a>> {
        entries
            .iter()
            .map(|entry| ChunkEntry {
                stanza: match entry.stanza {
                    Stanza::Inline(text) => Stanza::Logged(self.place(text)),
                    logged @ Stanza::Logged(_) => logged,
                },
                ..*entry
            })
            .collect()
    }

    fn place(&mut self, text: &str) -> Place {
        *self
            .placed
            .entry((text.as_ptr() as usize, text.len()))
            .or_insert_with(|| {
                let offset = self.bytes.len() as u64;
                self.bytes.extend_from_slice(text.as_bytes());
                Place {
                    offset,
                    // Stanzas are limited far below 4 GiB.
                    len: text.len() as u32,
                }
            })
    }

    /// Writes the batch to the log: where it went.
    async fn append(self, storage: &Storage) -> Result<Appended> {
        storage.log.append(self.bytes).await
    }
}

/// A chunk to write: encoded entries of one archive, with what the
/// chunk's row says of them.
#[derive(Debug)]
struct Chunk<'a> {
    owner: &'a str,
    /// The segment of the message log its stanzas are in; `None` when
    /// they are in the chunk.
    segment: Option<u32>,
    first_seq: i64,
    last_seq: i64,
    min_stamp: i64,
    max_stamp: i64,
    count: i64,
    entries: Vec<u8>,
}

impl<'a> Chunk<'a> {
    /// The chunk of `entries` (in seq order, at least one), whose
    /// stanzas are all inline (`at` is `None`) or all logged; logged ones
    /// are placed relative to `at`.
    fn encode(owner: &'a str, at: Option<Appended>, entries: &[ChunkEntry]) -> Self {
        let stamps = entries.iter().map(|e| e.stamp);
        let bytes = archive_chunk::encode(entries, at.map_or(0, |at| at.offset));
        Self {
            owner,
            segment: at.map(|at| at.segment),
            first_seq: entries.first().map_or(0, |e| e.seq),
            last_seq: entries.last().map_or(0, |e| e.seq),
            min_stamp: stamps.clone().min().unwrap_or(0),
            max_stamp: stamps.max().unwrap_or(0),
            count: entries.len() as i64,
            entries: bytes,
        }
    }

    /// The chunks of a run of entries (in seq order), each within
    /// [`CHUNK_ENTRIES`] and [`CHUNK_BYTES`] of stanzas.
    fn pieces(owner: &'a str, at: Option<Appended>, mut run: &[ChunkEntry]) -> Vec<Self> {
        let mut pieces = Vec::new();
        while !run.is_empty() {
            let mut bytes = 0;
            let end = run
                .iter()
                .take(CHUNK_ENTRIES)
                .position(|e| {
                    bytes += e.stanza_len();
                    bytes > CHUNK_BYTES
                })
                .unwrap_or(run.len().min(CHUNK_ENTRIES))
                .max(1);
            let (piece, rest) = run.split_at(end);
            pieces.push(Self::encode(owner, at, piece));
            run = rest;
        }
        pieces
    }
}

/// `INSERT … SELECT … FROM (VALUES …)` of chunks of one kind; an owner
/// deleted meanwhile makes its rows a no-op, not a failure of the batch.
fn insert_chunks<'a>(
    kind: ArchiveKind,
    chunks: impl IntoIterator<Item = Chunk<'a>>,
) -> QueryBuilder<'a, Sqlite> {
    let (table, owner) = kind.table();
    let (owners, key) = kind.owners();
    let mut query = QueryBuilder::new(format!(
        "INSERT OR IGNORE INTO {table} \
         ({owner}, last_seq, first_seq, min_stamp, max_stamp, entry_count, entries, segment) \
         SELECT column1, column2, column3, column4, column5, column6, column7, column8 FROM ("
    ));
    query.push_values(chunks, |mut row, chunk| {
        row.push_bind(chunk.owner)
            .push_bind(chunk.last_seq)
            .push_bind(chunk.first_seq)
            .push_bind(chunk.min_stamp)
            .push_bind(chunk.max_stamp)
            .push_bind(chunk.count)
            .push_bind(chunk.entries)
            .push_bind(chunk.segment);
    });
    query.push(format!(
        ") WHERE EXISTS (SELECT 1 FROM {owners} WHERE {key} = column1)"
    ));
    query
}

/// Owners looked up by one statement.
const OWNERS_PER_STATEMENT: usize = 500;

/// The highest seq in each of these archives that has one.
async fn newest_seqs(
    tx: &mut sqlx::SqliteConnection,
    kind: ArchiveKind,
    owners: &[&str],
) -> Result<HashMap<String, i64>> {
    let (table, column) = kind.table();
    let mut newest = HashMap::with_capacity(owners.len());
    for some in owners.chunks(OWNERS_PER_STATEMENT) {
        // A subquery per owner: SQLite finds each maximum at the end of
        // the owner's index range, where `GROUP BY` would read it all.
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT column1, (SELECT MAX(last_seq) FROM {table} WHERE {column} = column1) \
             FROM (VALUES "
        ));
        let mut list = query.separated(", ");
        for owner in some {
            list.push("(")
                .push_bind_unseparated(*owner)
                .push_unseparated(")");
        }
        query.push(")");
        for row in query.build().fetch_all(&mut *tx).await? {
            if let Some(seq) = row.get::<Option<i64>, _>(1) {
                newest.insert(row.get(0), seq);
            }
        }
    }
    Ok(newest)
}

/// A chunk entry with its stanza, owning its strings.
#[derive(Debug)]
struct OwnedEntry {
    seq: i64,
    stamp: i64,
    id: String,
    with: String,
    stanza: String,
}

impl OwnedEntry {
    fn of(entry: &ChunkEntry, stanza: String) -> Self {
        Self {
            seq: entry.seq,
            stamp: entry.stamp,
            id: entry.id.text(entry.seq),
            with: entry.with.to_owned(),
            stanza,
        }
    }
}

/// Replaces the chunk of `chunk.owner`'s archive that ended at `last_seq`;
/// whether it was still there.
async fn rewrite_chunk(
    tx: &mut sqlx::SqliteConnection,
    kind: ArchiveKind,
    last_seq: i64,
    chunk: &Chunk<'_>,
) -> Result<bool> {
    let (table, column) = kind.table();
    let done = sqlx::query(&format!(
        "UPDATE {table} SET last_seq = ?, first_seq = ?, min_stamp = ?, max_stamp = ?, \
         entry_count = ?, entries = ?, segment = ? WHERE {column} = ? AND last_seq = ?"
    ))
    .bind(chunk.last_seq)
    .bind(chunk.first_seq)
    .bind(chunk.min_stamp)
    .bind(chunk.max_stamp)
    .bind(chunk.count)
    .bind(chunk.entries.as_slice())
    .bind(chunk.segment)
    .bind(chunk.owner)
    .bind(last_seq)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A chunk as read back.
#[derive(Debug)]
struct StoredChunk {
    first_seq: i64,
    last_seq: i64,
    /// The segment of the message log its stanzas are in, if logged.
    segment: Option<u32>,
    entries: Vec<u8>,
}

impl StoredChunk {
    /// The chunk of a row of `first_seq, last_seq, segment, entries`.
    fn from_row(row: sqlx::sqlite::SqliteRow) -> Self {
        Self {
            first_seq: row.get(0),
            last_seq: row.get(1),
            segment: row.get(2),
            entries: row.get(3),
        }
    }

    fn decode(&self) -> Result<Vec<ChunkEntry<'_>>> {
        let format = match self.segment {
            Some(_) => Format::Logged,
            None => Format::Inline,
        };
        archive_chunk::decode(&self.entries, format)
    }
}

/// Which entries of the chunks it reads a query keeps.
#[derive(Debug, Default)]
struct Wanted<'a> {
    /// Only seqs above this.
    after: Option<i64>,
    /// Only seqs below this.
    before: Option<i64>,
    with: Option<&'a str>,
    start: Option<i64>,
    end: Option<i64>,
}

impl Wanted<'_> {
    fn matches(&self, entry: &ChunkEntry) -> bool {
        self.after.is_none_or(|after| entry.seq > after)
            && self.before.is_none_or(|before| entry.seq < before)
            && self.with.is_none_or(|with| entry.with == with)
            && self.start.is_none_or(|start| entry.stamp >= start)
            && self.end.is_none_or(|end| entry.stamp <= end)
    }

    /// Whether no chunk past `chunk`, in the direction read, holds a
    /// wanted entry.
    fn passed(&self, chunk: &StoredChunk, backwards: bool) -> bool {
        if backwards {
            self.after.is_some_and(|after| chunk.last_seq <= after)
        } else {
            self.before.is_some_and(|before| chunk.first_seq >= before)
        }
    }
}

/// Chunks read by one statement while a query pages through an archive.
const CHUNKS_PER_READ: u32 = 32;

/// An archived message found in a chunk, its stanza perhaps still to be
/// read from the message log.
#[derive(Debug)]
struct Found {
    id: String,
    stamp: i64,
    stanza: FoundStanza,
}

#[derive(Debug)]
enum FoundStanza {
    Text(String),
    Logged(u32, Place),
}

impl Found {
    /// The message of an entry of `chunk`.
    fn of(chunk: &StoredChunk, entry: &ChunkEntry) -> Self {
        let stanza = match (entry.stanza, chunk.segment) {
            (Stanza::Logged(place), Some(segment)) => FoundStanza::Logged(segment, place),
            (Stanza::Inline(text), _) => FoundStanza::Text(text.to_owned()),
            // Decoding goes by the chunk's segment: no logged entry
            // comes from a chunk without one.
            (Stanza::Logged(_), None) => FoundStanza::Text(String::new()),
        };
        Self {
            id: entry.id.text(entry.seq),
            stamp: entry.stamp,
            stanza,
        }
    }
}

impl Storage {
    /// The highest seq in the archive (0 when empty), for
    /// [`ArchiveWriter::spawn`].
    pub async fn archive_last_seq(&self) -> Result<i64> {
        // One index lookup per owner, where `MAX` over a table would read
        // every chunk's key.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(last) FROM (
                 SELECT (SELECT MAX(last_seq) FROM archive_chunks c
                         WHERE c.username = a.username) AS last FROM accounts a
                 UNION ALL
                 SELECT (SELECT MAX(last_seq) FROM muc_archive_chunks c
                         WHERE c.room = r.room) FROM muc_rooms r)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(last.unwrap_or(0))
    }

    /// The messages of `owner`'s archive that `filter` selects, oldest
    /// first; `None` when its `after_id` or `before_id` is not in the
    /// archive.
    pub async fn archive_query(
        &self,
        kind: ArchiveKind,
        owner: &str,
        filter: &ArchiveFilter,
    ) -> Result<Option<Vec<ArchivedMessage>>> {
        let _reading = self.log.reading().await;
        let mut bounds = [None, None];
        for (bound, id) in bounds.iter_mut().zip([&filter.after_id, &filter.before_id]) {
            if let Some(id) = id {
                match self.archive_seq(kind, owner, id).await? {
                    Some(seq) => *bound = Some(seq),
                    None => return Ok(None),
                }
            }
        }
        let [after, before] = bounds;
        let wanted = Wanted {
            after,
            before,
            with: filter.with.as_deref(),
            start: filter.start,
            end: filter.end,
        };
        let limit = filter.limit as usize;
        let mut found = if filter.ids.is_empty() {
            self.archive_scan(kind, owner, &wanted, limit, filter.from_the_end)
                .await?
        } else {
            self.archive_pick(kind, owner, &filter.ids, &wanted).await?
        };
        if found.len() > limit {
            let extra = found.len() - limit;
            if filter.from_the_end {
                found.drain(..extra);
            } else {
                found.truncate(limit);
            }
        }
        Ok(Some(self.read_stanzas(found).await?))
    }

    /// The messages found, with their stanzas read from the log (one read
    /// of each segment).
    async fn read_stanzas(&self, found: Vec<Found>) -> Result<Vec<ArchivedMessage>> {
        let mut by_segment: BTreeMap<u32, Vec<(usize, Place)>> = BTreeMap::new();
        for (at, message) in found.iter().enumerate() {
            if let FoundStanza::Logged(segment, place) = message.stanza {
                by_segment.entry(segment).or_default().push((at, place));
            }
        }
        let mut texts: Vec<Option<String>> = found
            .iter()
            .map(|message| match &message.stanza {
                FoundStanza::Text(text) => Some(text.clone()),
                FoundStanza::Logged(..) => None,
            })
            .collect();
        for (segment, wanted) in by_segment {
            let places = wanted.iter().map(|(_, place)| *place).collect();
            let read = self.log.read(segment, places).await?;
            for ((at, _), text) in wanted.into_iter().zip(read) {
                texts[at] = Some(text);
            }
        }
        Ok(found
            .into_iter()
            .zip(texts)
            .map(|(message, text)| ArchivedMessage {
                id: message.id,
                stamp: message.stamp,
                stanza: text.unwrap_or_default(),
            })
            .collect())
    }

    /// The entries of `chunk` with their stanzas, for a rewrite.
    async fn owned_entries(&self, chunk: &StoredChunk) -> Result<Vec<OwnedEntry>> {
        let entries = chunk.decode()?;
        let found = entries.iter().map(|e| Found::of(chunk, e)).collect();
        let read = self.read_stanzas(found).await?;
        Ok(entries
            .iter()
            .zip(read)
            .map(|(entry, message)| OwnedEntry::of(entry, message.stanza))
            .collect())
    }

    /// Up to `limit` wanted messages of an archive, read from its oldest
    /// (or newest) chunks on, oldest first.
    async fn archive_scan(
        &self,
        kind: ArchiveKind,
        owner: &str,
        wanted: &Wanted<'_>,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        let mut pages = ChunkPages::new(kind, owner, wanted, backwards);
        'pages: while found.len() < limit {
            let page = pages.next(self).await?;
            if page.is_empty() {
                break;
            }
            for chunk in &page {
                if wanted.passed(chunk, backwards) {
                    break 'pages;
                }
                let entries = chunk.decode()?;
                let matching = entries.iter().filter(|e| wanted.matches(e));
                let room = limit - found.len();
                let of_chunk = |e: &ChunkEntry| Found::of(chunk, e);
                if backwards {
                    found.extend(matching.rev().take(room).map(of_chunk));
                } else {
                    found.extend(matching.take(room).map(of_chunk));
                }
                if found.len() == limit {
                    break 'pages;
                }
            }
        }
        if backwards {
            found.reverse();
        }
        Ok(found)
    }

    /// The wanted messages of an archive among those with these ids,
    /// oldest first.
    async fn archive_pick(
        &self,
        kind: ArchiveKind,
        owner: &str,
        ids: &[String],
        wanted: &Wanted<'_>,
    ) -> Result<Vec<Found>> {
        let mut found = Vec::new();
        for id in ids {
            let picked = self
                .archive_find(kind, owner, id, |chunk, e| {
                    wanted.matches(e).then(|| (e.seq, Found::of(chunk, e)))
                })
                .await?;
            found.extend(picked.flatten());
        }
        found.sort_by_key(|(seq, _)| *seq);
        found.dedup_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, message)| message).collect())
    }

    /// The seq of the message with this id in `owner`'s archive.
    async fn archive_seq(&self, kind: ArchiveKind, owner: &str, id: &str) -> Result<Option<i64>> {
        self.archive_find(kind, owner, id, |_, e| e.seq).await
    }

    /// What `read` takes from the entry of `owner`'s archive with this id.
    async fn archive_find<R>(
        &self,
        kind: ArchiveKind,
        owner: &str,
        id: &str,
        read: impl Fn(&StoredChunk, &ChunkEntry) -> R,
    ) -> Result<Option<R>> {
        let read_in = |chunk: &StoredChunk| -> Result<Option<R>> {
            Ok(chunk
                .decode()?
                .iter()
                .find(|e| e.id.is(e.seq, id))
                .map(|e| read(chunk, e)))
        };
        if let Some(seq) = seq_of(id) {
            let wanted = Wanted::default();
            let mut pages = ChunkPages::new(kind, owner, &wanted, false).starting_at(seq, 1);
            if let Some(chunk) = pages.next(self).await?.pop() {
                if chunk.first_seq <= seq {
                    if let Some(found) = read_in(&chunk)? {
                        return Ok(Some(found));
                    }
                }
            }
        }
        // A message of the earliest layout keeps an id of another format:
        // it is found among the chunks of that time.
        let earliest = Wanted {
            before: Some(FIRST_TIMED_SEQ),
            ..Wanted::default()
        };
        let mut pages = ChunkPages::new(kind, owner, &earliest, false);
        loop {
            let page = pages.next(self).await?;
            if page.is_empty() {
                return Ok(None);
            }
            for chunk in page {
                if earliest.passed(&chunk, false) {
                    return Ok(None);
                }
                if let Some(found) = read_in(&chunk)? {
                    return Ok(Some(found));
                }
            }
        }
    }

    /// Whether `owner`'s archive holds a message with this id.
    #[cfg(test)]
    pub async fn archive_has(&self, kind: ArchiveKind, owner: &str, id: &str) -> Result<bool> {
        let _reading = self.log.reading().await;
        Ok(self.archive_seq(kind, owner, id).await?.is_some())
    }

    /// The oldest and newest message of `owner`'s archive.
    pub async fn archive_bounds(
        &self,
        kind: ArchiveKind,
        owner: &str,
    ) -> Result<Option<(ArchivedMessage, ArchivedMessage)>> {
        let _reading = self.log.reading().await;
        let everything = Wanted::default();
        let mut ends = Vec::with_capacity(2);
        for backwards in [false, true] {
            let found = self
                .archive_scan(kind, owner, &everything, 1, backwards)
                .await?;
            match found.into_iter().next() {
                Some(end) => ends.push(end),
                None => return Ok(None),
            }
        }
        let mut ends = self.read_stanzas(ends).await?;
        let newest = ends.pop();
        Ok(ends.pop().zip(newest))
    }

    /// Deletes archived messages (of users and rooms) stamped before
    /// `stamp`; how many went. Their bytes in the message log go at the
    /// next compaction: the segments they were in are marked for it.
    /// Runs on the archive writer ([`ArchiveWriter::expire`]), which alone
    /// rewrites chunks.
    async fn archive_expire(&self, stamp: i64) -> Result<u64> {
        let mut tx = self.archive_pool.begin().await?;
        let mut deleted = 0;
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let (table, column) = kind.table();
            let gone: Vec<i64> = sqlx::query_scalar(&format!(
                "DELETE FROM {table} WHERE min_stamp < ?1 AND max_stamp < ?1 \
                 RETURNING entry_count"
            ))
            .bind(stamp)
            .fetch_all(&mut *tx)
            .await?;
            deleted += gone.iter().sum::<i64>() as u64;
            // What is left with older entries is the chunk that straddles
            // the cut-off, at most one per archive.
            let straddling = sqlx::query(&format!(
                "SELECT {column}, first_seq, last_seq, segment, entries FROM {table} \
                 WHERE min_stamp < ?"
            ))
            .bind(stamp)
            .fetch_all(&mut *tx)
            .await?;
            for row in straddling {
                let owner: String = row.get(0);
                let chunk = StoredChunk {
                    first_seq: row.get(1),
                    last_seq: row.get(2),
                    segment: row.get(3),
                    entries: row.get(4),
                };
                let entries = chunk.decode()?;
                let kept: Vec<ChunkEntry> = entries
                    .iter()
                    .copied()
                    .filter(|e| e.stamp >= stamp)
                    .collect();
                deleted += (entries.len() - kept.len()) as u64;
                // Its max_stamp is at or after the cut-off, so something is
                // kept; stamps need not follow seqs, so its last seq may go.
                // Logged places stay as they are (relative to offset 0).
                let at = chunk.segment.map(|segment| Appended { segment, offset: 0 });
                let rewritten = Chunk::encode(&owner, at, &kept);
                rewrite_chunk(&mut tx, kind, chunk.last_seq, &rewritten).await?;
                if let Some(segment) = chunk.segment {
                    compaction::mark_dirty(&mut tx, segment).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Reads an archive's chunks page by page, in seq order or backwards,
/// skipping chunks without a stamp `wanted` takes.
struct ChunkPages<'a> {
    kind: ArchiveKind,
    owner: &'a str,
    wanted: &'a Wanted<'a>,
    backwards: bool,
    /// The last seq of the next chunk to read is at or after (backwards:
    /// at or before) this.
    next: i64,
    /// A chunk to read first, backwards, before `next`: the one that may
    /// straddle the `before` bound.
    straddling: Option<i64>,
    per_read: u32,
    done: bool,
}

impl<'a> ChunkPages<'a> {
    fn new(kind: ArchiveKind, owner: &'a str, wanted: &'a Wanted<'a>, backwards: bool) -> Self {
        let (next, straddling) = if backwards {
            match wanted.before {
                Some(before) => (before.saturating_sub(1), Some(before)),
                None => (i64::MAX, None),
            }
        } else {
            (wanted.after.map_or(i64::MIN, |a| a.saturating_add(1)), None)
        };
        Self {
            kind,
            owner,
            wanted,
            backwards,
            next,
            straddling,
            per_read: CHUNKS_PER_READ,
            done: false,
        }
    }

    /// Reads forwards from the chunk that ends at or after `seq`, `per_read`
    /// chunks at a time.
    fn starting_at(mut self, seq: i64, per_read: u32) -> Self {
        self.next = seq;
        self.per_read = per_read;
        self
    }

    /// The next chunks; none once the archive is read.
    async fn next(&mut self, storage: &Storage) -> Result<Vec<StoredChunk>> {
        if let Some(before) = self.straddling.take() {
            let first = self.read(storage, before, false, 1).await?;
            if first.iter().any(|chunk| chunk.first_seq < before) {
                return Ok(first);
            }
        }
        if self.done {
            return Ok(Vec::new());
        }
        let page = self
            .read(storage, self.next, self.backwards, self.per_read)
            .await?;
        match page.last() {
            Some(last) if page.len() == self.per_read as usize => {
                self.next = if self.backwards {
                    last.last_seq.checked_sub(1)
                } else {
                    last.last_seq.checked_add(1)
                }
                .unwrap_or_else(|| {
                    self.done = true;
                    0
                });
            }
            _ => self.done = true,
        }
        Ok(page)
    }

    /// Up to `count` chunks from the one ending at `from` on.
    async fn read(
        &self,
        storage: &Storage,
        from: i64,
        backwards: bool,
        count: u32,
    ) -> Result<Vec<StoredChunk>> {
        let (table, column) = self.kind.table();
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT first_seq, last_seq, segment, entries FROM {table} WHERE {column} = "
        ));
        query.push_bind(self.owner);
        query.push(if backwards {
            " AND last_seq <= "
        } else {
            " AND last_seq >= "
        });
        query.push_bind(from);
        if let Some(start) = self.wanted.start {
            query.push(" AND max_stamp >= ").push_bind(start);
        }
        if let Some(end) = self.wanted.end {
            query.push(" AND min_stamp <= ").push_bind(end);
        }
        query.push(if backwards {
            " ORDER BY last_seq DESC LIMIT "
        } else {
            " ORDER BY last_seq LIMIT "
        });
        query.push_bind(count);
        let rows = query.build().fetch_all(&storage.pool).await?;
        Ok(rows.into_iter().map(StoredChunk::from_row).collect())
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

    /// A database with the account `a`, and its archive writer.
    async fn archive_of_a() -> (tempfile::TempDir, Storage, ArchiveWriter) {
        let (dir, storage) = open().await;
        storage.create_account("a", "pw").await.expect("account");
        let writer = ArchiveWriter::spawn(storage.clone(), 0, DEFAULT_COMMIT_DELAY);
        (dir, storage, writer)
    }

    /// A database with the accounts `a` and `b`, and its archive writer.
    async fn archive_of_a_and_b() -> (tempfile::TempDir, Storage, ArchiveWriter) {
        let (dir, storage, writer) = archive_of_a().await;
        storage.create_account("b", "pw").await.expect("account");
        (dir, storage, writer)
    }

    /// A message between `a` and `b`, in both their archives.
    async fn between_a_and_b(writer: &ArchiveWriter, text: &str) -> Arc<StoredMessage> {
        let message = writer.slot().message(stanza(text));
        writer.append(entry("a", "b@x", &message)).await;
        writer.append(entry("b", "a@x", &message)).await;
        writer.flushed().await;
        message
    }

    /// The ids of everything in `owner`'s archive, oldest first.
    async fn ids_of(storage: &Storage, owner: &str) -> Vec<String> {
        everything(storage, owner)
            .await
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    fn stanza(text: &str) -> String {
        format!("<message xmlns='jabber:client'><body>{text}</body></message>")
    }

    fn entry<'a>(owner: &'a str, with: &'a str, message: &'a StoredMessage) -> ArchiveEntry<'a> {
        ArchiveEntry {
            kind: ArchiveKind::User,
            owner,
            with,
            message,
        }
    }

    /// Chunks in the users' and the rooms' archives.
    async fn chunks(storage: &Storage) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM archive_chunks) \
             + (SELECT COUNT(*) FROM muc_archive_chunks)",
        )
        .fetch_one(&storage.pool)
        .await
        .expect("count")
    }

    /// A message of a chosen seq and stamp.
    fn message_at(seq: i64, stamp: i64) -> Arc<StoredMessage> {
        let slot = ArchiveSlot {
            seq,
            id: format!("{seq:016x}0000000{}", seq % 10),
            stamp,
        };
        slot.message(stanza(&seq.to_string()))
    }

    /// What `filter` selects in user `owner`'s archive (no unknown ids).
    async fn select(
        storage: &Storage,
        owner: &str,
        filter: &ArchiveFilter,
    ) -> Vec<ArchivedMessage> {
        storage
            .archive_query(ArchiveKind::User, owner, filter)
            .await
            .expect("query")
            .expect("no unknown id bounds")
    }

    async fn everything(storage: &Storage, owner: &str) -> Vec<ArchivedMessage> {
        let filter = ArchiveFilter {
            limit: 1000,
            ..ArchiveFilter::default()
        };
        select(storage, owner, &filter).await
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
        let writer = ArchiveWriter::spawn(storage, ahead, DEFAULT_COMMIT_DELAY);
        let (first, second) = (writer.slot(), writer.slot());
        assert_eq!((first.seq, second.seq), (ahead + 1, ahead + 2));
        assert_eq!(seq_of(&first.id), Some(first.seq));
        assert_ne!(first.id, second.id);
    }

    #[tokio::test]
    async fn a_message_between_two_users_is_in_both_archives_and_outlives_one_of_them() {
        let (_dir, storage, writer) = archive_of_a_and_b().await;
        let message = between_a_and_b(&writer, "hi").await;
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
        assert_eq!(chunks(&storage).await, 1, "still in b's archive");
        assert_eq!(everything(&storage, "b").await.len(), 1);
        storage.delete_account("b").await.expect("delete");
        assert_eq!(chunks(&storage).await, 0, "in nobody's archive");
    }

    /// Whether any file of the message log holds `text`.
    fn logged_anywhere(dir: &std::path::Path, text: &str) -> bool {
        let log = dir.join("archive-log");
        std::fs::read_dir(&log)
            .expect("log dir")
            .flatten()
            .any(|file| {
                let bytes = std::fs::read(file.path()).expect("read");
                bytes.windows(text.len()).any(|w| w == text.as_bytes())
            })
    }

    /// The message log's segment numbers.
    fn segments(storage: &Storage) -> Vec<u32> {
        storage
            .log
            .segments()
            .expect("segments")
            .into_keys()
            .collect()
    }

    #[tokio::test]
    async fn stanzas_go_to_the_log_once_and_the_database_holds_none() {
        let (dir, storage, writer) = archive_of_a_and_b().await;
        let message = between_a_and_b(&writer, "only-once").await;
        let mut copies = 0;
        for segment in segments(&storage) {
            let bytes = storage.log.read_segment(segment).await.expect("segment");
            let text = String::from_utf8_lossy(&bytes);
            copies += text.matches(message.stanza.as_str()).count();
        }
        assert_eq!(copies, 1, "one copy for two archives");
        storage.close().await;
        let database = std::fs::read(dir.path().join("tern.sqlite3")).expect("database");
        assert!(!database.windows(9).any(|w| w == b"only-once"));
    }

    #[tokio::test]
    async fn the_archive_reads_back_after_a_restart_and_goes_on_in_the_same_segment() {
        let (dir, storage, writer) = archive_of_a().await;
        let first = writer.slot().message(stanza("before"));
        writer.append(entry("a", "b@x", &first)).await;
        writer.flushed().await;
        storage.close().await;
        drop(writer);

        let storage = Storage::open(dir.path()).await.expect("reopen");
        let last = storage.archive_last_seq().await.expect("last seq");
        let writer = ArchiveWriter::spawn(storage.clone(), last, DEFAULT_COMMIT_DELAY);
        let second = writer.slot().message(stanza("after"));
        writer.append(entry("a", "b@x", &second)).await;
        writer.flushed().await;
        let found = everything(&storage, "a").await;
        let texts: Vec<&str> = found.iter().map(|m| m.stanza.as_str()).collect();
        assert_eq!(texts, [first.stanza.as_str(), second.stanza.as_str()]);
        assert_eq!(segments(&storage), [1]);
    }

    /// Deleting an account takes its messages off the disk at the next
    /// sweep, and leaves the messages of the others readable.
    #[tokio::test]
    async fn a_deleted_accounts_messages_leave_the_disk() {
        let (dir, storage, writer) = archive_of_a_and_b().await;
        let secret = writer.slot().message(stanza("secret-of-a"));
        let kept = writer.slot().message(stanza("kept-by-b"));
        writer.append(entry("a", "c@x", &secret)).await;
        writer.append(entry("b", "c@x", &kept)).await;
        writer.flushed().await;
        assert!(logged_anywhere(dir.path(), "secret-of-a"));

        storage.delete_account("a").await.expect("delete");
        writer.sweep().await;
        assert!(!logged_anywhere(dir.path(), "secret-of-a"));
        assert_eq!(segments(&storage), [2], "compacted into a new segment");
        let found = everything(&storage, "b").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].stanza, kept.stanza);

        // Appends go on in the new segment, and a sweep with nothing to
        // do changes nothing.
        let later = writer.slot().message(stanza("later"));
        writer.append(entry("b", "c@x", &later)).await;
        writer.flushed().await;
        writer.sweep().await;
        assert_eq!(segments(&storage), [2]);
        assert_eq!(everything(&storage, "b").await.len(), 2);
        storage.delete_account("b").await.expect("delete");
        writer.sweep().await;
        assert!(!logged_anywhere(dir.path(), "kept-by-b"));
        assert!(!logged_anywhere(dir.path(), "later"));
    }

    /// The writer remembers each archive's newest seq; an account deleted
    /// and created again under its name starts from nothing all the same.
    #[tokio::test]
    async fn an_archive_made_again_under_its_name_gets_its_messages() {
        let (_dir, storage, writer) = archive_of_a().await;
        writer
            .append(entry("a", "b@x", &message_at(100, 100)))
            .await;
        writer.flushed().await;
        storage.delete_account("a").await.expect("delete");
        storage.create_account("a", "pw").await.expect("account");
        let earlier = [message_at(50, 50), message_at(60, 60)];
        for message in &earlier {
            writer.append(entry("a", "b@x", message)).await;
        }
        writer.flushed().await;
        let ids: Vec<String> = earlier.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids_of(&storage, "a").await, ids);
        let later = message_at(70, 70);
        writer.append(entry("a", "b@x", &later)).await;
        writer.flushed().await;
        assert_eq!(ids_of(&storage, "a").await.len(), 3);
    }

    #[tokio::test]
    async fn a_destroyed_rooms_messages_leave_the_disk() {
        let (dir, storage, writer) = archive_of_a().await;
        let limits = crate::storage::RoomLimits {
            per_owner: 10,
            total: 10,
        };
        storage
            .muc_create("r@muc.x", "a@x", limits)
            .await
            .expect("room");
        let said = writer.slot().message(stanza("said-in-the-room"));
        let entry = ArchiveEntry {
            kind: ArchiveKind::Room,
            owner: "r@muc.x",
            with: "a@x",
            message: &said,
        };
        writer.append(entry).await;
        writer.flushed().await;
        assert!(storage
            .archive_has(ArchiveKind::Room, "r@muc.x", &said.id)
            .await
            .expect("has"));
        storage.muc_destroy("r@muc.x").await.expect("destroy");
        writer.sweep().await;
        assert!(!logged_anywhere(dir.path(), "said-in-the-room"));
    }

    #[tokio::test]
    async fn expired_messages_leave_the_log() {
        let (dir, storage, writer) = archive_of_a().await;
        let old = message_at(1, 10);
        let new = message_at(2, 30);
        for message in [&old, &new] {
            writer.append(entry("a", "b@x", message)).await;
        }
        writer.flushed().await;
        assert_eq!(writer.expire(20).await.expect("expire"), 1);
        assert!(!logged_anywhere(dir.path(), &old.stanza));
        assert_eq!(everything(&storage, "a").await[0].stanza, new.stanza);
        assert_eq!(writer.expire(40).await.expect("expire"), 1);
        assert!(!logged_anywhere(dir.path(), &new.stanza));
    }

    /// Segments nothing points into (an interrupted commit's) go when the
    /// writer starts, all but the one appends go to.
    #[tokio::test]
    async fn unlisted_segments_are_removed_when_the_writer_starts() {
        let (dir, storage) = open().await;
        let log = dir.path().join("archive-log");
        std::fs::write(log.join("00000001.log"), "<message>lost</message>").expect("write");
        std::fs::write(log.join("00000002.log"), "<message>lost</message>").expect("write");
        let writer = ArchiveWriter::spawn(storage.clone(), 0, DEFAULT_COMMIT_DELAY);
        writer.sweep().await;
        assert_eq!(segments(&storage), [2]);
    }

    /// A message queued after a later one of its archive was written goes
    /// into the chunk its seq falls in: the archive stays in seq order.
    #[tokio::test]
    async fn late_messages_take_their_place_in_the_order() {
        let (_dir, storage, writer) = archive_of_a().await;
        let messages: Vec<_> = (1..=5).map(|n| message_at(n * 10, n * 10)).collect();
        for batch in [&[0, 2][..], &[1, 4], &[2, 3]] {
            for &n in batch {
                writer.append(entry("a", "b@x", &messages[n])).await;
            }
            writer.flushed().await;
        }
        let expected: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        let ids = ids_of(&storage, "a").await;
        assert_eq!(ids, expected, "in order, the repeated one once");
        assert_eq!(chunks(&storage).await, 2, "late ones joined a chunk");
    }

    #[tokio::test]
    async fn long_runs_are_read_in_pages_across_chunks() {
        let (_dir, storage, writer) = archive_of_a().await;
        let messages: Vec<_> = (1..=600).map(|n| message_at(n, n)).collect();
        for (n, message) in messages.iter().enumerate() {
            let with = if n % 7 == 0 { "seven@x" } else { "other@x" };
            writer.append(entry("a", with, message)).await;
        }
        writer.flushed().await;
        assert!(chunks(&storage).await >= 3, "{}", chunks(&storage).await);
        let ids = |range: std::ops::Range<usize>| -> Vec<String> {
            messages[range].iter().map(|m| m.id.clone()).collect()
        };
        let query = |filter: ArchiveFilter| {
            let storage = storage.clone();
            async move {
                let page = select(&storage, "a", &filter).await;
                page.into_iter().map(|m| m.id).collect::<Vec<_>>()
            }
        };
        let id = |n: usize| Some(messages[n].id.clone());
        let forwards = ArchiveFilter {
            after_id: id(250),
            limit: 100,
            ..ArchiveFilter::default()
        };
        assert_eq!(query(forwards).await, ids(251..351));
        let backwards = ArchiveFilter {
            before_id: id(300),
            limit: 100,
            from_the_end: true,
            ..ArchiveFilter::default()
        };
        assert_eq!(query(backwards).await, ids(200..300));
        let between = ArchiveFilter {
            after_id: id(10),
            before_id: id(520),
            limit: 1000,
            ..ArchiveFilter::default()
        };
        assert_eq!(query(between).await, ids(11..520));
        let last_sevens = ArchiveFilter {
            with: Some("seven@x".into()),
            before_id: id(599),
            limit: 3,
            from_the_end: true,
            ..ArchiveFilter::default()
        };
        let sevens: Vec<String> = [581, 588, 595]
            .iter()
            .map(|&n| messages[n].id.clone())
            .collect();
        assert_eq!(query(last_sevens).await, sevens);
        let stamped = ArchiveFilter {
            start: Some(300),
            end: Some(302),
            limit: 10,
            ..ArchiveFilter::default()
        };
        assert_eq!(query(stamped).await, ids(299..302));
        let picked = ArchiveFilter {
            ids: vec![messages[599].id.clone(), messages[0].id.clone()],
            limit: 10,
            ..ArchiveFilter::default()
        };
        assert_eq!(
            query(picked).await,
            [messages[0].id.clone(), messages[599].id.clone()]
        );
        let (oldest, newest) = storage
            .archive_bounds(ArchiveKind::User, "a")
            .await
            .expect("bounds")
            .expect("not empty");
        assert_eq!(
            (oldest.id, newest.id),
            (messages[0].id.clone(), messages[599].id.clone())
        );
    }

    /// Expiry goes by each message's stamp, inside a chunk too, even where
    /// stamps do not follow seqs.
    #[tokio::test]
    async fn expiry_cuts_inside_a_chunk() {
        let (_dir, storage, writer) = archive_of_a().await;
        let messages = [message_at(1, 10), message_at(2, 30), message_at(3, 20)];
        for message in &messages {
            writer.append(entry("a", "b@x", message)).await;
        }
        writer.flushed().await;
        assert_eq!(storage.archive_expire(25).await.expect("expire"), 2);
        assert_eq!(ids_of(&storage, "a").await, [messages[1].id.clone()]);
        let later = message_at(4, 40);
        writer.append(entry("a", "b@x", &later)).await;
        writer.flushed().await;
        assert_eq!(everything(&storage, "a").await.len(), 2);
        assert_eq!(storage.archive_expire(100).await.expect("expire"), 2);
        assert_eq!(chunks(&storage).await, 0);
    }

    #[tokio::test]
    async fn stanzas_come_back_byte_for_byte() {
        let (_dir, storage, writer) = archive_of_a().await;
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
        let page = select(&storage, "a", &with_quote).await;
        assert_eq!(page.len(), 1);
    }

    #[tokio::test]
    async fn pages_follow_ids_and_unknown_ids_select_nothing() {
        let (_dir, storage, writer) = archive_of_a().await;
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

    /// The data directory of a database brought up to the migrations
    /// before `first_left_out`, then given `statements`.
    async fn database_before(
        dir: &std::path::Path,
        first_left_out: &str,
        statements: &[&str],
    ) -> std::path::PathBuf {
        let earlier = dir.join("earlier-migrations");
        std::fs::create_dir(&earlier).expect("dir");
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for file in std::fs::read_dir(&migrations)
            .expect("migrations")
            .flatten()
        {
            let name = file.file_name();
            if name.to_string_lossy().as_ref() < first_left_out {
                std::fs::copy(file.path(), earlier.join(&name)).expect("copy");
            }
        }
        let data = dir.join("data");
        let storage = Storage::connect(&data).await.expect("open");
        sqlx::migrate::Migrator::new(earlier.as_path())
            .await
            .expect("earlier migrations")
            .run(&storage.pool)
            .await
            .expect("migrate");
        for statement in statements {
            sqlx::query(statement)
                .execute(&storage.pool)
                .await
                .expect(statement);
        }
        storage.pool.close().await;
        data
    }

    /// Archives written in the per-archive layout (before migration 11)
    /// keep their messages, order and ids.
    #[tokio::test]
    async fn messages_of_the_earlier_layout_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = database_before(
            dir.path(),
            "0011",
            &[
                "INSERT INTO accounts VALUES ('a', 'now')",
                "INSERT INTO archive (username, id, with_jid, stamp, stanza) VALUES \
                 ('a', 'uuid-1', 'b@x', 10, '<message xmlns=''jabber:client''/>'), \
                 ('a', '0000000000000001deadbeef', 'c@x', 20, '<message xmlns=''jabber:client''/>')",
                "INSERT INTO muc_rooms (room, created_at) VALUES ('r@muc.x', 'now')",
                "INSERT INTO muc_archive (room, id, with_jid, stamp, stanza) VALUES \
                 ('r@muc.x', 'room-1', 'b@x', 30, '<message xmlns=''jabber:client''/>')",
            ],
        )
        .await;
        let storage = Storage::open(&data).await.expect("migrated");
        let ids = ids_of(&storage, "a").await;
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
        let writer = ArchiveWriter::spawn(storage, last, DEFAULT_COMMIT_DELAY);
        assert!(writer.slot().seq > FIRST_TIMED_SEQ);
    }

    /// Archives of the shared-message layout (migration 11) become chunks
    /// with every byte of their messages, in order, for users and rooms.
    #[tokio::test]
    async fn messages_of_the_shared_layout_become_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tricky =
            "<message xmlns=''jabber:client''><body>é 🦀 \"q\" ''s'' \t\n&amp;</body></message>";
        let first = "0006000000000001deadbeef";
        let second = "0006000000000002cafebabe";
        let messages = format!(
            "INSERT INTO archive_messages (seq, id, stamp, stanza) VALUES \
             (1688849860263937, '{first}', 1688849860263937, '{tricky}'), \
             (1688849860263938, '{second}', 1688849860263900, '<message/>')"
        );
        let data = database_before(
            dir.path(),
            "0012",
            &[
                "INSERT INTO accounts VALUES ('a', 'now'), ('b', 'now')",
                "INSERT INTO muc_rooms (room, created_at) VALUES ('r@muc.x', 'now')",
                &messages,
                "INSERT INTO archive_entries (username, seq, with_jid) VALUES \
                 ('a', 1688849860263937, 'b@x'), ('b', 1688849860263937, 'a@x'), \
                 ('a', 1688849860263938, 'ü@x')",
                "INSERT INTO muc_archive_entries (room, seq, with_jid) VALUES \
                 ('r@muc.x', 1688849860263938, 'a@x')",
            ],
        )
        .await;
        let storage = Storage::open(&data).await.expect("migrated");
        let tricky = tricky.replace("''", "'");
        let of_a = everything(&storage, "a").await;
        let expected = [
            ArchivedMessage {
                id: first.into(),
                stamp: 1688849860263937,
                stanza: tricky.clone(),
            },
            ArchivedMessage {
                id: second.into(),
                stamp: 1688849860263900,
                stanza: "<message/>".into(),
            },
        ];
        assert_eq!(of_a, expected);
        assert_eq!(everything(&storage, "b").await, expected[..1]);
        let with_umlaut = ArchiveFilter {
            with: Some("ü@x".into()),
            limit: 10,
            ..ArchiveFilter::default()
        };
        let found = select(&storage, "a", &with_umlaut).await;
        assert_eq!(found, expected[1..]);
        assert!(storage
            .archive_has(ArchiveKind::Room, "r@muc.x", second)
            .await
            .expect("has"));
        assert_eq!(
            storage.archive_last_seq().await.expect("last"),
            1688849860263938
        );

        // A late message joins a chunk of the earlier format: the chunk
        // moves to the log, every stanza with it.
        storage.create_account("c", "pw").await.expect("account");
        let writer = ArchiveWriter::spawn(storage.clone(), 0, DEFAULT_COMMIT_DELAY);
        let late = message_at(1688849860263937 - 1, 5);
        writer.append(entry("a", "c@x", &late)).await;
        writer.flushed().await;
        let of_a = everything(&storage, "a").await;
        let texts: Vec<&str> = of_a.iter().map(|m| m.stanza.as_str()).collect();
        assert_eq!(texts, [late.stanza.as_str(), &tricky, "<message/>"]);
    }
}
