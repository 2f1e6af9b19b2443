-- The event history's monthly partitions, from this month on (event_history_ensure_partitions,
-- migration 0013): the number created now.
SELECT event_history_ensure_partitions(current_date, %(months)s)
