-- Who each offline message is from, and whether the recipient had them in
-- the roster, so that strangers share part of the queue only
-- (limits.max_offline_from_strangers) and no sender fills it
-- (limits.max_offline_per_sender). Rows stored before are from nobody.
ALTER TABLE offline_messages ADD COLUMN sender TEXT NOT NULL DEFAULT '';
ALTER TABLE offline_messages ADD COLUMN from_contact INTEGER NOT NULL DEFAULT 1;
CREATE INDEX offline_messages_by_sender ON offline_messages(username, sender);
