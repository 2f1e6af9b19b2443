-- Sessions of this database still inside a transaction that began before %(since)s (they may
-- have read the catalog before the new drill was committed). Sessions of other roles are only
-- visible with pg_read_all_stats; invisible ones count as finished.
SELECT count(*)
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND xact_start < %(since)s
