-- The MUC service (XEP-0045) for clients that encrypt with OMEMO:
-- persistent members-only, non-anonymous rooms. Occupants live in
-- memory; rooms, their affiliations and their archive of encrypted
-- messages are kept here. Room names and descriptions are the owner's
-- public labels; message content is only ever ciphertext.
CREATE TABLE muc_rooms (
    room        TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE muc_affiliations (
    room        TEXT NOT NULL REFERENCES muc_rooms(room) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    PRIMARY KEY (room, jid)
) STRICT;

-- A room's archive (XEP-0313 on the room's JID), as `archive` for users.
CREATE TABLE muc_archive (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    room     TEXT NOT NULL REFERENCES muc_rooms(room) ON DELETE CASCADE,
    id       TEXT NOT NULL,
    with_jid TEXT NOT NULL,
    stamp    INTEGER NOT NULL,
    stanza   TEXT NOT NULL,
    UNIQUE (room, id)
) STRICT;
CREATE INDEX muc_archive_by_room ON muc_archive(room, seq);
CREATE INDEX muc_archive_by_stamp ON muc_archive(stamp);
