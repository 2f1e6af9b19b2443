-- At send time, for each planned send of a sub-batch (user, phone number, idempotency key, when
-- the plan was made): whether its key is already recorded as sent (a retry, a re-run, another run
-- the same day), whether the user interacted after the plan was made (active again), and whether
-- the number may still be sent a drill (still a primary number of the user, who has not opted
-- out). The next-drill check is scheduling/next_drill.sql's, run beside it.
SELECT r.idempotency_key,
       EXISTS (SELECT 1 FROM sent_start_drills s WHERE s.idempotency_key = r.idempotency_key) AS already_sent,
       coalesce(u.last_interacted_time > r.planned_at, false) AS active_again,
       (u.user_id IS NOT NULL
        AND u.profile ->> 'opted_out' IS DISTINCT FROM 'true'
        AND EXISTS (SELECT 1 FROM phone_numbers p
                    WHERE p.user_id = r.user_id AND p.phone_number = r.phone_number AND p.is_primary)) AS reachable
FROM unnest(%(user_ids)s::uuid[], %(phones)s::text[], %(keys)s::text[], %(planned_at)s::timestamptz[])
     AS r(user_id, phone_number, idempotency_key, planned_at)
LEFT JOIN users u ON u.user_id = r.user_id
