-- Where each stage stood once its batch committed: the batch's end on each partition (its last
-- offset + 1), beside where it began (applied_below). NULL until a batch of this version records
-- it, and for feeds. Clearing's close of a month reads its settlement stage's: a month's cut
-- (clearing.period_cuts), by which a settlement handled again after a restore lands as it did.
ALTER TABLE stage_progress ADD COLUMN IF NOT EXISTS reached bigint;
