-- First statement of a micro-batch's transaction, one round trip: the existing users of its phone
-- numbers, locked for the rest of the transaction so a user's tree is changed by one transaction
-- at a time ('u' rows), and the drill catalog with each drill's audience ('c' rows). Their statuses and instances are read by
-- the NEXT statement (load_trees.sql), whose snapshot is taken after these locks are granted, so
-- it sees what a concurrent transaction on the same users committed while we waited.
-- Driven by the given phone numbers: index lookups per phone number (LATERAL subqueries kept
-- apart by OFFSET 0, as in load_trees.sql), whatever the table statistics say.
WITH locked AS MATERIALIZED (
    SELECT p.phone_number, u.user_id, u.seq
    FROM unnest(%(phones)b::text[]) AS k(phone_number)
    CROSS JOIN LATERAL (SELECT phone_number, user_id FROM phone_numbers
                        WHERE phone_number = k.phone_number OFFSET 0) AS p
    JOIN users u ON u.user_id = p.user_id
    FOR UPDATE OF u
)
SELECT 'u' AS kind, phone_number AS name, user_id::text AS user_id, seq::text AS seq, NULL::int AS place,
       NULL::text[] AS employer_ids
FROM locked
UNION ALL
SELECT 'c', drill_slug, NULL, NULL, place_in_sequence, employer_ids
FROM drills
