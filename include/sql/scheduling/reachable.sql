-- Of the given (user, phone number) pairs, those that may still be sent a drill now: the phone
-- number is still one of the user's primary numbers and the user has not opted out.
SELECT r.user_id::text
FROM unnest(%(user_ids)s::uuid[], %(phones)s::text[]) AS r(user_id, phone_number)
JOIN users u ON u.user_id = r.user_id
JOIN phone_numbers p ON p.user_id = r.user_id AND p.phone_number = r.phone_number AND p.is_primary
WHERE u.profile ->> 'opted_out' IS DISTINCT FROM 'true'
