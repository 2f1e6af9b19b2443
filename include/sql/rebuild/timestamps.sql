-- Event times (RFC 3339 text, as the fold keeps them) read as PostgreSQL stores them, so that the
-- rebuilt tree compares with the stored one instant by instant.
SELECT t, t::timestamptz FROM unnest(%(texts)s::text[]) AS t
