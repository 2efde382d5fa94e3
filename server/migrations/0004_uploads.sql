-- The file upload service (XEP-0363): one row per slot handed out. The
-- file itself (an encrypted, opaque blob) lives in <data_dir>/uploads/
-- under the slot's token once the PUT completed.
CREATE TABLE uploads (
    token        TEXT PRIMARY KEY NOT NULL,
    username     TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    size         INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    completed_at TEXT
) STRICT;
