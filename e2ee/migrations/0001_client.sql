-- The client store. Every operation writes in one transaction, so MLS
-- state and the client's records never disagree.

-- openmls' state (groups, key material), written by tern_e2ee::store::mls:
-- the key is a label, ':' and the JSON of openmls' key; the value is JSON.
CREATE TABLE mls_state (
    key   BLOB PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

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
-- up to which everything has been processed (or further: the highest
-- `seq` in `messages`, which a received message records without touching
-- this row).
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

-- Decrypted history (on the user's own device only). Every index here is
-- written with each message, so there are few.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: see search_index
    group_id      BLOB NOT NULL,
    seq           INTEGER,
    envelope_id   TEXT NOT NULL,
    sender_jid    TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    sent_at       TEXT NOT NULL,
    body          TEXT NOT NULL DEFAULT '',
    envelope      BLOB NOT NULL,
    -- For our own messages until the hub's echo: the hash of the MLS
    -- message, to stamp `seq` then.
    mls_hash      BLOB
) STRICT;
CREATE INDEX messages_by_group ON messages(group_id, seq, id);
CREATE INDEX messages_awaiting_echo ON messages(mls_hash) WHERE mls_hash IS NOT NULL;

-- Full-text search over bodies. Indexing is batched off the message path
-- (FTS5 writes a segment per transaction): messages up to
-- `indexed_up_to` are in the index, later ones are added before a search.
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id');
CREATE TABLE search_index (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_up_to INTEGER NOT NULL
) STRICT;
INSERT INTO search_index (id, indexed_up_to) VALUES (1, 0);
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.id <= (SELECT indexed_up_to FROM search_index) BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
