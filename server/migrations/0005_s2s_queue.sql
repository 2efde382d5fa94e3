-- Stanzas waiting for a federation peer (tern-federation's durable
-- queue), in order per (local, remote) domain pair. A stanza leaves when
-- the peer has it, or when it is bounced.
CREATE TABLE s2s_queue (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    local     TEXT    NOT NULL,
    remote    TEXT    NOT NULL,
    stanza    TEXT    NOT NULL,
    queued_at INTEGER NOT NULL
);
CREATE INDEX s2s_queue_by_pair ON s2s_queue (local, remote, id);
