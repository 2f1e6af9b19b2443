-- One rollout at a time (session-level advisory lock, released by unlock.sql or disconnect).
SELECT pg_try_advisory_lock(%(key)s)
