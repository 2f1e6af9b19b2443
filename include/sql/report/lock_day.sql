-- Serialise runs of the same report day (a backfill overlapping a scheduled run or a retry):
-- held until the transaction ends.
SELECT pg_advisory_xact_lock(7316007, (%(report_date)s::date - DATE '2000-01-01'))
