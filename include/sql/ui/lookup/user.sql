-- User lookup: the user owning a phone number (any of the given spellings), with the number
-- found. At most one row: phone_numbers.phone_number is unique, and a user's numbers are one user.
SELECT u.user_id::text AS user_id, u.seq::text AS seq, u.profile, u.last_interacted_time, u.created_at,
       p.phone_number
FROM phone_numbers AS p
JOIN users AS u ON u.user_id = p.user_id
WHERE p.phone_number = ANY (%(phone_numbers)s::text[])
ORDER BY p.phone_number
LIMIT 1
