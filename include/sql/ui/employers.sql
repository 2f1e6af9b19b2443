-- Drill Progress page: the employers in the report, with the span of days reported.
SELECT employer_id,
       min(report_date) AS first_report_date,
       max(report_date) AS latest_report_date
FROM drill_progress_daily
GROUP BY employer_id
ORDER BY employer_id = 'unknown', length(employer_id), employer_id
