-- Persons whose cache entry went stale: their subject changed, and the instance that changed it
-- could neither write the new entry to Redis nor delete the old one. Every instance deletes the
-- entries marked here once it reaches Redis, then the marks (services/eligibility/subjects.py), so
-- a restart or another instance's reach no longer leaves the old entry until its TTL.
CREATE TABLE cache_stale (
    psn_no     text PRIMARY KEY,
    marked_at  timestamptz NOT NULL
);
CREATE INDEX cache_stale_marked_at ON cache_stale (marked_at);
