-- First statement of a micro-batch's transaction, one round trip: the existing users of its phone
-- numbers, locked for the rest of the transaction so a user's tree is changed by one transaction
-- at a time ('u' rows), and the drill catalog ('c' rows). Their statuses and instances are read by
-- the NEXT statement (load_trees.sql), whose snapshot is taken after these locks are granted, so
-- it sees what a concurrent transaction on the same users committed while we waited.
WITH locked AS MATERIALIZED (
    SELECT p.phone_number, u.user_id, u.seq
    FROM phone_numbers p
    JOIN users u ON u.user_id = p.user_id
    WHERE p.phone_number = ANY (%(phones)s::text[])
    FOR UPDATE OF u
)
SELECT 'u' AS kind, phone_number AS name, user_id::text AS user_id, seq::text AS seq, NULL::int AS place
FROM locked
UNION ALL
SELECT 'c', drill_slug, NULL, NULL, place_in_sequence
FROM drills
