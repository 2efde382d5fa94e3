-- The client's own tables. MLS state lives in the openmls_* tables that
-- openmls_sqlx_storage creates beside these, in the same database, so one
-- transaction covers both.

-- This device (one row).
CREATE TABLE device (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    jid           TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    signature_key BLOB NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

-- Key packages this device generated; consumed ones are marked, so the
-- client knows how many the directory still holds.
CREATE TABLE key_packages (
    hash_ref    BLOB PRIMARY KEY NOT NULL,
    last_resort INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    consumed_at TEXT
) STRICT;

-- Conversations: an MLS group each, with the position in the hub's log
-- up to which everything has been processed.
CREATE TABLE conversations (
    group_id   BLOB PRIMARY KEY NOT NULL,
    address    TEXT,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
) STRICT;

-- Hashes of MLS messages this device sent, to recognise their echo in the
-- hub's log (a device cannot decrypt its own messages).
CREATE TABLE sent_messages (
    hash     BLOB PRIMARY KEY NOT NULL,
    group_id BLOB NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('application', 'commit', 'proposal'))
) STRICT;

-- Devices of contacts, with their verification state.
CREATE TABLE known_devices (
    jid           TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    signature_key BLOB NOT NULL,
    verified      INTEGER NOT NULL DEFAULT 0,
    first_seen    TEXT NOT NULL,
    PRIMARY KEY (jid, device_id)
) STRICT;

-- Contacts.
CREATE TABLE contacts (
    jid  TEXT PRIMARY KEY NOT NULL,
    name TEXT
) STRICT;

-- Decrypted history (on the user's own device only).
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id      BLOB NOT NULL,
    seq           INTEGER,
    envelope_id   TEXT NOT NULL,
    sender_jid    TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    sent_at       TEXT NOT NULL,
    body          TEXT NOT NULL DEFAULT '',
    envelope      BLOB NOT NULL,
    -- For our own messages: the hash of the MLS message, to stamp `seq`
    -- when the hub's echo arrives.
    mls_hash      BLOB,
    UNIQUE (group_id, envelope_id, sender_device)
) STRICT;
CREATE INDEX messages_by_group ON messages(group_id, seq, id);
CREATE INDEX messages_by_hash ON messages(mls_hash);

-- Full-text search over bodies.
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
END;
-- A received message moves its conversation's cursor in the same
-- statement (one round trip less per message).
CREATE TRIGGER messages_cursor AFTER INSERT ON messages WHEN new.seq IS NOT NULL BEGIN
    UPDATE conversations SET last_seq = MAX(last_seq, new.seq) WHERE group_id = new.group_id;
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
