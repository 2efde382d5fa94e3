-- Accounts: only salted SCRAM secrets, never passwords.
CREATE TABLE accounts (
    username   TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE scram_credentials (
    username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    hash       TEXT NOT NULL CHECK (hash IN ('sha1', 'sha256')),
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (username, hash)
) STRICT;

-- Rosters (RFC 6121) with the subscription state of each contact.
-- `listed` is 0 for a contact known only through a pending inbound
-- subscription request: such items are not shown in the roster.
CREATE TABLE roster_items (
    username     TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    contact      TEXT NOT NULL,
    name         TEXT,
    groups       TEXT NOT NULL DEFAULT '[]',
    subscription TEXT NOT NULL DEFAULT 'none'
                 CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      INTEGER NOT NULL DEFAULT 0,
    pending_in   INTEGER NOT NULL DEFAULT 0,
    approved     INTEGER NOT NULL DEFAULT 0,
    listed       INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (username, contact)
) STRICT;

-- Roster versioning (XEP-0237): one counter per user.
CREATE TABLE roster_versions (
    username TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    version  INTEGER NOT NULL
) STRICT;

-- Messages for offline users: whole stanzas whose content is end-to-end
-- encrypted (plain bodies are never stored).
CREATE TABLE offline_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    stanza      TEXT NOT NULL,
    received_at TEXT NOT NULL
) STRICT;
CREATE INDEX offline_messages_by_user ON offline_messages(username, id);

-- PEP (XEP-0163): nodes on a user's bare JID and their items.
CREATE TABLE pep_nodes (
    owner        TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    node         TEXT NOT NULL,
    access_model TEXT NOT NULL CHECK (access_model IN ('open', 'presence', 'whitelist')),
    max_items    INTEGER NOT NULL,
    PRIMARY KEY (owner, node)
) STRICT;

CREATE TABLE pep_items (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    owner    TEXT NOT NULL,
    node     TEXT NOT NULL,
    item_id  TEXT NOT NULL,
    payload  TEXT NOT NULL,
    UNIQUE (owner, node, item_id),
    FOREIGN KEY (owner, node) REFERENCES pep_nodes(owner, node) ON DELETE CASCADE
) STRICT;
