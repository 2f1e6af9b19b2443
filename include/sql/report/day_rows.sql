-- The stored figures of one report day (tests, task summary).
SELECT report_date, employer_id, drill_slug, users_enrolled, started_day, started_cumulative,
       completed_day, completed_cumulative, completion_rate, median_completion_seconds,
       inactive_7d, stalled_7d
FROM drill_progress_daily
WHERE report_date = %(report_date)s::date
ORDER BY employer_id, drill_slug
