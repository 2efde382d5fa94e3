//! Queries of the key directory: each device's MLS key packages.

use sqlx::Row;

use super::{now_rfc3339, Result, Storage, StorageError};

/// A key package handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    /// The device it belongs to.
    pub device: String,
    /// The TLS-serialised package.
    pub package: Vec<u8>,
    /// Whether it is the device's last-resort package (not consumed).
    pub last_resort: bool,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUpload {
    /// Stored; the device now has this many single-use packages.
    Stored {
        /// Single-use packages held.
        remaining: u32,
    },
    /// Refused, nothing stored: it would exceed the limit.
    TooMany {
        /// Single-use packages held.
        held: u32,
    },
    /// Refused, nothing stored: the user has as many other devices with
    /// key packages as are kept.
    TooManyDevices,
}

impl Storage {
    /// Adds a device's single-use packages and, if given, replaces its
    /// last-resort package, in one transaction. Returns how many
    /// single-use packages the device has now; refuses (storing nothing)
    /// when that would exceed `max`.
    pub async fn store_key_packages(
        &self,
        username: &str,
        device: &str,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max: u32,
        max_devices: u32,
    ) -> Result<KeyUpload> {
        // IMMEDIATE: it reads before it writes, and a deferred transaction
        // whose read lock cannot become a write lock fails at once.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT device) FROM key_packages WHERE username = ? AND device != ?",
        )
        .bind(username)
        .bind(device)
        .fetch_one(&mut *tx)
        .await?;
        if others >= i64::from(max_devices) {
            return Ok(KeyUpload::TooManyDevices);
        }
        if let Some(package) = last_resort {
            // A write first, so the transaction holds the write lock.
            sqlx::query(
                "DELETE FROM key_packages WHERE username = ? AND device = ? AND last_resort = 1",
            )
            .bind(username)
            .bind(device)
            .execute(&mut *tx)
            .await?;
            insert_key_package(&mut tx, username, device, package, true).await?;
        }
        let held = count_single_use(&mut tx, username, device).await?;
        let total = held + packages.len() as u32;
        if total > max {
            return Ok(KeyUpload::TooMany { held });
        }
        for package in packages {
            insert_key_package(&mut tx, username, device, package, false).await?;
        }
        tx.commit().await?;
        Ok(KeyUpload::Stored { remaining: total })
    }

    /// How many single-use packages a device has left.
    pub async fn count_key_packages(&self, username: &str, device: &str) -> Result<u32> {
        let mut conn = self.pool.acquire().await?;
        count_single_use(&mut conn, username, device).await
    }

    /// Hands out one package per device of `username`: the oldest
    /// single-use one, deleted in the same statement (so concurrent claims
    /// never get the same package), or else the device's last-resort one;
    /// only last-resort ones when not `single_use`.
    pub async fn claim_key_packages(
        &self,
        username: &str,
        single_use: bool,
    ) -> Result<Vec<ClaimedKeyPackage>> {
        let claimed = if single_use {
            sqlx::query(
                "DELETE FROM key_packages WHERE id IN
                   (SELECT MIN(id) FROM key_packages
                    WHERE username = ? AND last_resort = 0 GROUP BY device)
                 RETURNING device, package",
            )
            .bind(username)
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        let mut packages: Vec<ClaimedKeyPackage> = claimed
            .iter()
            .map(|row| ClaimedKeyPackage {
                device: row.get(0),
                package: row.get(1),
                last_resort: false,
            })
            .collect();
        let fallbacks = sqlx::query(
            "SELECT device, package FROM key_packages
             WHERE username = ? AND last_resort = 1 ORDER BY device",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        for row in fallbacks {
            let device: String = row.get(0);
            if !packages.iter().any(|p| p.device == device) {
                packages.push(ClaimedKeyPackage {
                    device,
                    package: row.get(1),
                    last_resort: true,
                });
            }
        }
        packages.sort_by(|a, b| a.device.cmp(&b.device));
        Ok(packages)
    }
}

async fn insert_key_package(
    conn: &mut sqlx::SqliteConnection,
    username: &str,
    device: &str,
    package: &[u8],
    last_resort: bool,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_packages (username, device, package, last_resort, uploaded_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(username)
    .bind(device)
    .bind(package)
    .bind(last_resort)
    .bind(now_rfc3339())
    .execute(conn)
    .await?;
    Ok(())
}

async fn count_single_use(
    conn: &mut sqlx::SqliteConnection,
    username: &str,
    device: &str,
) -> Result<u32> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM key_packages WHERE username = ? AND device = ? AND last_resort = 0",
    )
    .bind(username)
    .bind(device)
    .fetch_one(conn)
    .await?;
    u32::try_from(count).map_err(|_| StorageError::Corrupt("key package count".into()))
}
