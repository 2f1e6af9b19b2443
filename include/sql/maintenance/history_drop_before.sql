-- The event history's months older than the retention (event_history_drop_before, migration 0013).
SELECT partition_name, month_end, row_estimate, bytes FROM event_history_drop_before(%(cutoff)s, %(dry_run)s)
