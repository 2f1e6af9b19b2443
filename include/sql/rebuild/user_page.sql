-- All users, a page at a time (keyset on the primary phone number): rebuild with all_users.
SELECT phone_number FROM phone_numbers
WHERE is_primary AND phone_number > %(after)s
ORDER BY phone_number
LIMIT %(limit)s
