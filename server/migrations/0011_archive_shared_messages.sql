-- The archive keeps each message once, in `archive_messages`, and lists it
-- in every archive it belongs to: `archive_entries` for users,
-- `muc_archive_entries` for rooms. A message between two local users is
-- one stored message with two entries.
--
-- `seq` is the archiving order: microseconds since the Unix epoch when the
-- message was archived, raised to keep it increasing. `id` is the stanza id
-- (XEP-0359) every archive listing the message knows it by: `seq` in 16 hex
-- digits, then 32 random bits in 8 (rows migrated from the per-archive
-- tables keep the ids they had). The stanza is kept as routed: the
-- archive's own <stanza-id/> is added when it is read back.
CREATE TABLE archive_messages (
    seq    INTEGER PRIMARY KEY,
    id     TEXT NOT NULL,
    stamp  INTEGER NOT NULL,
    stanza TEXT NOT NULL
) STRICT;

-- A user's archive: its messages in `seq` order, each with the other
-- party's bare JID. The `seq` index finds the entries of expired messages
-- and whether a message is listed elsewhere; it only ever grows at its end.
CREATE TABLE archive_entries (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    with_jid TEXT NOT NULL,
    PRIMARY KEY (username, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX archive_entries_by_seq ON archive_entries(seq);

-- A room's archive, as `archive_entries` for users.
CREATE TABLE muc_archive_entries (
    room     TEXT NOT NULL REFERENCES muc_rooms(room) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    with_jid TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX muc_archive_entries_by_seq ON muc_archive_entries(seq);

-- Earlier rows become one message each, in their order (even seqs for
-- users' rows, odd for rooms'), far below any new seq.
INSERT INTO archive_messages (seq, id, stamp, stanza)
    SELECT seq * 2, id, stamp, stanza FROM archive;
INSERT INTO archive_entries (username, seq, with_jid)
    SELECT username, seq * 2, with_jid FROM archive;
INSERT INTO archive_messages (seq, id, stamp, stanza)
    SELECT seq * 2 + 1, id, stamp, stanza FROM muc_archive;
INSERT INTO muc_archive_entries (room, seq, with_jid)
    SELECT room, seq * 2 + 1, with_jid FROM muc_archive;
DROP TABLE archive;
DROP TABLE muc_archive;
