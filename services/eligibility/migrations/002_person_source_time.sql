-- The region's time of each person record (PersonRecord.updated_at), so that a record older than the
-- one held is ignored: a region that reloads yesterday's file must not bring back yesterday's
-- balance or status. NULL (rows from before, records without updated_at): the next record applies.
ALTER TABLE persons ADD COLUMN source_time timestamptz;
