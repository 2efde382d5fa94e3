//! The archive writer: routing stages archive entries, the writer commits
//! them in groups.
//!
//! Staging copies what a commit needs while routing still has it in
//! cache: the stanza, once per message however many archives list it,
//! goes straight into the bytes the commit appends to the message log;
//! owners are numbered, other parties' JIDs and odd ids copied into one
//! string. The writer then works on a few contiguous buffers instead of
//! thousands of small allocations made tens of milliseconds earlier, whose
//! every touch was a cache miss.

use std::collections::HashMap;
use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use sqlx::Connection;
use tokio::sync::{oneshot, watch, Notify};

use super::{
    compaction, insert_chunks, newest_seqs, rewrite_chunk, ArchiveEntry, ArchiveKind, ArchiveSlot,
    Chunk, LogBatch, OwnedEntry, StoredChunk, StoredMessage, ROWS_PER_STATEMENT,
};
use crate::storage::archive_chunk::{self, ChunkEntry, EntryId, Stanza};
use crate::storage::message_log::Place;
use crate::storage::{Result, Storage};

/// How long the writer gathers entries before a commit by default
/// (`archive.commit_delay_ms`), unless a reader waits
/// ([`ArchiveWriter::flushed`]) or half of [`MAX_STAGED`] is staged. The
/// first entry of a commit wakes the writer, so nothing staged waits
/// longer than this plus the commit before it is on disk: Stream
/// Management acknowledgements wait for that commit
/// ([`ArchiveWriter::durable_mark`]). Each commit costs the database a
/// page write per archive it touches, so larger commits cost less a
/// message. At saturation on one core, 60 ms and 16,384 changes gave
/// 67.4k msg/s, 20 ms and 4,096 64.3k, 200 ms and 65,536 62.8k (three
/// alternating runs each, with the writer woken only by a full half).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// Most entries staged; routing waits for a commit beyond.
const MAX_STAGED: usize = 32_768;

/// Stages archive entries and writes them in group commits without
/// making message routing wait for them; [`ArchiveWriter::flushed`] waits
/// for what was staged before, so a query sees every message routed
/// before it, and [`ArchiveWriter::durable`] for what was staged before
/// a [`ArchiveWriter::durable_mark`], so that an acknowledgement is sent
/// only once what it acknowledges is on disk. The writer task ends once every handle is dropped, after
/// writing what was staged.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    handle: Arc<Handle>,
    /// The last seq given out.
    last_seq: Arc<AtomicI64>,
}

/// Shared by the handles; dropping the last one closes the writer.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.staging().closed = true;
        self.shared.wake.notify_one();
    }
}

/// What the handles and the writer task share.
#[derive(Debug)]
struct Shared {
    staging: Mutex<Staging>,
    /// Wakes the writer: the first entry of a commit is staged, work is
    /// urgent, half of [`MAX_STAGED`] waits, or the handles are gone.
    wake: Notify,
    /// Ends the writer's wait for more entries early: work is urgent or
    /// half of [`MAX_STAGED`] waits.
    hurry: Notify,
    /// How long the writer waits for more entries after the first.
    linger: Duration,
    /// The generation of the last entry staged.
    last_staged: AtomicU64,
    /// Wakes routing waiting for room in a full staging area.
    room: Notify,
    /// The last generation written (or failed: readers go on).
    written: watch::Sender<u64>,
    /// The last generation whose entries are all on disk: it stops at
    /// the first commit that fails, since a later one would not make
    /// that one's entries durable.
    durable: watch::Sender<u64>,
}

impl Shared {
    fn staging(&self) -> MutexGuard<'_, Staging> {
        // Staging is left consistent at every step: a panic elsewhere
        // does not make it unusable.
        self.staging.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stages `entry` unless the staging area is full.
    fn try_stage(&self, entry: &ArchiveEntry) -> bool {
        let mut staging = self.staging();
        if staging.entries.len() >= MAX_STAGED {
            return false;
        }
        staging.stage(entry);
        self.last_staged
            .store(staging.generation, Ordering::Relaxed);
        match staging.entries.len() {
            1 => self.wake.notify_one(),
            n if n == MAX_STAGED / 2 => {
                self.wake.notify_one();
                self.hurry.notify_one();
            }
            _ => {}
        }
        true
    }
}

/// The entries of the next commit, and what it is to do besides.
#[derive(Debug, Default)]
struct Staging {
    /// Which commit this is, from 1 (a message staged in an earlier one
    /// is staged again).
    generation: u64,
    /// The stanzas, as the commit appends them to the message log.
    stanzas: String,
    /// Other parties' JIDs and ids not of this server's format.
    names: String,
    /// The archives listed, each once, by their number.
    owners: Vec<(ArchiveKind, String)>,
    /// The numbers of users' archives and of rooms'.
    numbers: [HashMap<String, u32>; 2],
    entries: Vec<Staged>,
    requests: Vec<Request>,
    /// Someone waits: commit without lingering.
    urgent: bool,
    /// Every handle is gone.
    closed: bool,
}

/// One staged entry.
#[derive(Debug)]
struct Staged {
    owner: u32,
    seq: i64,
    stamp: i64,
    with: Range<usize>,
    id: StagedId,
    /// The stanza's place in [`Staging::stanzas`].
    stanza: Place,
}

#[derive(Debug)]
enum StagedId {
    Tagged(u32),
    Text(Range<usize>),
}

/// Work for the writer besides entries, with whoever waits for it.
#[derive(Debug)]
enum Request {
    /// Delete the messages stamped before this, then compact.
    Expire(i64, oneshot::Sender<std::result::Result<u64, String>>),
    /// Compact the message log.
    Sweep(oneshot::Sender<()>),
}

impl Staging {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.requests.is_empty()
    }

    fn stage(&mut self, entry: &ArchiveEntry) {
        let message = entry.message;
        let stanza = match message.staged_in(self.generation) {
            Some(place) => place,
            None => {
                let place = Place {
                    offset: self.stanzas.len() as u64,
                    // Stanzas are limited far below 4 GiB.
                    len: message.stanza.len() as u32,
                };
                self.stanzas.push_str(&message.stanza);
                message.staged_at(self.generation, place);
                place
            }
        };
        let id = match message.tag {
            Some(tag) => StagedId::Tagged(tag),
            None => StagedId::Text(self.name(&message.id)),
        };
        let staged = Staged {
            owner: self.owner(entry.kind, entry.owner),
            seq: message.seq,
            stamp: message.stamp,
            with: self.name(entry.with),
            id,
            stanza,
        };
        self.entries.push(staged);
    }

    /// The number of an archive, numbered now if new.
    fn owner(&mut self, kind: ArchiveKind, owner: &str) -> u32 {
        let numbers = &mut self.numbers[kind as usize];
        if let Some(number) = numbers.get(owner) {
            return *number;
        }
        let number = self.owners.len() as u32;
        self.owners.push((kind, owner.to_owned()));
        numbers.insert(owner.to_owned(), number);
        number
    }

    fn name(&mut self, text: &str) -> Range<usize> {
        let start = self.names.len();
        self.names.push_str(text);
        start..self.names.len()
    }
}

impl StoredMessage {
    /// Where this message's stanza is staged in commit `generation`, if
    /// it is.
    fn staged_in(&self, generation: u64) -> Option<Place> {
        // Read and written under the staging lock only.
        let staged = self.staged.generation.load(Ordering::Relaxed);
        (staged == generation).then(|| Place {
            offset: self.staged.offset.load(Ordering::Relaxed),
            len: self.stanza.len() as u32,
        })
    }

    fn staged_at(&self, generation: u64, place: Place) {
        self.staged.generation.store(generation, Ordering::Relaxed);
        self.staged.offset.store(place.offset, Ordering::Relaxed);
    }
}

impl ArchiveWriter {
    /// Starts the writer task; `last_seq` is the archive's highest
    /// ([`Storage::archive_last_seq`]); a commit follows its first entry
    /// within `commit_delay`. It compacts the message log first
    /// (deletions may have waited for it: an account deleted from the
    /// command line, a crash).
    pub fn spawn(storage: Storage, last_seq: i64, commit_delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            staging: Mutex::new(Staging {
                generation: 1,
                ..Staging::default()
            }),
            wake: Notify::new(),
            hurry: Notify::new(),
            linger: commit_delay,
            last_staged: AtomicU64::new(0),
            room: Notify::new(),
            written: watch::Sender::new(0),
            durable: watch::Sender::new(0),
        });
        tokio::spawn(write_commits(storage, shared.clone()));
        let writer = Self {
            handle: Arc::new(Handle { shared }),
            last_seq: Arc::new(AtomicI64::new(last_seq)),
        };
        writer.sweep_soon();
        writer
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
            id: archive_chunk::tagged_id(seq, tag),
            stamp: now,
        }
    }

    /// Stages an entry (waits only while the staging area is full).
    pub async fn append(&self, entry: ArchiveEntry<'_>) {
        let shared = &self.handle.shared;
        if shared.try_stage(&entry) {
            return;
        }
        loop {
            // Waiting for room is registered before looking again, so that
            // a commit taken meanwhile is not missed.
            let mut room = pin!(shared.room.notified());
            room.as_mut().enable();
            if shared.try_stage(&entry) {
                return;
            }
            room.await;
        }
    }

    /// Returns once everything staged before is on disk.
    pub async fn flushed(&self) {
        let shared = &self.handle.shared;
        let generation = {
            let mut staging = shared.staging();
            staging.urgent = true;
            staging.generation
        };
        shared.wake.notify_one();
        shared.hurry.notify_one();
        let mut written = shared.written.subscribe();
        if written.wait_for(|g| *g >= generation).await.is_err() {
            tracing::error!("the archive writer stopped");
        }
    }

    /// A mark for what is staged now: once [`ArchiveWriter::durable`]
    /// for it returns, every entry staged before this call is on disk.
    /// Cheap; takes no lock.
    pub fn durable_mark(&self) -> u64 {
        self.handle.shared.last_staged.load(Ordering::Relaxed)
    }

    /// Whether everything staged before `mark` was taken is on disk.
    pub fn is_durable(&self, mark: u64) -> bool {
        *self.handle.shared.durable.borrow() >= mark
    }

    /// Returns once everything staged before `mark` was taken is on disk;
    /// never, after a commit failed (nothing may be acknowledged then).
    pub async fn durable(&self, mark: u64) {
        let mut durable = self.handle.shared.durable.subscribe();
        if durable.wait_for(|g| *g >= mark).await.is_err() {
            tracing::error!("the archive writer stopped");
            std::future::pending::<()>().await;
        }
    }

    /// Deletes archived messages (of users and rooms) stamped before
    /// `stamp`, from the database and the message log; how many went.
    pub async fn expire(&self, stamp: i64) -> std::result::Result<u64, String> {
        let (done, expired) = oneshot::channel();
        self.request(Request::Expire(stamp, done));
        expired
            .await
            .map_err(|_| "the archive writer stopped".to_owned())?
    }

    /// Removes from the message log what no archive lists any more (a
    /// deleted account's or room's messages); returns when done.
    pub async fn sweep(&self) {
        let (done, swept) = oneshot::channel();
        self.request(Request::Sweep(done));
        if swept.await.is_err() {
            tracing::error!("the archive writer stopped");
        }
    }

    /// As [`ArchiveWriter::sweep`], without waiting: after an account or
    /// a room was deleted.
    pub fn sweep_soon(&self) {
        let writer = self.clone();
        tokio::spawn(async move { writer.sweep().await });
    }

    fn request(&self, request: Request) {
        let shared = &self.handle.shared;
        {
            let mut staging = shared.staging();
            staging.requests.push(request);
            staging.urgent = true;
        }
        shared.wake.notify_one();
        shared.hurry.notify_one();
    }
}

/// The writer task: a commit at a time until the handles are gone.
async fn write_commits(storage: Storage, shared: Arc<Shared>) {
    let mut newest = Newest::default();
    let mut failed = false;
    loop {
        let Some(lingering) = work(&shared).await else {
            return;
        };
        if lingering {
            // A hurry left over from the last commit only makes this one
            // smaller.
            let _ = tokio::time::timeout(shared.linger, shared.hurry.notified()).await;
        }
        let (generation, commit) = {
            let mut staging = shared.staging();
            // Room for as much as the last commit: no copies while it grows.
            let next = Staging {
                generation: staging.generation + 1,
                closed: staging.closed,
                stanzas: String::with_capacity(staging.stanzas.len()),
                names: String::with_capacity(staging.names.len()),
                entries: Vec::with_capacity(staging.entries.len()),
                ..Staging::default()
            };
            (staging.generation, std::mem::replace(&mut *staging, next))
        };
        shared.room.notify_waiters();
        let count = commit.entries.len();
        let requests = commit.requests;
        let commit = Commit {
            stanzas: commit.stanzas,
            names: commit.names,
            owners: commit.owners,
            entries: commit.entries,
        };
        let started = std::time::Instant::now();
        if let Err(e) = commit.write(&storage, &mut newest).await {
            tracing::error!(
                "archiving {count} entries failed: {e}; acknowledgements stop until a restart"
            );
            failed = true;
            // Chunks may be written or not: read them again.
            newest.clear();
        }
        tracing::trace!(count, took = ?started.elapsed(), "archive commit");
        // Acknowledgements need not wait for compaction or expiry.
        if !failed {
            shared.durable.send_replace(generation);
        }
        if !requests.is_empty() {
            // Expiry may have rewritten the newest chunks.
            newest.clear();
            serve(&storage, requests).await;
        }
        shared.written.send_replace(generation);
    }
}

/// Waits for something to commit; whether to linger for more first.
/// `None` once the handles are gone and nothing is left.
async fn work(shared: &Shared) -> Option<bool> {
    loop {
        let mut woken = pin!(shared.wake.notified());
        woken.as_mut().enable();
        {
            let staging = shared.staging();
            if staging.urgent || (staging.closed && !staging.is_empty()) {
                return Some(false);
            }
            if staging.closed {
                return None;
            }
            if !staging.is_empty() {
                return Some(staging.entries.len() < MAX_STAGED / 2);
            }
        }
        woken.await;
    }
}

/// Expires and compacts as asked, then answers.
async fn serve(storage: &Storage, requests: Vec<Request>) {
    let mut expired = Vec::new();
    let mut swept = Vec::new();
    for request in requests {
        match request {
            Request::Expire(stamp, done) => {
                let count = storage
                    .archive_expire(stamp)
                    .await
                    .map_err(|e| e.to_string());
                expired.push((done, count));
            }
            Request::Sweep(done) => swept.push(done),
        }
    }
    if let Err(e) = compaction::sweep(storage).await {
        tracing::error!("compacting the message log failed: {e}");
    }
    for (done, count) in expired {
        let _ = done.send(count);
    }
    for done in swept {
        let _ = done.send(());
    }
}

/// A commit's entries, taken from staging.
struct Commit {
    stanzas: String,
    names: String,
    owners: Vec<(ArchiveKind, String)>,
    entries: Vec<Staged>,
}

/// An archive's run of new entries in a commit, in seq order.
type Run<'a> = (ArchiveKind, &'a str, Vec<ChunkEntry<'a>>);

/// The highest seq written to each archive the writer has written to,
/// or more (a chunk may have gone since): the writer alone adds chunks,
/// so reading it from the database again at every commit (a row per
/// archive, each a wake-up of two threads) would tell nothing new.
type Newest = HashMap<(ArchiveKind, String), i64>;

impl Commit {
    /// Writes the entries: their stanzas to the message log, then in one
    /// transaction one new chunk per archive (more for a long run). An
    /// entry whose archive already has a later message (its slot was
    /// taken before theirs but it was staged after) goes into the chunk
    /// its seq falls in, so that chunks never overlap.
    async fn write(self, storage: &Storage, newest: &mut Newest) -> Result<()> {
        let Commit {
            stanzas,
            names,
            owners,
            mut entries,
        } = self;
        if entries.is_empty() {
            return Ok(());
        }
        entries.sort_unstable_by_key(|e| (e.owner, e.seq));
        entries.dedup_by_key(|e| (e.owner, e.seq));
        let runs = runs(&names, &owners, &entries);
        let mut conn = storage.archive_writes().acquire().await?;
        let mut fresh = Vec::with_capacity(runs.len());
        let mut merges = Vec::new();
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let unknown: Vec<&str> = runs
                .iter()
                .filter(|(of, owner, _)| {
                    *of == kind && !newest.contains_key(&(kind, (*owner).to_owned()))
                })
                .map(|(_, owner, _)| *owner)
                .collect();
            if !unknown.is_empty() {
                let read = newest_seqs(&mut conn, kind, &unknown).await?;
                for owner in unknown {
                    let seq = read.get(owner).copied().unwrap_or(i64::MIN);
                    newest.insert((kind, owner.to_owned()), seq);
                }
            }
            for (of, owner, run) in &runs {
                if *of != kind {
                    continue;
                }
                let last = newest.get_mut(&(kind, (*owner).to_owned()));
                let late = last
                    .as_ref()
                    .map_or(0, |newest| run.partition_point(|e| e.seq <= **newest));
                if let (Some(last), Some(entry)) = (last, run.last()) {
                    *last = (*last).max(entry.seq);
                }
                if late > 0 {
                    let late = with_text(&stanzas, &run[..late]);
                    merges.extend(Merge::load(storage, &mut conn, kind, owner, &late).await?);
                }
                fresh.push((kind, *owner, &run[late..]));
            }
        }
        let mut log = LogBatch::with_bytes(stanzas.into_bytes());
        let merged: Vec<_> = merges
            .iter()
            .map(|merge| (merge, log.place_all(&merge.borrowed())))
            .collect();
        let at = Some(log.append(storage).await?);

        let mut tx = conn.begin().await?;
        for kind in [ArchiveKind::User, ArchiveKind::Room] {
            let mut chunks = Vec::new();
            for (of, owner, run) in &fresh {
                if *of == kind {
                    chunks.extend(Chunk::pieces(owner, at, run));
                }
            }
            let mut chunks = chunks.into_iter().peekable();
            while chunks.peek().is_some() {
                insert_chunks(kind, chunks.by_ref().take(ROWS_PER_STATEMENT))
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for (merge, entries) in &merged {
            let chunk = Chunk::encode(&merge.owner, at, entries);
            match merge.last_seq {
                Some(last_seq) => {
                    rewrite_chunk(&mut tx, merge.kind, last_seq, &chunk).await?;
                }
                None => {
                    insert_chunks(merge.kind, [chunk])
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Staged entries (sorted by archive and seq) by archive, their stanzas
/// placed relative to the start of the commit's stanzas.
fn runs<'a>(
    names: &'a str,
    owners: &'a [(ArchiveKind, String)],
    entries: &[Staged],
) -> Vec<Run<'a>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut last_owner = None;
    for staged in entries {
        let entry = ChunkEntry {
            seq: staged.seq,
            stamp: staged.stamp,
            id: match &staged.id {
                StagedId::Tagged(tag) => EntryId::Tagged(*tag),
                StagedId::Text(range) => EntryId::Text(&names[range.clone()]),
            },
            with: &names[staged.with.clone()],
            stanza: Stanza::Logged(staged.stanza),
        };
        match runs.last_mut() {
            Some((_, _, run)) if last_owner == Some(staged.owner) => run.push(entry),
            _ => {
                let (kind, owner) = &owners[staged.owner as usize];
                runs.push((*kind, owner, vec![entry]));
                last_owner = Some(staged.owner);
            }
        }
    }
    runs
}

/// `entries` (logged relative to the commit's `stanzas`) with their
/// stanzas inline.
fn with_text<'a>(stanzas: &'a str, entries: &[ChunkEntry<'a>]) -> Vec<ChunkEntry<'a>> {
    entries
        .iter()
        .map(|entry| {
            let stanza = match entry.stanza {
                Stanza::Logged(place) => {
                    let start = place.offset as usize;
                    let text = stanzas
                        .get(start..start + place.len as usize)
                        .unwrap_or_default();
                    Stanza::Inline(text)
                }
                inline => inline,
            };
            ChunkEntry { stanza, ..*entry }
        })
        .collect()
}

/// A chunk that late entries join, read back with its stanzas.
#[derive(Debug)]
struct Merge {
    kind: ArchiveKind,
    owner: String,
    /// The chunk's last seq as stored (its key); `None` for a new chunk.
    last_seq: Option<i64>,
    /// Its entries and the late ones, in seq order.
    entries: Vec<OwnedEntry>,
}

impl Merge {
    /// The chunks of `owner`'s archive that `late` entries (in seq
    /// order, inline) fall in: each the first that ends at or after
    /// them, so chunks still do not overlap. A message already listed
    /// there is left as it is.
    async fn load(
        storage: &Storage,
        conn: &mut sqlx::SqliteConnection,
        kind: ArchiveKind,
        owner: &str,
        late: &[ChunkEntry<'_>],
    ) -> Result<Vec<Self>> {
        let (table, column) = kind.table();
        let mut merges: Vec<Self> = Vec::new();
        for entry in late {
            let Stanza::Inline(stanza) = entry.stanza else {
                continue;
            };
            let joins_last = merges
                .last()
                .and_then(|merge| merge.last_seq)
                .is_some_and(|last| last >= entry.seq);
            if !joins_last {
                let row = sqlx::query(&format!(
                    "SELECT first_seq, last_seq, segment, entries FROM {table} \
                     WHERE {column} = ?1 AND last_seq >= ?2 ORDER BY last_seq LIMIT 1"
                ))
                .bind(owner)
                .bind(entry.seq)
                .fetch_optional(&mut *conn)
                .await?;
                // Without one (the archive went, or the writer's idea of
                // its newest seq is too high), the entry is a chunk of its
                // own, as a fresh one.
                let Some(row) = row else {
                    merges.push(Self {
                        kind,
                        owner: owner.to_owned(),
                        last_seq: None,
                        entries: vec![OwnedEntry::of(entry, stanza.to_owned())],
                    });
                    continue;
                };
                let chunk = StoredChunk::from_row(row);
                let entries = storage.owned_entries(&chunk).await?;
                merges.push(Self {
                    kind,
                    owner: owner.to_owned(),
                    last_seq: Some(chunk.last_seq),
                    entries,
                });
            }
            let Some(merge) = merges.last_mut() else {
                continue;
            };
            let at = merge.entries.partition_point(|e| e.seq < entry.seq);
            if merge.entries.get(at).is_none_or(|e| e.seq != entry.seq) {
                let owned = OwnedEntry::of(entry, stanza.to_owned());
                merge.entries.insert(at, owned);
            }
        }
        Ok(merges)
    }

    /// The entries, borrowed, with their stanzas inline.
    fn borrowed(&self) -> Vec<ChunkEntry<'_>> {
        self.entries
            .iter()
            .map(|e| ChunkEntry {
                seq: e.seq,
                stamp: e.stamp,
                id: EntryId::Text(&e.id),
                with: &e.with,
                stanza: Stanza::Inline(&e.stanza),
            })
            .collect()
    }
}
