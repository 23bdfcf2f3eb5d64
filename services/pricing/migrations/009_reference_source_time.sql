-- A policy or catalogue version's own time (the record's updated_at, the region's clock): a record
-- of the same version older than the one held is ignored, so that reloading an earlier file does
-- not undo a correction published since. NULL: the region sent none (arrival order, as before).
ALTER TABLE policies ADD COLUMN source_time timestamptz;
ALTER TABLE catalogue ADD COLUMN source_time timestamptz;
