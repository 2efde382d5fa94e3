//! Queries of the file upload service: the slots handed out and whether
//! their file arrived.

use sqlx::Row;

use super::{now_rfc3339, Result, Storage};

/// An upload slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSlot {
    /// The size the file must have.
    pub size: u64,
    /// Whether the file was uploaded (it is then served, and never
    /// replaced).
    pub completed: bool,
    /// When the slot was handed out (RFC 3339, UTC).
    pub created_at: String,
}

impl Storage {
    /// Records a slot for a file of `size` bytes by `username`.
    pub async fn upload_slot_create(&self, token: &str, username: &str, size: u64) -> Result<()> {
        sqlx::query("INSERT INTO uploads (token, username, size, created_at) VALUES (?, ?, ?, ?)")
            .bind(token)
            .bind(username)
            .bind(size as i64)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The bytes `username` holds: completed uploads, and slots handed
    /// out since `since` (RFC 3339) that may still be used.
    pub async fn upload_bytes_of(&self, username: &str, since: &str) -> Result<u64> {
        let total: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size), 0) FROM uploads
             WHERE username = ? AND (completed_at IS NOT NULL OR created_at >= ?)",
        )
        .bind(username)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(total as u64)
    }

    /// The slot `token`, if it exists.
    pub async fn upload_slot(&self, token: &str) -> Result<Option<UploadSlot>> {
        let row = sqlx::query(
            "SELECT size, completed_at IS NOT NULL, created_at FROM uploads WHERE token = ?",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UploadSlot {
            size: r.get::<i64, _>(0) as u64,
            completed: r.get(1),
            created_at: r.get(2),
        }))
    }

    /// Marks the slot's file as uploaded; false if it already was (a
    /// concurrent upload won).
    pub async fn upload_complete(&self, token: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET completed_at = ? WHERE token = ? AND completed_at IS NULL",
        )
        .bind(now_rfc3339())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets uploads completed before `completed_before` and slots
    /// handed out before `unused_before` and never used (both RFC 3339);
    /// the tokens of the files to delete.
    pub async fn uploads_expire(
        &self,
        completed_before: &str,
        unused_before: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "DELETE FROM uploads
             WHERE (completed_at IS NOT NULL AND completed_at < ?)
                OR (completed_at IS NULL AND created_at < ?)
             RETURNING token, completed_at IS NOT NULL",
        )
        .bind(completed_before)
        .bind(unused_before)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.get::<bool, _>(1))
            .map(|r| r.get(0))
            .collect())
    }
}
