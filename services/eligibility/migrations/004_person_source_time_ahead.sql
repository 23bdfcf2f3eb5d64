-- Person records stored from migration 002 until the feed refused times ahead of the clock could
-- hold a time far ahead (a 2999 date; China time written with Z is 8 hours ahead): every later
-- record of that person was then ignored as older. A time held more than 15 minutes ahead of now
-- is dropped here, so the person's next record applies (arrival order, as a record without one).
UPDATE persons SET source_time = NULL WHERE source_time > now() + INTERVAL '15 minutes';
