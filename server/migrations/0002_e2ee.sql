-- The key directory: each device's MLS key packages (public by nature).
-- Single-use packages are deleted when claimed; the one last-resort
-- package per device is handed out when none is left, and stays.
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    device      TEXT NOT NULL,
    package     BLOB NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    uploaded_at TEXT NOT NULL
) STRICT;
CREATE INDEX key_packages_by_device ON key_packages(username, device, last_resort, id);
CREATE UNIQUE INDEX one_last_resort_per_device ON key_packages(username, device)
    WHERE last_resort = 1;

-- The group hub: one row per group, with its public MLS state (the rows
-- of tern_e2ee::mls_storage) and its ordered log of MLS messages
-- (ciphertext, or handshakes that carry no message content).
CREATE TABLE hub_groups (
    group_id   BLOB PRIMARY KEY NOT NULL,
    creator    TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    group_info BLOB NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX hub_groups_by_creator ON hub_groups(creator);

CREATE TABLE hub_state (
    group_id BLOB NOT NULL REFERENCES hub_groups(group_id) ON DELETE CASCADE,
    key      BLOB NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (group_id, key)
) WITHOUT ROWID;

CREATE TABLE hub_log (
    group_id BLOB NOT NULL REFERENCES hub_groups(group_id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    message  BLOB NOT NULL,
    PRIMARY KEY (group_id, seq)
) WITHOUT ROWID;

-- The users with a device in each group's current epoch (who may send,
-- read the log, and get the group's messages).
CREATE TABLE hub_members (
    group_id BLOB NOT NULL REFERENCES hub_groups(group_id) ON DELETE CASCADE,
    jid      TEXT NOT NULL,
    PRIMARY KEY (group_id, jid)
) WITHOUT ROWID;

-- Users removed from a group may still read its log up to the commit
-- that removed them (so they learn of the removal), not beyond.
CREATE TABLE hub_former_members (
    group_id  BLOB NOT NULL REFERENCES hub_groups(group_id) ON DELETE CASCADE,
    jid       TEXT NOT NULL,
    until_seq INTEGER NOT NULL,
    PRIMARY KEY (group_id, jid)
) WITHOUT ROWID;
