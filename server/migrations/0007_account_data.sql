-- What standard clients keep on the server for their user (none of it
-- is message content).

-- Blocking (XEP-0191): JIDs (domain, bare or full) the user blocks.
CREATE TABLE blocklist (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    jid      TEXT NOT NULL,
    PRIMARY KEY (username, jid)
) STRICT;

-- Private XML storage (XEP-0049): one element per (namespace, name).
CREATE TABLE private_xml (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    ns       TEXT NOT NULL,
    name     TEXT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (username, ns, name)
) STRICT;

-- vCard-temp (XEP-0054): the user's vCard, published to everyone.
CREATE TABLE vcards (
    username TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    xml      TEXT NOT NULL
) STRICT;

-- Last Activity (XEP-0012): when the user's last session ended, and the
-- status it left with.
CREATE TABLE last_activity (
    username TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    status   TEXT NOT NULL DEFAULT ''
) STRICT;
