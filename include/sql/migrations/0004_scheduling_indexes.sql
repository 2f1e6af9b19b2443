-- Indexes for the daily next-drill scheduling query (include/sql/scheduling/due_users.sql).
--
-- The due-users query reads every user's progress once. With these covering indexes the plan is
-- three index-only scans in user_id order, merge-joined and aggregated as a stream: no hash
-- tables, no sorts, no random heap reads (see bench/bench_scheduling.py for the plan and timing).

-- Every drill status of a user in catalog order, with what the next-drill rule needs.
-- Also serves include/sql/common/next_drill.sql (next drill of given users) as an index-only scan.
CREATE INDEX drill_statuses_progress_idx
    ON drill_statuses (user_id, place_in_sequence) INCLUDE (drill_slug, started_time, completed_time);

-- A user's primary phone number(s).
CREATE INDEX phone_numbers_primary_idx
    ON phone_numbers (user_id) INCLUDE (phone_number) WHERE is_primary;

-- Users who have not opted out, with their last interaction (the query's predicate must match
-- this one word for word for the planner to use the index).
CREATE INDEX users_not_opted_out_idx
    ON users (user_id) INCLUDE (last_interacted_time) WHERE profile ->> 'opted_out' IS DISTINCT FROM 'true';
