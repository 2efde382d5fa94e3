-- The message archive (XEP-0313): per user, the end-to-end encrypted
-- messages they sent and received (plain bodies are never stored).
-- `id` is the stanza id (XEP-0359) the server gave the message in this
-- archive; `stamp` is when the server archived it, in microseconds since
-- the Unix epoch; `with_jid` is the other party's bare JID.
CREATE TABLE archive (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    id       TEXT NOT NULL,
    with_jid TEXT NOT NULL,
    stamp    INTEGER NOT NULL,
    stanza   TEXT NOT NULL,
    UNIQUE (username, id)
) STRICT;
CREATE INDEX archive_by_user ON archive(username, seq);
CREATE INDEX archive_by_contact ON archive(username, with_jid, seq);
CREATE INDEX archive_by_stamp ON archive(stamp);
