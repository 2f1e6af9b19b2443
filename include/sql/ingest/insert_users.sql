-- Users seen for the first time in this micro-batch (a plain INSERT: a concurrent creator of the
-- same user makes this fail, and the retry finds the user).
INSERT INTO users (user_id, seq, profile, last_interacted_time)
SELECT v.user_id, v.seq, v.profile, v.last_interacted_time
FROM unnest(%(user_ids)s::uuid[], %(seqs)s::numeric[], %(profiles)s::jsonb[], %(times)s::timestamptz[])
     AS v(user_id, seq, profile, last_interacted_time)
