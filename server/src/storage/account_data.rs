//! Queries of what standard clients keep on the server for their user:
//! the blocklist, private XML, the vCard, last activity and push
//! registrations.

use sqlx::Row;

use super::batch::{BatchChange, BatchWriter};
use super::{Result, Storage};

/// Writes users' last logouts (XEP-0012) in group commits: clients that
/// leave together (a network failure, a restart) share one `fsync`
/// instead of paying one each.
#[derive(Debug, Clone)]
pub struct LogoutWriter {
    writer: BatchWriter<Logout>,
}

/// One user's last logout.
#[derive(Debug)]
struct Logout {
    username: String,
    /// Unix seconds.
    at: i64,
    status: String,
}

impl LogoutWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(storage: Storage) -> Self {
        Self {
            writer: BatchWriter::spawn(storage),
        }
    }

    /// Records that `username`'s last session ended at `at` (Unix
    /// seconds) with `status`; returns once it is on disk.
    pub async fn record(
        &self,
        username: &str,
        at: i64,
        status: &str,
    ) -> std::result::Result<(), String> {
        let logout = Logout {
            username: username.to_owned(),
            at,
            status: status.to_owned(),
        };
        self.writer.write(logout).await.map(|_| ())
    }
}

impl BatchChange for Logout {
    async fn apply(storage: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
        let mut tx = storage.pool.begin().await?;
        for logout in changes {
            sqlx::query(
                "INSERT INTO last_activity (username, at, status) VALUES (?, ?, ?)
                 ON CONFLICT (username) DO UPDATE SET at = excluded.at, status = excluded.status",
            )
            .bind(&logout.username)
            .bind(logout.at)
            .bind(&logout.status)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(vec![0; changes.len()])
    }
}

impl Storage {
    /// The JIDs `username` blocks.
    pub async fn blocklist(&self, username: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT jid FROM blocklist WHERE username = ? ORDER BY jid")
            .bind(username)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Adds JIDs to `username`'s blocklist.
    pub async fn block(&self, username: &str, jids: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for jid in jids {
            sqlx::query("INSERT OR IGNORE INTO blocklist (username, jid) VALUES (?, ?)")
                .bind(username)
                .bind(jid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes JIDs from `username`'s blocklist (all of them when `jids`
    /// is empty).
    pub async fn unblock(&self, username: &str, jids: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if jids.is_empty() {
            sqlx::query("DELETE FROM blocklist WHERE username = ?")
                .bind(username)
                .execute(&mut *tx)
                .await?;
        }
        for jid in jids {
            sqlx::query("DELETE FROM blocklist WHERE username = ? AND jid = ?")
                .bind(username)
                .bind(jid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The private XML element `ns`/`name` of `username`, serialised.
    pub async fn private_xml(
        &self,
        username: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<String>> {
        let xml = sqlx::query_scalar(
            "SELECT xml FROM private_xml WHERE username = ? AND ns = ? AND name = ?",
        )
        .bind(username)
        .bind(ns)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(xml)
    }

    /// Stores private XML elements of `username`: `(ns, name, xml)` each.
    pub async fn set_private_xml(
        &self,
        username: &str,
        elements: &[(String, String, String)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (ns, name, xml) in elements {
            sqlx::query(
                "INSERT INTO private_xml (username, ns, name, xml) VALUES (?, ?, ?, ?)
                 ON CONFLICT (username, ns, name) DO UPDATE SET xml = excluded.xml",
            )
            .bind(username)
            .bind(ns)
            .bind(name)
            .bind(xml)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The vCard of `username`, serialised.
    pub async fn vcard(&self, username: &str) -> Result<Option<String>> {
        let xml = sqlx::query_scalar("SELECT xml FROM vcards WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(xml)
    }

    /// Replaces the vCard of `username`.
    pub async fn set_vcard(&self, username: &str, xml: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO vcards (username, xml) VALUES (?, ?)
             ON CONFLICT (username) DO UPDATE SET xml = excluded.xml",
        )
        .bind(username)
        .bind(xml)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When `username`'s last session ended (Unix seconds) and its status.
    pub async fn last_activity(&self, username: &str) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT at, status FROM last_activity WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Registers (or updates) an app server for push notifications.
    pub async fn push_enable(
        &self,
        username: &str,
        jid: &str,
        node: &str,
        options: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO push_registrations (username, jid, node, options) VALUES (?, ?, ?, ?)
             ON CONFLICT (username, jid, node) DO UPDATE SET options = excluded.options",
        )
        .bind(username)
        .bind(jid)
        .bind(node)
        .bind(options)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes push registrations with `jid` (only `node`'s, if given).
    pub async fn push_disable(&self, username: &str, jid: &str, node: Option<&str>) -> Result<()> {
        sqlx::query(
            "DELETE FROM push_registrations WHERE username = ? AND jid = ? AND (? IS NULL OR node = ?)",
        )
        .bind(username)
        .bind(jid)
        .bind(node)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `username`'s push registrations: `(jid, node, options)` each.
    pub async fn push_registrations(
        &self,
        username: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT jid, node, options FROM push_registrations WHERE username = ? ORDER BY jid, node",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}
