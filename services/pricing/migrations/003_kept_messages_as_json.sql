-- What a request passed on is kept to be replayed, never queried inside: store it as json (the text
-- as written, checked) compressed with lz4, not jsonb compressed with pglz. Measured on the bench
-- machine for ~3 KB documents: 206 µs of Postgres CPU per row before, 39 µs after
-- (docs/BENCHMARKS.md, 2026-11-23 "second CPU pass"). One statement, so the rewrite already
-- compresses the existing rows with lz4.
ALTER TABLE requests
    ALTER COLUMN emitted SET COMPRESSION lz4,
    ALTER COLUMN emitted TYPE json USING emitted::json;
