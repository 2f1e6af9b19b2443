-- Pipeline health: how many records were set aside in the last `hours` hours, per reason.
SELECT reason, count(*) AS records, max(rejected_at) AS last_rejected_at
FROM rejected_records
WHERE rejected_at >= now() - make_interval(hours => %(hours)s::int)
GROUP BY reason
ORDER BY records DESC, reason
LIMIT 200
