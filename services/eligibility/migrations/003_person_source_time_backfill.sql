-- Persons stored before migration 002 kept their region's updated_at only inside the record (free
-- text then), so their source_time was NULL and the first reload of an earlier file after 002
-- applied in full. Their time is read here where it is an ISO 8601 date or time (without a zone,
-- China time, UTC+08:00, as PersonRecord reads it); anything else, or a time more than 15 minutes
-- ahead of now (it would hold the person for good), stays NULL: arrival order, as before.
CREATE FUNCTION pg_temp.region_time(s text) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    s := btrim(s);
    IF s !~ '^\d{4}-?\d{2}-?\d{2}' THEN
        RETURN NULL;  -- 'now', 'epoch', 'infinity' and free text are not a region's time
    ELSIF s ~ '[T ]\d{2}(:?\d{2})?(:?\d{2}(\.\d+)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)$' THEN
        t := s::timestamptz;
    ELSE
        t := s::timestamp AT TIME ZONE INTERVAL '+08:00';
    END IF;
    RETURN CASE WHEN t <= now() + INTERVAL '15 minutes' THEN t END;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
UPDATE persons SET source_time = pg_temp.region_time(record->>'updated_at')
WHERE source_time IS NULL AND coalesce(record->>'updated_at', '') <> '';
