-- A conversation this device left (`tern group leave`): it no longer
-- follows the log, even before a member commits its removal. Joining the
-- group again replaces the row, which clears the mark.
ALTER TABLE conversations ADD COLUMN left_at TEXT;

-- Messages by envelope id (`tern file get ID`, references).
CREATE INDEX messages_by_envelope ON messages(envelope_id);
