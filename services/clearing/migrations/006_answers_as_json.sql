-- The answers the ledger keeps are replayed as they were sent, never queried inside: json (the text
-- as written, checked) compressed with lz4 instead of jsonb compressed with pglz, about a fifth of
-- the Postgres CPU per row (docs/BENCHMARKS.md, 2026-11-23 "second CPU pass"). One statement per
-- table, so the rewrite already compresses the existing rows with lz4.
ALTER TABLE ledger
    ALTER COLUMN answer SET COMPRESSION lz4,
    ALTER COLUMN answer TYPE json USING answer::json,
    ALTER COLUMN undone_answer SET COMPRESSION lz4,
    ALTER COLUMN undone_answer TYPE json USING undone_answer::json;
ALTER TABLE undo_requests
    ALTER COLUMN answer SET COMPRESSION lz4,
    ALTER COLUMN answer TYPE json USING answer::json;
-- No query reads the ledger by (facility, settled_at): the reconciliation reads (facility, setl_date).
DROP INDEX IF EXISTS ledger_facility_day;
