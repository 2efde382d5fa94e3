//! Federation's durable outbound queue ([`tern_federation::QueueStore`]).

use sqlx::Row;
use tern_federation::{Pair, Queued};
use tokio::sync::{mpsc, oneshot};

use super::{Result, Storage};

/// Most queue changes written in one group commit.
const MAX_BATCH: usize = 512;

/// Writes the s2s queue in group commits: the appends and removals that
/// arrive while a transaction is being written go together into the next
/// one, so concurrent senders (and the links' acknowledgements) share one
/// `fsync` (the database runs with `synchronous = FULL`) instead of paying
/// one each. Each call returns once its change is on disk.
#[derive(Debug, Clone)]
pub struct QueueWriter {
    changes: mpsc::Sender<Change>,
}

/// One change to the queue, and where to say it is written.
#[derive(Debug)]
enum Change {
    Append {
        pair: Pair,
        stanza: String,
        queued_at: i64,
        done: oneshot::Sender<std::result::Result<i64, String>>,
    },
    Remove {
        ids: Vec<i64>,
        done: oneshot::Sender<std::result::Result<i64, String>>,
    },
}

impl Change {
    fn done(self, result: std::result::Result<i64, String>) {
        let (Change::Append { done, .. } | Change::Remove { done, .. }) = self;
        let _ = done.send(result);
    }
}

const STOPPED: &str = "the federation queue writer stopped";

impl QueueWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(storage: Storage) -> Self {
        let (changes, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(storage, queue));
        Self { changes }
    }

    /// Appends a stanza for `pair`; its id once it is on disk.
    pub async fn push(
        &self,
        pair: Pair,
        stanza: String,
        queued_at: i64,
    ) -> std::result::Result<i64, String> {
        self.write(|done| Change::Append {
            pair,
            stanza,
            queued_at,
            done,
        })
        .await
    }

    /// Removes stanzas by id (delivered or bounced).
    pub async fn remove(&self, ids: Vec<i64>) -> std::result::Result<(), String> {
        self.write(|done| Change::Remove { ids, done })
            .await
            .map(drop)
    }

    async fn write(
        &self,
        change: impl FnOnce(oneshot::Sender<std::result::Result<i64, String>>) -> Change,
    ) -> std::result::Result<i64, String> {
        let (done, written) = oneshot::channel();
        self.changes
            .send(change(done))
            .await
            .map_err(|_| STOPPED.to_owned())?;
        written.await.map_err(|_| STOPPED.to_owned())?
    }
}

async fn write_batches(storage: Storage, mut queue: mpsc::Receiver<Change>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match storage.s2s_queue_apply(&batch).await {
            Ok(results) => {
                for (change, result) in batch.drain(..).zip(results) {
                    change.done(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!("cannot write the federation queue: {e}");
                let text = e.to_string();
                for change in batch.drain(..) {
                    change.done(Err(text.clone()));
                }
            }
        }
    }
}

impl Storage {
    /// Applies changes in one transaction, in order; the new ids of
    /// appended stanzas (0 for removals).
    async fn s2s_queue_apply(&self, changes: &[Change]) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            let result = match change {
                Change::Append {
                    pair,
                    stanza,
                    queued_at,
                    ..
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
                Change::Remove { ids, .. } => {
                    for id in ids {
                        sqlx::query("DELETE FROM s2s_queue WHERE id = ?")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    0
                }
            };
            results.push(result);
        }
        tx.commit().await?;
        Ok(results)
    }

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
