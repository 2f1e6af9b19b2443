-- The primary phone number of each new user. A phone number already taken is an error (the
-- micro-batch is retried and bisected), never a silent second owner.
INSERT INTO phone_numbers (id, phone_number, user_id, is_primary)
SELECT v.id, v.phone_number, v.user_id, true
FROM unnest(%(ids)s::uuid[], %(phones)s::text[], %(user_ids)s::uuid[]) AS v(id, phone_number, user_id)
