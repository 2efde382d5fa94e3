-- Archived stanzas move out of the database into the message log
-- (`archive-log/` in the data directory, `server/src/storage/message_log.rs`):
-- a chunk whose `segment` is set holds its entries in the logged format
-- (`server/src/storage/archive_chunk.rs`), each naming where in that
-- segment its stanza is. Chunks written before keep their stanzas inline
-- (`segment` NULL). A message in two archives is logged once; both
-- archives' chunks point at the same bytes.
ALTER TABLE archive_chunks ADD COLUMN segment INTEGER;
ALTER TABLE muc_archive_chunks ADD COLUMN segment INTEGER;
CREATE INDEX archive_chunks_by_segment ON archive_chunks(segment)
    WHERE segment IS NOT NULL;
CREATE INDEX muc_archive_chunks_by_segment ON muc_archive_chunks(segment)
    WHERE segment IS NOT NULL;

-- Segments that hold bytes of deleted chunks (a deleted account's or
-- room's, expired messages): the archive writer compacts them, so that
-- what was deleted leaves the disk.
CREATE TABLE archive_log_dirty (
    segment INTEGER PRIMARY KEY
) STRICT;
CREATE TRIGGER archive_chunks_deleted AFTER DELETE ON archive_chunks
    WHEN old.segment IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO archive_log_dirty VALUES (old.segment);
END;
CREATE TRIGGER muc_archive_chunks_deleted AFTER DELETE ON muc_archive_chunks
    WHEN old.segment IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO archive_log_dirty VALUES (old.segment);
END;
