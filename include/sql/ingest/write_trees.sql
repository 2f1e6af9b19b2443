-- Everything a micro-batch writes, in ONE statement (one round trip): new users, changed users,
-- the new users' primary phone numbers, new and changed drill statuses, new and changed drill
-- instances, the micro-batch's set-aside bad records, its records for the event history, its
-- checkpoint and the outbox rows of the commands it caused. Returns the outbox keys that are new.
-- Each part reads its own parameter arrays; an empty array writes nothing. Every part affects
-- different rows, so the parts are independent; foreign keys to users inserted by a sibling part
-- are checked at the end of the statement and see them. Any error fails the whole statement (and
-- the transaction), exactly like the separate statements did.
-- The raw records (bytea[]) travel in binary (the b placeholders): as text every byte was hex-escaped by
-- the driver and parsed back by the server, which cost the write as much as everything else.
WITH new_users AS (
    -- users seen for the first time (a plain INSERT: a concurrent creator of the same user makes
    -- this fail, and the retry finds the user)
    INSERT INTO users (user_id, seq, profile, last_interacted_time)
    SELECT v.user_id, v.seq, v.profile, v.last_interacted_time
    FROM unnest(%(nu_ids)b::uuid[], %(nu_seqs)b::numeric[], %(nu_profiles)b::jsonb[], %(nu_times)b::timestamptz[])
         AS v(user_id, seq, profile, last_interacted_time)
), changed_users AS (
    -- existing users get the seq, profile and last interaction of their last applied batch
    UPDATE users AS u
    SET seq = v.seq, profile = v.profile, last_interacted_time = v.last_interacted_time
    FROM unnest(%(cu_ids)b::uuid[], %(cu_seqs)b::numeric[], %(cu_profiles)b::jsonb[], %(cu_times)b::timestamptz[])
         AS v(user_id, seq, profile, last_interacted_time)
    WHERE u.user_id = v.user_id
), new_phone_numbers AS (
    -- the primary phone number of each new user; a phone number already taken is an error (the
    -- micro-batch is retried and bisected), never a silent second owner
    INSERT INTO phone_numbers (id, phone_number, user_id, is_primary)
    SELECT v.id, v.phone_number, v.user_id, true
    FROM unnest(%(pn_ids)b::uuid[], %(pn_phones)b::text[], %(pn_user_ids)b::uuid[]) AS v(id, phone_number, user_id)
), new_statuses AS (
    -- one status row per catalog drill for each new user (ids: drill_progress.ids.status_id)
    INSERT INTO drill_statuses (id, user_id, drill_instance_id, drill_slug, place_in_sequence, started_time,
                                completed_time)
    SELECT *
    FROM unnest(%(ns_ids)b::uuid[], %(ns_user_ids)b::uuid[], %(ns_instance_ids)b::uuid[], %(ns_slugs)b::text[],
                %(ns_places)b::int[], %(ns_started)b::timestamptz[], %(ns_completed)b::timestamptz[])
), changed_statuses AS (
    UPDATE drill_statuses AS s
    SET drill_instance_id = v.drill_instance_id, started_time = v.started_time, completed_time = v.completed_time
    FROM unnest(%(cs_ids)b::uuid[], %(cs_instance_ids)b::uuid[], %(cs_started)b::timestamptz[],
                %(cs_completed)b::timestamptz[])
         AS v(id, drill_instance_id, started_time, completed_time)
    WHERE s.id = v.id
), new_instances AS (
    -- drill instances started in this micro-batch; an id that belongs to another user is an error
    -- (the micro-batch is bisected and that record set aside), never a takeover
    INSERT INTO drill_instances (drill_instance_id, user_id, phone_number, drill_slug, current_prompt_slug,
                                 current_prompt_start_time, current_prompt_last_response_time,
                                 completion_time, is_valid)
    SELECT *
    FROM unnest(%(ni_ids)b::uuid[], %(ni_user_ids)b::uuid[], %(ni_phones)b::text[], %(ni_slugs)b::text[],
                %(ni_prompts)b::text[], %(ni_prompt_starts)b::timestamptz[], %(ni_responses)b::timestamptz[],
                %(ni_completions)b::timestamptz[], %(ni_valid)b::boolean[])
), changed_instances AS (
    UPDATE drill_instances AS d
    SET drill_slug = v.drill_slug,
        current_prompt_slug = v.current_prompt_slug,
        current_prompt_start_time = v.current_prompt_start_time,
        current_prompt_last_response_time = v.current_prompt_last_response_time,
        completion_time = v.completion_time,
        is_valid = v.is_valid
    FROM unnest(%(ci_ids)b::uuid[], %(ci_user_ids)b::uuid[], %(ci_slugs)b::text[], %(ci_prompts)b::text[],
                %(ci_prompt_starts)b::timestamptz[], %(ci_responses)b::timestamptz[],
                %(ci_completions)b::timestamptz[], %(ci_valid)b::boolean[])
         AS v(drill_instance_id, user_id, drill_slug, current_prompt_slug, current_prompt_start_time,
              current_prompt_last_response_time, completion_time, is_valid)
    WHERE d.drill_instance_id = v.drill_instance_id AND d.user_id = v.user_id
), rejected AS (
    -- bad input set aside with its reason; a record already set aside (re-delivery, replay) is
    -- never set aside twice
    INSERT INTO rejected_records (stream, shard_id, sequence_number, partition_key, raw_data, reason, attempts)
    SELECT %(stream)s::text, %(shard_id)s::text, v.sequence_number, v.partition_key, v.raw_data, v.reason, v.attempts
    FROM unnest(%(rj_sequence_numbers)b::text[], %(rj_partition_keys)b::text[], %(rj_raw)b::bytea[],
                %(rj_reasons)b::text[], %(rj_attempts)b::int[])
         AS v(sequence_number, partition_key, raw_data, reason, attempts)
    ON CONFLICT (stream, shard_id, sequence_number) DO NOTHING
), history AS (
    -- every record the micro-batch read, applied or not, in stream order (event_history.id): the
    -- history a rebuild folds again; in this statement, so committed effects always have theirs
    INSERT INTO event_history (phone_number, stream, shard_id, sequence_number, arrival, raw_data)
    SELECT v.phone_number, %(stream)s::text, %(shard_id)s::text, v.sequence_number, v.arrival, v.raw_data
    FROM unnest(%(hi_phones)b::text[], %(hi_sequence_numbers)b::text[], %(hi_arrivals)b::timestamptz[],
                %(hi_raw)b::bytea[])
         WITH ORDINALITY AS v(phone_number, sequence_number, arrival, raw_data, n)
    ORDER BY v.n
), checkpoint AS (
    -- the position the micro-batch covers and when its last record reached the stream, never
    -- moving backwards (a replay from an earlier timestamp re-reads behind the checkpoint without
    -- rewinding it); no row when %(sequence_number)s is NULL (write_users() outside a micro-batch)
    INSERT INTO stream_checkpoints AS c (stream, shard_id, sequence_number, last_arrival_at, parent_shard_ids,
                                         records_applied, behind_ms, updated_at)
    SELECT %(stream)s::text, %(shard_id)s::text, %(sequence_number)s::text, %(arrival)s::timestamptz,
           %(parents)b::text[], %(records)s::bigint, %(behind_ms)s::bigint, now()
    WHERE %(sequence_number)s::text IS NOT NULL
    ON CONFLICT (stream, shard_id) DO UPDATE
    SET sequence_number = CASE
            WHEN c.sequence_number IS NULL
              OR EXCLUDED.sequence_number::numeric > c.sequence_number::numeric THEN EXCLUDED.sequence_number
            ELSE c.sequence_number END,
        last_arrival_at = CASE
            WHEN c.sequence_number IS NULL
              OR EXCLUDED.sequence_number::numeric > c.sequence_number::numeric THEN EXCLUDED.last_arrival_at
            ELSE c.last_arrival_at END,
        parent_shard_ids = EXCLUDED.parent_shard_ids,
        records_applied = c.records_applied + EXCLUDED.records_applied,
        behind_ms = EXCLUDED.behind_ms,
        updated_at = now()
), outbox AS (
    -- commands caused by the micro-batch, the statement of outbox/enqueue.sql: a key already in
    -- the outbox (a re-delivered cause, a retry) writes nothing
    INSERT INTO command_outbox (idempotency_key, command_type, partition_key, payload, source)
    SELECT k, t, p, d::jsonb, %(source)s::text
    FROM unnest(%(ob_keys)b::text[], %(ob_types)b::text[], %(ob_phones)b::text[], %(ob_payloads)b::text[])
         AS c(k, t, p, d)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
)
SELECT idempotency_key FROM outbox
