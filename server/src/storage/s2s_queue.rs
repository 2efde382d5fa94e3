//! Federation's durable outbound queue ([`tern_federation::QueueStore`]).

use sqlx::{QueryBuilder, Row, Sqlite};
use tern_federation::{Pair, Queued};

use super::batch::{BatchChange, BatchWriter};
use super::{Result, Storage};

/// Writes the s2s queue in group commits ([`BatchWriter`]): concurrent
/// senders and the links' acknowledgements share one `fsync`. Each call
/// returns once its change is on disk.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    writer: BatchWriter<Change>,
}

/// One change to the queue.
#[derive(Debug)]
enum Change {
    Append {
        pair: Pair,
        stanza: String,
        queued_at: i64,
    },
    Remove {
        ids: Vec<i64>,
    },
}

impl QueueWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(storage: Storage) -> Self {
        Self {
            writer: BatchWriter::spawn(storage),
        }
    }

    /// Appends a stanza for `pair`; its id once it is on disk.
    pub async fn push(
        &self,
        pair: Pair,
        stanza: String,
        queued_at: i64,
    ) -> std::result::Result<i64, String> {
        self.writer
            .write(Change::Append {
                pair,
                stanza,
                queued_at,
            })
            .await
    }

    /// Removes stanzas by id (delivered or bounced).
    pub async fn remove(&self, ids: Vec<i64>) -> std::result::Result<(), String> {
        self.writer.write(Change::Remove { ids }).await.map(drop)
    }
}

/// Ids removed by one statement (far below SQLite's limit of 32766
/// parameters).
const IDS_PER_STATEMENT: usize = 500;

impl BatchChange for Change {
    /// The new ids of appended stanzas (0 for removals).
    async fn apply(storage: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
        let mut tx = storage.pool.begin().await?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            let result = match change {
                Change::Append {
                    pair,
                    stanza,
                    queued_at,
                } => sqlx::query(
                    "INSERT INTO s2s_queue (local, remote, stanza, queued_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&pair.local)
                .bind(&pair.remote)
                .bind(stanza)
                .bind(queued_at)
                .execute(&mut *tx)
                .await?
                .last_insert_rowid(),
                Change::Remove { ids } => {
                    for chunk in ids.chunks(IDS_PER_STATEMENT) {
                        let mut query =
                            QueryBuilder::<Sqlite>::new("DELETE FROM s2s_queue WHERE id IN (");
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(id);
                        }
                        query.push(")").build().execute(&mut *tx).await?;
                    }
                    0
                }
            };
            results.push(result);
        }
        tx.commit().await?;
        Ok(results)
    }
}

impl Storage {
    /// Up to `limit` stanzas of `pair` after id `after`, oldest first.
    pub async fn s2s_queue_pending(
        &self,
        pair: &Pair,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Queued>> {
        let rows = sqlx::query(
            "SELECT id, stanza, queued_at FROM s2s_queue
             WHERE local = ? AND remote = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(&pair.local)
        .bind(&pair.remote)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Queued {
                id: r.get(0),
                stanza: r.get(1),
                queued_at: r.get(2),
            })
            .collect())
    }

    /// How many stanzas wait for `pair`.
    pub async fn s2s_queue_count(&self, pair: &Pair) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM s2s_queue WHERE local = ? AND remote = ?")
                .bind(&pair.local)
                .bind(&pair.remote)
                .fetch_one(&self.pool)
                .await?;
        Ok(count as u64)
    }

    /// The pairs with stanzas waiting.
    pub async fn s2s_queue_pairs(&self) -> Result<Vec<Pair>> {
        let rows = sqlx::query("SELECT DISTINCT local, remote FROM s2s_queue")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Pair {
                local: r.get(0),
                remote: r.get(1),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn removals_leave_the_rest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let queue = QueueWriter::spawn(storage.clone());
        let pair = Pair {
            local: "a.test".into(),
            remote: "b.test".into(),
        };
        let mut ids = Vec::new();
        for n in 0..(IDS_PER_STATEMENT + 3) {
            let id = queue.push(pair.clone(), format!("<m n='{n}'/>"), 0).await;
            ids.push(id.unwrap());
        }
        // More than one statement's worth, and not a prefix.
        let kept = [ids[1], ids[IDS_PER_STATEMENT + 2]];
        let removed: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !kept.contains(id))
            .collect();
        queue.remove(removed).await.unwrap();
        let left = storage.s2s_queue_pending(&pair, 0, 100).await.unwrap();
        let left: Vec<i64> = left.iter().map(|q| q.id).collect();
        assert_eq!(left, kept);
        assert_eq!(storage.s2s_queue_count(&pair).await.unwrap(), 2);
    }
}
