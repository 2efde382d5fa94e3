//! The client's own records, every query of the crate's tables: the
//! device row, key package bookkeeping, conversation cursors, hashes of
//! sent messages, contacts, known devices with their verification state,
//! and the decrypted history with full-text search.

use sqlx::{Row, SqliteConnection};

use super::ClientStore;
use crate::envelope::Envelope;
use crate::identity::{fingerprint, DeviceName};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ----- this device ------------------------------------------------------

/// The stored device: (bare JID, device id, signature public key).
pub(crate) async fn device(
    conn: &mut SqliteConnection,
) -> Result<Option<(String, String, Vec<u8>)>, sqlx::Error> {
    Ok(
        sqlx::query("SELECT jid, device_id, signature_key FROM device")
            .fetch_optional(conn)
            .await?
            .map(|r| (r.get(0), r.get(1), r.get(2))),
    )
}

pub(crate) async fn insert_device(
    conn: &mut SqliteConnection,
    name: &DeviceName,
    key: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device (id, jid, device_id, signature_key, created_at) VALUES (1, ?, ?, ?, ?)",
    )
    .bind(name.jid.as_str())
    .bind(name.device.as_str())
    .bind(key)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

// ----- key packages -----------------------------------------------------

pub(crate) async fn insert_key_package(
    conn: &mut SqliteConnection,
    hash_ref: &[u8],
    last_resort: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO key_packages (hash_ref, last_resort, created_at) VALUES (?, ?, ?)")
        .bind(hash_ref)
        .bind(last_resort)
        .bind(now())
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn consume_key_package(
    conn: &mut SqliteConnection,
    hash_ref: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE key_packages SET consumed_at = ? WHERE hash_ref = ?")
        .bind(now())
        .bind(hash_ref)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn unconsumed_key_packages(
    conn: &mut SqliteConnection,
) -> Result<u32, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM key_packages WHERE last_resort = 0 AND consumed_at IS NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(row.get::<i64, _>(0) as u32)
}

// ----- conversations ------------------------------------------------------

/// Records a conversation (again, when re-joined) with its log cursor.
pub(crate) async fn upsert_conversation(
    conn: &mut SqliteConnection,
    group_id: &[u8],
    last_seq: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR REPLACE INTO conversations (group_id, last_seq, created_at) VALUES (?, ?, ?)",
    )
    .bind(group_id)
    .bind(last_seq as i64)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn last_seq(
    conn: &mut SqliteConnection,
    group_id: &[u8],
) -> Result<Option<u64>, sqlx::Error> {
    Ok(
        sqlx::query("SELECT last_seq FROM conversations WHERE group_id = ?")
            .bind(group_id)
            .fetch_optional(conn)
            .await?
            .map(|r| r.get::<i64, _>(0) as u64),
    )
}

/// Moves the cursor forward (never back).
pub(crate) async fn set_cursor(
    conn: &mut SqliteConnection,
    group_id: &[u8],
    seq: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE conversations SET last_seq = MAX(last_seq, ?) WHERE group_id = ?")
        .bind(seq as i64)
        .bind(group_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn remember_sent(
    conn: &mut SqliteConnection,
    group_id: &[u8],
    hash: &[u8],
    kind: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO sent_messages (hash, group_id, kind) VALUES (?, ?, ?)")
        .bind(hash)
        .bind(group_id)
        .bind(kind)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn sent_kind(
    conn: &mut SqliteConnection,
    hash: &[u8],
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query("SELECT kind FROM sent_messages WHERE hash = ?")
        .bind(hash)
        .fetch_optional(conn)
        .await?
        .map(|r| r.get(0)))
}

// ----- history --------------------------------------------------------------

/// A message in the local history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The conversation (MLS group id).
    pub group_id: Vec<u8>,
    /// Position in the hub's log (`None` for our own, until echoed).
    pub seq: Option<u64>,
    /// The sending device.
    pub sender: String,
    /// The decrypted envelope.
    pub envelope: Envelope,
}

/// Where a message stands in the conversation.
pub(crate) enum Position<'a> {
    /// Received at this log position.
    Seq(u64),
    /// Sent by us; the position comes with the echo of this MLS message.
    Sent { mls_hash: &'a [u8] },
}

pub(crate) async fn record_message(
    conn: &mut SqliteConnection,
    group_id: &[u8],
    position: Position<'_>,
    sender: &DeviceName,
    envelope: &Envelope,
    plaintext: &[u8],
) -> Result<(), sqlx::Error> {
    let (seq, mls_hash) = match position {
        Position::Seq(seq) => (Some(seq as i64), None),
        Position::Sent { mls_hash } => (None, Some(mls_hash)),
    };
    sqlx::query(
        "INSERT OR IGNORE INTO messages
         (group_id, seq, envelope_id, sender_jid, sender_device, sent_at, body, envelope, mls_hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(group_id)
    .bind(seq)
    .bind(&envelope.id)
    .bind(sender.jid.as_str())
    .bind(sender.device.as_str())
    .bind(envelope.time.to_rfc3339())
    .bind(envelope.body().unwrap_or_default())
    .bind(plaintext)
    .bind(mls_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Our own message came back at `seq`: place it in the history.
pub(crate) async fn place_sent_message(
    conn: &mut SqliteConnection,
    mls_hash: &[u8],
    seq: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET seq = ? WHERE mls_hash = ? AND seq IS NULL")
        .bind(seq as i64)
        .bind(mls_hash)
        .execute(conn)
        .await?;
    Ok(())
}

fn stored_message(row: &sqlx::sqlite::SqliteRow) -> Option<StoredMessage> {
    let envelope: Vec<u8> = row.get(3);
    Some(StoredMessage {
        group_id: row.get(0),
        seq: row.get::<Option<i64>, _>(1).map(|s| s as u64),
        sender: row.get(2),
        envelope: Envelope::parse(&envelope).ok()?,
    })
}

// ----- contacts and known devices ---------------------------------------------

/// A device of a contact as this client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    /// The user.
    pub jid: String,
    /// The device id.
    pub device: String,
    /// Its signature public key.
    pub signature_key: Vec<u8>,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Whether the user marked it verified.
    pub verified: bool,
}

/// What seeing a device meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSighting {
    /// First time: show "new device" to the user.
    New,
    /// Known, same key.
    Known,
    /// Known id with a different key: its verification is reset.
    KeyChanged,
}

pub(crate) async fn observe_device(
    conn: &mut SqliteConnection,
    name: &DeviceName,
    key: &[u8],
) -> Result<DeviceSighting, sqlx::Error> {
    let known: Option<Vec<u8>> =
        sqlx::query("SELECT signature_key FROM known_devices WHERE jid = ? AND device_id = ?")
            .bind(name.jid.as_str())
            .bind(name.device.as_str())
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.get(0));
    let sighting = match known {
        None => DeviceSighting::New,
        Some(k) if k == key => return Ok(DeviceSighting::Known),
        Some(_) => DeviceSighting::KeyChanged,
    };
    sqlx::query(
        "INSERT OR REPLACE INTO known_devices (jid, device_id, signature_key, verified, first_seen) VALUES (?, ?, ?, 0, ?)",
    )
    .bind(name.jid.as_str())
    .bind(name.device.as_str())
    .bind(key)
    .bind(now())
    .execute(conn)
    .await?;
    Ok(sighting)
}

impl ClientStore {
    /// Adds (or renames) a contact.
    pub async fn add_contact(&self, jid: &str, name: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT OR REPLACE INTO contacts (jid, name) VALUES (?, ?)")
            .bind(jid)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// All contacts, by JID.
    pub async fn contacts(&self) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
        let rows = sqlx::query("SELECT jid, name FROM contacts ORDER BY jid")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The known devices of a user.
    pub async fn known_devices(&self, jid: &str) -> Result<Vec<KnownDevice>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT jid, device_id, signature_key, verified FROM known_devices WHERE jid = ? ORDER BY first_seen, device_id",
        )
        .bind(jid)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let key: Vec<u8> = r.get(2);
                KnownDevice {
                    jid: r.get(0),
                    device: r.get(1),
                    fingerprint: fingerprint(&key),
                    signature_key: key,
                    verified: r.get(3),
                }
            })
            .collect())
    }

    /// Marks a device verified (or not). Returns false if it is unknown.
    pub async fn set_verified(
        &self,
        jid: &str,
        device: &str,
        verified: bool,
    ) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("UPDATE known_devices SET verified = ? WHERE jid = ? AND device_id = ?")
                .bind(verified)
                .bind(jid)
                .bind(device)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The last `limit` messages of a conversation in the hub's order
    /// (our own not yet echoed last), oldest first.
    pub async fn history(
        &self,
        group_id: &[u8],
        limit: u32,
    ) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT group_id, seq, sender_jid || '#' || sender_device, envelope FROM
             (SELECT * FROM messages WHERE group_id = ?
              ORDER BY COALESCE(seq, 9223372036854775807) DESC, id DESC LIMIT ?)
             ORDER BY COALESCE(seq, 9223372036854775807), id",
        )
        .bind(group_id)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().filter_map(stored_message).collect())
    }

    /// Messages whose text matches `words` (FTS5 query syntax), best
    /// matches first.
    pub async fn search(&self, words: &str, limit: u32) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m.group_id, m.seq, m.sender_jid || '#' || m.sender_device, m.envelope
             FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
             WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
        )
        .bind(words)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().filter_map(stored_message).collect())
    }
}
