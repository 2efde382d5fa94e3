//! Compaction of the message log, run by the archive writer: what no
//! archive lists any more leaves the disk.
//!
//! - A segment no chunk points into is removed (all its messages were
//!   deleted or expired, or it holds only a failed commit's bytes), unless
//!   it is the one appends go to and holds nothing deleted.
//! - A segment marked dirty (`archive_log_dirty`: chunks pointing into it
//!   were deleted, or expiry cut into one) is compacted: the messages its
//!   chunks still list are copied to the newest segment, the chunks are
//!   pointed there in one transaction, and the file is removed.
//!
//! Bytes left behind otherwise (a chunk rewritten because a late message
//! joined it, whose messages were logged again) are copies of messages
//! still listed; they go when their segment is next compacted or removed.

use sqlx::{Connection, Row};

use super::{rewrite_chunk, ArchiveKind, Chunk, LogBatch, StoredChunk};
use crate::storage::archive_chunk::{ChunkEntry, Stanza};
use crate::storage::{Result, Storage, StorageError};

/// Marks `segment` for compaction: bytes in it are no longer listed.
pub(super) async fn mark_dirty(conn: &mut sqlx::SqliteConnection, segment: u32) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO archive_log_dirty (segment) VALUES (?)")
        .bind(segment)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes unreferenced segments and compacts dirty ones.
pub(super) async fn sweep(storage: &Storage) -> Result<()> {
    let newest = storage.log.newest().await?;
    let mut conn = storage.archive_writes().acquire().await?;
    let dirty: Vec<u32> = sqlx::query_scalar("SELECT segment FROM archive_log_dirty")
        .fetch_all(&mut *conn)
        .await?;
    let on_disk = storage.log.segments()?;
    let mut unreferenced = Vec::new();
    for &segment in on_disk.keys() {
        if !referenced(&mut conn, segment).await? {
            // Appends go on in the newest unless it holds deleted bytes.
            if segment == newest && dirty.contains(&segment) {
                storage.log.roll().await?;
            }
            if segment != newest || dirty.contains(&segment) {
                unreferenced.push(segment);
            }
        } else if dirty.contains(&segment) {
            compact(storage, &mut conn, segment, segment == newest).await?;
        }
    }
    if !unreferenced.is_empty() {
        storage.log.remove(&unreferenced).await?;
        tracing::debug!(?unreferenced, "removed message log segments");
    }
    // What is left marked is removed, or was never on disk.
    let mut tx = conn.begin().await?;
    for segment in dirty {
        if !on_disk.contains_key(&segment) || unreferenced.contains(&segment) {
            sqlx::query("DELETE FROM archive_log_dirty WHERE segment = ?")
                .bind(segment)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Whether a chunk points into `segment`.
async fn referenced(conn: &mut sqlx::SqliteConnection, segment: u32) -> Result<bool> {
    let referenced: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM archive_chunks WHERE segment = ?1) \
         OR EXISTS (SELECT 1 FROM muc_archive_chunks WHERE segment = ?1)",
    )
    .bind(segment)
    .fetch_one(conn)
    .await?;
    Ok(referenced)
}

/// A chunk pointing into the segment being compacted.
struct Listed {
    kind: ArchiveKind,
    owner: String,
    chunk: StoredChunk,
}

/// Copies what `segment`'s chunks list to the newest segment (a new one,
/// if `segment` is the newest), points them there, and removes `segment`.
async fn compact(
    storage: &Storage,
    conn: &mut sqlx::SqliteConnection,
    segment: u32,
    newest: bool,
) -> Result<()> {
    if newest {
        storage.log.roll().await?;
    }
    let mut listed = Vec::new();
    for kind in [ArchiveKind::User, ArchiveKind::Room] {
        let (table, column) = kind.table();
        let rows = sqlx::query(&format!(
            "SELECT {column}, first_seq, last_seq, segment, entries FROM {table} \
             WHERE segment = ?"
        ))
        .bind(segment)
        .fetch_all(&mut *conn)
        .await?;
        listed.extend(rows.into_iter().map(|row| Listed {
            kind,
            owner: row.get(0),
            chunk: StoredChunk {
                first_seq: row.get(1),
                last_seq: row.get(2),
                segment: row.get(3),
                entries: row.get(4),
            },
        }));
    }
    let bytes = storage.log.read_segment(segment).await?;
    let mut log = LogBatch::default();
    let mut moved = Vec::with_capacity(listed.len());
    for chunk in &listed {
        let entries: Vec<ChunkEntry> = chunk
            .chunk
            .decode()?
            .into_iter()
            .map(|entry| inline(entry, &bytes))
            .collect::<Result<_>>()?;
        moved.push(log.place_all(&entries));
    }
    let copied = log.append(storage).await?;
    let mut tx = conn.begin().await?;
    for (listed, entries) in listed.iter().zip(&moved) {
        let chunk = Chunk::encode(&listed.owner, Some(copied), entries);
        let rewritten = rewrite_chunk(&mut tx, listed.kind, listed.chunk.last_seq, &chunk).await?;
        if !rewritten {
            // Deleted meanwhile: what was copied of it is to go too.
            mark_dirty(&mut tx, copied.segment).await?;
        }
    }
    sqlx::query("DELETE FROM archive_log_dirty WHERE segment = ?")
        .bind(segment)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    storage.log.remove(&[segment]).await?;
    tracing::debug!(
        segment,
        chunks = listed.len(),
        into = copied.segment,
        "compacted a message log segment"
    );
    Ok(())
}

/// `entry` (logged in the segment `bytes`) with its stanza inline.
fn inline<'a>(entry: ChunkEntry<'a>, bytes: &'a [u8]) -> Result<ChunkEntry<'a>> {
    let Stanza::Logged(place) = entry.stanza else {
        return Ok(entry);
    };
    let text = usize::try_from(place.offset)
        .ok()
        .and_then(|start| bytes.get(start..start.checked_add(place.len as usize)?))
        .and_then(|text| std::str::from_utf8(text).ok())
        .ok_or_else(|| {
            StorageError::Corrupt("an archive chunk points outside its log segment".into())
        })?;
    Ok(ChunkEntry {
        stanza: Stanza::Inline(text),
        ..entry
    })
}
