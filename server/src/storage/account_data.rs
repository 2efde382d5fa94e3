//! Queries of what standard clients keep on the server for their user:
//! the blocklist, private XML, the vCard, last activity and push
//! registrations.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{QueryBuilder, Row, Sqlite};

use super::batch::{BatchChange, BatchWriter};
use super::{Result, Storage};

/// Writes users' last logouts (XEP-0012) in group commits that gather
/// for up to [`LINGER`]: a busy server's logins and logouts would
/// otherwise commit (and `fsync`) every few logouts. Nobody waits for a
/// logout to be written; a reader of last activity waits for those
/// recorded before ([`LogoutWriter::flushed`]).
#[derive(Debug, Clone)]
pub struct LogoutWriter {
    writer: BatchWriter<Change>,
}

/// How long the writer gathers logouts before a commit, unless a reader
/// waits. A crash loses at most this much of the record of who logged out
/// when (the users' data does not depend on it).
const LINGER: Duration = Duration::from_millis(200);

/// One change of the writer.
#[derive(Debug)]
enum Change {
    /// One user's last logout.
    Logout {
        username: String,
        /// Unix seconds.
        at: i64,
        status: String,
    },
    /// Nothing to write: its completion says the logouts before it are.
    Barrier,
}

impl LogoutWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(storage: Storage) -> Self {
        Self {
            writer: BatchWriter::spawn_lingering(storage, LINGER),
        }
    }

    /// Queues that `username`'s last session ended at `at` (Unix seconds)
    /// with `status` (waits only while the writer's queue is full).
    pub async fn record(
        &self,
        username: &str,
        at: i64,
        status: &str,
    ) -> std::result::Result<(), String> {
        let logout = Change::Logout {
            username: username.to_owned(),
            at,
            status: status.to_owned(),
        };
        self.writer.queue(logout).await
    }

    /// Returns once every logout recorded before is on disk.
    pub async fn flushed(&self) -> std::result::Result<(), String> {
        self.writer.write(Change::Barrier).await.map(|_| ())
    }
}

/// Rows written by one statement (3 parameters each).
const ROWS_PER_STATEMENT: usize = 100;

impl BatchChange for Change {
    /// Writes each user's latest logout of the batch, a hundred users a
    /// statement, in one transaction.
    async fn apply(storage: &Storage, changes: &[Self]) -> Result<Vec<i64>> {
        let mut latest: HashMap<&str, (i64, &str)> = HashMap::new();
        for change in changes {
            if let Change::Logout {
                username,
                at,
                status,
            } = change
            {
                latest.insert(username, (*at, status));
            }
        }
        if !latest.is_empty() {
            let latest: Vec<_> = latest.into_iter().collect();
            let mut tx = storage.pool.begin().await?;
            for rows in latest.chunks(ROWS_PER_STATEMENT) {
                // An account deleted meanwhile makes its row a no-op, not a
                // failure of the batch.
                let mut query = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO last_activity (username, at, status) \
                     SELECT column1, column2, column3 FROM (",
                );
                query.push_values(rows, |mut row, (username, (at, status))| {
                    row.push_bind(*username).push_bind(*at).push_bind(*status);
                });
                query.push(
                    ") WHERE EXISTS (SELECT 1 FROM accounts WHERE username = column1) \
                     ON CONFLICT (username) DO UPDATE \
                     SET at = excluded.at, status = excluded.status",
                );
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(vec![0; changes.len()])
    }

    fn urgent(&self) -> bool {
        matches!(self, Change::Barrier)
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

    /// Registers (or updates) an app server for push notifications,
    /// unless the user has `max` registrations already (false).
    pub async fn push_enable(
        &self,
        username: &str,
        jid: &str,
        node: &str,
        options: &str,
        max: u32,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO push_registrations (username, jid, node, options)
             SELECT ?1, ?2, ?3, ?4
             WHERE EXISTS (SELECT 1 FROM push_registrations WHERE username = ?1 AND jid = ?2 AND node = ?3)
                OR (SELECT COUNT(*) FROM push_registrations WHERE username = ?1) < ?5
             ON CONFLICT (username, jid, node) DO UPDATE SET options = excluded.options",
        )
        .bind(username)
        .bind(jid)
        .bind(node)
        .bind(options)
        .bind(max as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Logouts queued together are written as each user's latest (one of
    /// an account deleted meanwhile is dropped), and a reader that waits
    /// for the writer sees them.
    #[tokio::test]
    async fn each_users_latest_logout_is_written_before_a_reader_looks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).await.expect("storage");
        for user in ["a", "b"] {
            storage.create_account(user, "pw").await.expect("account");
        }
        let writer = LogoutWriter::spawn(storage.clone());
        writer.record("a", 10, "first").await.expect("queued");
        writer.record("a", 20, "second").await.expect("queued");
        writer.record("b", 30, "").await.expect("queued");
        writer.record("deleted", 30, "").await.expect("queued");
        writer.flushed().await.expect("written");
        let a = storage.last_activity("a").await.expect("read");
        assert_eq!(a, Some((20, "second".to_owned())));
        let b = storage.last_activity("b").await.expect("read");
        assert_eq!(b, Some((30, String::new())));
        writer.record("a", 40, "third").await.expect("queued");
        writer.flushed().await.expect("written");
        let a = storage.last_activity("a").await.expect("read");
        assert_eq!(a, Some((40, "third".to_owned())));
    }
}
