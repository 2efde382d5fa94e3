-- A conversation this device left (`tern group leave`): it no longer
-- follows the log, even before a member commits its removal. Joining the
-- group again replaces the row, which clears the mark.
ALTER TABLE conversations ADD COLUMN left_at TEXT;
