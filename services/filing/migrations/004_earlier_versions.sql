-- A filing keeps the versions in force before it (newest first, each with the days it was in
-- force): a stay admitted under one is still covered after a change or a cancellation, and a
-- change asked for a later day leaves the old version in force until then.
ALTER TABLE filings ADD COLUMN earlier jsonb NOT NULL DEFAULT '[]';
