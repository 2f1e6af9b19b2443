-- One send task of a run at a time may catch up a backlog (drill_progress.scheduling.sending):
-- a session-level advisory lock keyed by the run's window, taken without waiting (the task polls),
-- released by catch_up_unlock.sql or when the session ends.
SELECT pg_try_advisory_lock(%(key)s)
