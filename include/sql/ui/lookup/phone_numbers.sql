-- User lookup: every phone number of the user (the caller masks them).
SELECT phone_number, is_primary
FROM phone_numbers
WHERE user_id = %(user_id)s::uuid
ORDER BY is_primary DESC, phone_number
