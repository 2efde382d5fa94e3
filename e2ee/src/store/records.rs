//! The client's own records, every query of the crate's tables: the
//! device row, key package bookkeeping, conversation cursors, hashes of
//! sent messages, contacts, known devices with their verification state,
//! and the decrypted history with full-text search.

use rusqlite::{Connection, OptionalExtension, Row};

use super::{Batch, ClientStore, StoreError};
use crate::envelope::Envelope;
use crate::identity::{fingerprint, DeviceName};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ----- this device ------------------------------------------------------

/// The stored device: (bare JID, device id, signature public key).
pub(crate) fn device(conn: &mut Connection) -> rusqlite::Result<Option<(String, String, Vec<u8>)>> {
    conn.query_row(
        "SELECT jid, device_id, signature_key FROM device",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

pub(crate) fn insert_device(batch: &mut Batch, name: &DeviceName, key: &[u8]) {
    batch.add(
        "INSERT INTO device (id, jid, device_id, signature_key, created_at) VALUES (1, ?, ?, ?, ?)",
        [
            name.jid.as_str().into(),
            name.device.as_str().into(),
            key.into(),
            now().into(),
        ],
    );
}

// ----- key packages -----------------------------------------------------

pub(crate) fn insert_key_package(batch: &mut Batch, hash_ref: Vec<u8>, last_resort: bool) {
    batch.add(
        "INSERT INTO key_packages (hash_ref, last_resort, created_at) VALUES (?, ?, ?)",
        [hash_ref.into(), last_resort.into(), now().into()],
    );
}

pub(crate) fn consume_key_package(batch: &mut Batch, hash_ref: Vec<u8>) {
    batch.add(
        "UPDATE key_packages SET consumed_at = ? WHERE hash_ref = ?",
        [now().into(), hash_ref.into()],
    );
}

pub(crate) fn unconsumed_key_packages(conn: &mut Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COUNT(*) FROM key_packages WHERE last_resort = 0 AND consumed_at IS NULL",
        [],
        |r| r.get(0),
    )
}

// ----- conversations ------------------------------------------------------

/// Records a conversation (again, when re-joined) with its log cursor.
pub(crate) fn upsert_conversation(batch: &mut Batch, group_id: &[u8], last_seq: u64) {
    batch.add(
        "INSERT OR REPLACE INTO conversations (group_id, last_seq, created_at) VALUES (?, ?, ?)",
        [group_id.into(), last_seq.into(), now().into()],
    );
}

/// The conversation's cursor: the stored one, or a received message's
/// position if that is further.
pub(crate) fn last_seq(conn: &mut Connection, group_id: &[u8]) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT MAX(last_seq, COALESCE((SELECT MAX(seq) FROM messages WHERE group_id = ?1), 0))
         FROM conversations WHERE group_id = ?1",
    )?
    .query_row([group_id], |r| r.get(0))
    .optional()
}

/// Records where a conversation's hub is.
pub(crate) fn set_address(batch: &mut Batch, group_id: &[u8], address: &str) {
    batch.add(
        "UPDATE conversations SET address = ? WHERE group_id = ?",
        [address.into(), group_id.into()],
    );
}

/// The address of a conversation's hub, if known.
pub(crate) fn address(conn: &mut Connection, group_id: &[u8]) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT address FROM conversations WHERE group_id = ?")?
        .query_row([group_id], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

/// The conversation whose hub is at `address`.
pub(crate) fn conversation_at(
    conn: &mut Connection,
    address: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT group_id FROM conversations WHERE address = ? AND left_at IS NULL")?
        .query_row([address], |r| r.get(0))
        .optional()
}

/// Whether a conversation at `address` is known, followed or left.
pub(crate) fn knows_address(conn: &mut Connection, address: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM conversations WHERE address = ?")?
        .query_row([address], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// Every conversation with its hub's address (if known).
pub(crate) fn conversations(
    conn: &mut Connection,
) -> rusqlite::Result<Vec<(Vec<u8>, Option<String>)>> {
    conn.prepare_cached(
        "SELECT group_id, address FROM conversations WHERE left_at IS NULL ORDER BY created_at",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Marks a conversation as left by this device.
pub(crate) fn mark_left(batch: &mut Batch, group_id: &[u8]) {
    batch.add(
        "UPDATE conversations SET left_at = ? WHERE group_id = ?",
        [now().into(), group_id.into()],
    );
}

/// Moves the cursor forward (never back).
pub(crate) fn set_cursor(batch: &mut Batch, group_id: &[u8], seq: u64) {
    batch.add(
        "UPDATE conversations SET last_seq = MAX(last_seq, ?) WHERE group_id = ?",
        [seq.into(), group_id.into()],
    );
}

pub(crate) fn remember_sent(batch: &mut Batch, group_id: &[u8], hash: Vec<u8>, kind: &str) {
    batch.add(
        "INSERT OR IGNORE INTO sent_messages (hash, group_id, kind) VALUES (?, ?, ?)",
        [hash.into(), group_id.into(), kind.into()],
    );
}

pub(crate) fn sent_kind(conn: &mut Connection, hash: &[u8]) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT kind FROM sent_messages WHERE hash = ?")?
        .query_row([hash], |r| r.get(0))
        .optional()
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

pub(crate) fn record_message(
    batch: &mut Batch,
    group_id: &[u8],
    position: Position<'_>,
    sender: &DeviceName,
    envelope: &Envelope,
    plaintext: &[u8],
) {
    let (seq, mls_hash) = match position {
        Position::Seq(seq) => (Some(seq), None),
        Position::Sent { mls_hash } => (None, Some(mls_hash)),
    };
    batch.add(
        "INSERT INTO messages
         (group_id, seq, envelope_id, sender_jid, sender_device, sent_at, body, envelope, mls_hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            group_id.into(),
            seq.into(),
            envelope.id.as_str().into(),
            sender.jid.as_str().into(),
            sender.device.as_str().into(),
            envelope.time.to_rfc3339().into(),
            envelope.body().unwrap_or_default().into(),
            plaintext.into(),
            mls_hash.into(),
        ],
    );
}

/// Our own message came back at `seq`: place it in the history.
pub(crate) fn place_sent_message(batch: &mut Batch, mls_hash: &[u8], seq: u64) {
    batch.add(
        "UPDATE messages SET seq = ?, mls_hash = NULL WHERE mls_hash = ?",
        [seq.into(), mls_hash.into()],
    );
}

fn stored_message(row: &Row<'_>) -> rusqlite::Result<Option<StoredMessage>> {
    let envelope: Vec<u8> = row.get(3)?;
    let Ok(envelope) = Envelope::parse(&envelope) else {
        return Ok(None);
    };
    Ok(Some(StoredMessage {
        group_id: row.get(0)?,
        seq: row.get(1)?,
        sender: row.get(2)?,
        envelope,
    }))
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

/// What seeing `name` with `key` means; a new device or a changed key is
/// recorded (unverified) in `batch`.
pub(crate) fn observe_device(
    store: &ClientStore,
    batch: &mut Batch,
    name: &DeviceName,
    key: &[u8],
) -> Result<DeviceSighting, StoreError> {
    let known: Option<Vec<u8>> = store.with(|conn| {
        conn.prepare_cached(
            "SELECT signature_key FROM known_devices WHERE jid = ? AND device_id = ?",
        )?
        .query_row([name.jid.as_str(), name.device.as_str()], |r| r.get(0))
        .optional()
    })?;
    let sighting = match known {
        None => DeviceSighting::New,
        Some(k) if k == key => return Ok(DeviceSighting::Known),
        Some(_) => DeviceSighting::KeyChanged,
    };
    batch.add(
        "INSERT OR REPLACE INTO known_devices (jid, device_id, signature_key, verified, first_seen) VALUES (?, ?, ?, 0, ?)",
        [
            name.jid.as_str().into(),
            name.device.as_str().into(),
            key.into(),
            now().into(),
        ],
    );
    Ok(sighting)
}

impl ClientStore {
    /// Adds (or renames) a contact.
    pub fn add_contact(&self, jid: &str, name: Option<&str>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.add(
            "INSERT OR REPLACE INTO contacts (jid, name) VALUES (?, ?)",
            [jid.into(), name.into()],
        );
        self.apply(batch)
    }

    /// All contacts, by JID.
    pub fn contacts(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT jid, name FROM contacts ORDER BY jid")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// The known devices of a user.
    pub fn known_devices(&self, jid: &str) -> Result<Vec<KnownDevice>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT jid, device_id, signature_key, verified FROM known_devices
                 WHERE jid = ? ORDER BY first_seen, device_id",
            )?
            .query_map([jid], |r| {
                let key: Vec<u8> = r.get(2)?;
                Ok(KnownDevice {
                    jid: r.get(0)?,
                    device: r.get(1)?,
                    fingerprint: fingerprint(&key),
                    signature_key: key,
                    verified: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Marks the device `jid`/`device` with signature key `key` verified,
    /// recording it if it was not known. Returns false (and changes
    /// nothing) if it is known with another key.
    pub fn mark_verified(&self, jid: &str, device: &str, key: &[u8]) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO known_devices (jid, device_id, signature_key, verified, first_seen)
                 VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (jid, device_id) DO UPDATE SET verified = 1
                 WHERE signature_key = excluded.signature_key",
                rusqlite::params![jid, device, key, now()],
            )
            .map(|changed| changed == 1)
        })
    }

    /// Marks a device verified (or not). Returns false if it is unknown.
    pub fn set_verified(
        &self,
        jid: &str,
        device: &str,
        verified: bool,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE known_devices SET verified = ?1 WHERE jid = ?2 AND device_id = ?3",
                rusqlite::params![verified, jid, device],
            )
        })
        .map(|changed| changed == 1)
    }

    /// The message with this envelope id, if it is in the history.
    pub fn message(&self, envelope_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.with(|conn| {
            stored_messages(
                conn,
                "SELECT group_id, seq, sender_jid || '#' || sender_device, envelope FROM messages
                 WHERE envelope_id = ? ORDER BY id LIMIT 1",
                [envelope_id],
            )
            .map(|found| found.into_iter().next())
        })
    }

    /// The last `limit` messages of a conversation in the hub's order
    /// (our own not yet echoed last), oldest first.
    pub fn history(&self, group_id: &[u8], limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        self.with(|conn| {
            stored_messages(
                conn,
                "SELECT group_id, seq, sender_jid || '#' || sender_device, envelope FROM
                 (SELECT * FROM messages WHERE group_id = ?1
                  ORDER BY COALESCE(seq, 9223372036854775807) DESC, id DESC LIMIT ?2)
                 ORDER BY COALESCE(seq, 9223372036854775807), id",
                rusqlite::params![group_id, limit],
            )
        })
    }

    /// Adds the messages recorded since the last call to the full-text
    /// index (searches do this first; a client may call it when idle).
    pub fn index_history(&self) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.add(
            "INSERT INTO messages_fts (rowid, body)
             SELECT id, body FROM messages
             WHERE id > (SELECT indexed_up_to FROM search_index) AND body != ''",
            [],
        );
        batch.add(
            "UPDATE search_index SET indexed_up_to =
             (SELECT COALESCE(MAX(id), indexed_up_to) FROM messages)",
            [],
        );
        self.apply(batch)
    }

    /// Messages whose text matches `words` (FTS5 query syntax), best
    /// matches first.
    pub fn search(&self, words: &str, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        self.index_history()?;
        self.with(|conn| {
            stored_messages(
                conn,
                "SELECT m.group_id, m.seq, m.sender_jid || '#' || m.sender_device, m.envelope
                 FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                 WHERE messages_fts MATCH ?1 ORDER BY rank LIMIT ?2",
                rusqlite::params![words, limit],
            )
        })
    }
}

/// The messages a query selects as (group id, seq, sender, envelope);
/// rows whose envelope no longer parses are left out.
fn stored_messages(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<StoredMessage>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, stored_message)?;
    let mut messages = Vec::new();
    for row in rows {
        messages.extend(row?);
    }
    Ok(messages)
}
