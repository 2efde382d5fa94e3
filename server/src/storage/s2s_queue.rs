//! Federation's durable outbound queue ([`tern_federation::QueueStore`]).

use sqlx::Row;
use tern_federation::{Pair, Queued};

use super::{Result, Storage};

impl Storage {
    /// Appends a stanza for `pair`; returns its id.
    pub async fn s2s_queue_push(&self, pair: &Pair, stanza: &str, queued_at: i64) -> Result<i64> {
        let id = sqlx::query(
            "INSERT INTO s2s_queue (local, remote, stanza, queued_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&pair.local)
        .bind(&pair.remote)
        .bind(stanza)
        .bind(queued_at)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(id)
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

    /// Removes stanzas by id.
    pub async fn s2s_queue_remove(&self, ids: &[i64]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM s2s_queue WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
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
