-- Keyset pagination over users, computed up front: every %(batch)s-th user_id in key order
-- (one index-only scan). Consecutive bounds delimit the batches' user_id ranges.
SELECT user_id
FROM (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n FROM users) AS numbered
WHERE n %% %(batch)s = 0
ORDER BY user_id
