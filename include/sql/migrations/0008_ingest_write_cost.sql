-- Fewer indexes to maintain on every ingested change (issue 3), the same plans for every reader.
--
-- Every index of a table is written on each insert and on each update that is not HOT; ingestion
-- inserts and updates drill_statuses and users rows all day.

-- No query reads drill statuses by instance (ingestion loads a user's statuses by user_id; an
-- instance's status is found in the user's tree in memory).
DROP INDEX drill_statuses_drill_instance_id_idx;

-- No query reads users by last_interacted_time alone: the due-users query reads it from
-- users_not_opted_out_idx (migration 0004) and the report reads every user.
DROP INDEX users_last_interacted_time_idx;

-- The per-user place uniqueness index and migration 0004's covering index had the same key,
-- (user_id, place_in_sequence): one index now does both jobs. The constraint keeps its name and
-- stays DEFERRABLE (drill_rollout defers it to shift drills by one place in one statement);
-- its INCLUDE columns keep the due-users query and common/next_drill.sql index-only.
ALTER TABLE drill_statuses DROP CONSTRAINT drill_statuses_user_place_unique;
ALTER TABLE drill_statuses ADD CONSTRAINT drill_statuses_user_place_unique
    UNIQUE (user_id, place_in_sequence) INCLUDE (drill_slug, started_time, completed_time)
    DEFERRABLE INITIALLY IMMEDIATE;
DROP INDEX drill_statuses_progress_idx;

-- A foreign key is checked by a lookup per inserted row: 3 per new user for this one. Every
-- writer of drill_statuses takes the slug from the catalog read in the same transaction
-- (ingestion's new users, drill_rollout), and no code deletes or renames a catalog drill.
ALTER TABLE drill_statuses DROP CONSTRAINT drill_statuses_drill_slug_fkey;
