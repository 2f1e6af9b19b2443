-- The users of the given phone numbers, locked for the rebuild's transaction: ingestion locks the
-- same rows (ingest/lock_users.sql) before it changes a tree, so a batch that arrives during the
-- rebuild is applied either before this lock (and then it is in the history read next) or after
-- the commit, on top of the rebuilt tree (its seq is above the rebuilt seq): never lost, never
-- applied twice. Times and seq as text, compared with the rebuilt values in Python.
SELECT p.phone_number, u.user_id::text, u.seq::text, u.profile, u.last_interacted_time,
       u.created_at >= c.complete_since AS history_complete
FROM unnest(%(phones)s::text[]) AS k(phone_number)
CROSS JOIN LATERAL (SELECT phone_number, user_id FROM phone_numbers WHERE phone_number = k.phone_number OFFSET 0) AS p
JOIN users u ON u.user_id = p.user_id
CROSS JOIN event_history_coverage c
ORDER BY u.user_id
FOR UPDATE OF u
