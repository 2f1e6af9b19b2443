-- Place uniqueness (catalog and per user) is checked at commit, so drills can be shifted by one
-- in a single statement without transient collisions.
SET CONSTRAINTS drills_place_unique, drill_statuses_user_place_unique DEFERRED
