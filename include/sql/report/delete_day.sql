-- First half of replacing one report day; runs in the same transaction as insert_day.sql.
DELETE FROM drill_progress_daily WHERE report_date = %(report_date)s::date
