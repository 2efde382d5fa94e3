-- An archive is a run of chunks: each chunk holds consecutive entries of
-- one archive (a user's or a room's), in seq order, encoded together in
-- `entries` (the format is in `server/src/storage/archive_chunk.rs`). The
-- writer makes one chunk per archive per group commit, so a busy archive
-- costs one row per commit instead of rows and index entries per message.
-- Each archive keeps its own copy of a message: an archive is read, paged
-- and deleted without looking at any other.
--
-- An archive's chunks do not overlap: each one's seqs lie after the
-- previous chunk's `last_seq`, so the chunks in `last_seq` order are the
-- archive in seq order. `min_stamp` and `max_stamp` bound the entries'
-- stamps, for time filters and expiry; `entry_count` is how many entries
-- `entries` holds.
CREATE TABLE archive_chunks (
    username    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    last_seq    INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    min_stamp   INTEGER NOT NULL,
    max_stamp   INTEGER NOT NULL,
    entry_count INTEGER NOT NULL,
    entries     BLOB NOT NULL,
    PRIMARY KEY (username, last_seq)
) STRICT;
CREATE INDEX archive_chunks_by_stamp ON archive_chunks(min_stamp);

-- A room's archive, as `archive_chunks` for users.
CREATE TABLE muc_archive_chunks (
    room        TEXT NOT NULL REFERENCES muc_rooms(room) ON DELETE CASCADE,
    last_seq    INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,
    min_stamp   INTEGER NOT NULL,
    max_stamp   INTEGER NOT NULL,
    entry_count INTEGER NOT NULL,
    entries     BLOB NOT NULL,
    PRIMARY KEY (room, last_seq)
) STRICT;
CREATE INDEX muc_archive_chunks_by_stamp ON muc_archive_chunks(min_stamp);

-- Every earlier entry becomes a chunk of its own, with its seq and id.
INSERT INTO archive_chunks
    SELECT e.username, e.seq, e.seq, m.stamp, m.stamp, 1,
           CAST(printf('%016x%016x%08x%08x%08x', e.seq, m.stamp,
                       length(CAST(m.id AS BLOB)), length(CAST(e.with_jid AS BLOB)),
                       length(CAST(m.stanza AS BLOB)))
                || m.id || e.with_jid || m.stanza AS BLOB)
    FROM archive_entries e JOIN archive_messages m ON m.seq = e.seq;
INSERT INTO muc_archive_chunks
    SELECT e.room, e.seq, e.seq, m.stamp, m.stamp, 1,
           CAST(printf('%016x%016x%08x%08x%08x', e.seq, m.stamp,
                       length(CAST(m.id AS BLOB)), length(CAST(e.with_jid AS BLOB)),
                       length(CAST(m.stanza AS BLOB)))
                || m.id || e.with_jid || m.stanza AS BLOB)
    FROM muc_archive_entries e JOIN archive_messages m ON m.seq = e.seq;
DROP TABLE archive_entries;
DROP TABLE muc_archive_entries;
DROP TABLE archive_messages;
