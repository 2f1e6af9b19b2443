-- The existing users of a micro-batch's phone numbers, locked for the rest of the transaction
-- so a user's tree is changed by one transaction at a time.
SELECT p.phone_number, u.user_id::text, u.seq::text
FROM phone_numbers p
JOIN users u ON u.user_id = p.user_id
WHERE p.phone_number = ANY (%(phones)s::text[])
FOR UPDATE OF u
