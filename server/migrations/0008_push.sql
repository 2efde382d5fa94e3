-- Push Notifications (XEP-0357): the app servers a user's clients
-- registered, with the publish-options form to send them (the client's
-- secret for its app server).
CREATE TABLE push_registrations (
    username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
    jid      TEXT NOT NULL,
    node     TEXT NOT NULL,
    options  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (username, jid, node)
) STRICT;
