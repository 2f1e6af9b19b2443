-- Pin the due-users plan for the current transaction only (is_local = true): a stream of
-- index-only scans in user_id order (migration 0004), merge-joined and group-aggregated.
-- Left to itself the planner underestimates the number of users and picks hash aggregates and
-- hash joins that spill to disk and run 3-4 times slower at 1,000,000 users; parallel workers
-- would each redo the whole aggregate. JIT compilation costs more than it saves here. The plan
-- task reads the rows through a cursor, a chunk at a time, but reads them all: planned for the
-- whole result (cursor_tuple_fraction 1), not for its first tenth.
SELECT set_config('enable_hashagg', 'off', true),
       set_config('enable_hashjoin', 'off', true),
       set_config('max_parallel_workers_per_gather', '0', true),
       set_config('jit', 'off', true),
       set_config('cursor_tuple_fraction', '1', true)
