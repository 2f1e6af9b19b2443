-- Daily progress report (DAG drill_progress_report): one row per (report day, employer, drill).
-- A run replaces its whole day (DELETE + INSERT in one transaction), so re-runs and backfills
-- are idempotent. Figures are derived only from the aggregate's timestamps relative to the
-- day's UTC boundaries; computed_at is bookkeeping, not a figure.
CREATE TABLE drill_progress_daily (
    report_date               date        NOT NULL,
    employer_id               text        NOT NULL,  -- profile.account_info.employer_id, 'unknown' if absent
    drill_slug                text        NOT NULL,
    users_enrolled            integer     NOT NULL,
    started_day               integer     NOT NULL,
    started_cumulative        integer     NOT NULL,
    completed_day             integer     NOT NULL,
    completed_cumulative      integer     NOT NULL,
    completion_rate           numeric(5,4),          -- NULL when nobody had started
    median_completion_seconds double precision,      -- NULL when nobody had completed
    inactive_7d               integer     NOT NULL,
    stalled_7d                integer     NOT NULL,
    computed_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_date, employer_id, drill_slug)
);
-- The UI reads one employer's history, newest first.
CREATE INDEX drill_progress_daily_employer_idx ON drill_progress_daily (employer_id, report_date);
