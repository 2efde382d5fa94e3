-- A user's groups (asked by a new device that joins them).
CREATE INDEX hub_members_by_jid ON hub_members(jid, group_id);
