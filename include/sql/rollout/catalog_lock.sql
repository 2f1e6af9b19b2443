-- Inside the catalog transaction: no other writer changes the catalog until we commit.
-- Readers (ingestion building a new user's statuses) are not blocked.
LOCK TABLE drills IN EXCLUSIVE MODE
