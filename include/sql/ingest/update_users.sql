-- Existing users get the seq, profile and last interaction of their last applied batch.
UPDATE users AS u
SET seq = v.seq, profile = v.profile, last_interacted_time = v.last_interacted_time
FROM unnest(%(user_ids)s::uuid[], %(seqs)s::numeric[], %(profiles)s::jsonb[], %(times)s::timestamptz[])
     AS v(user_id, seq, profile, last_interacted_time)
WHERE u.user_id = v.user_id
