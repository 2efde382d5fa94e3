-- Archive rows are written in stamp order, so expiry finds its cut-off
-- along the rowid (seq) instead of keeping a stamp index up to date on
-- every write.
DROP INDEX archive_by_stamp;
DROP INDEX muc_archive_by_stamp;
