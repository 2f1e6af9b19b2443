-- The event history of the given phone numbers, in the order ingestion applied it.
SELECT h.raw_data
FROM unnest(%(phones)s::text[]) AS k(phone_number)
CROSS JOIN LATERAL (SELECT * FROM event_history WHERE phone_number = k.phone_number OFFSET 0) AS h
ORDER BY h.id
