-- A month is closed (no settlement lands in it any more) in a short transaction of its own, and
-- totalled afterwards: totalled_at says its statements are written. A month closed but not yet
-- totalled (a run stopped in between) is finished by running it again. Months cleared before
-- were closed and totalled in one transaction.
ALTER TABLE periods ADD COLUMN totalled_at timestamptz;
UPDATE periods SET totalled_at = coalesce(closed_at, now()) WHERE state = 'closed';
-- A month a development build left 'closing' (closed, its totals not written): closed, to be run again.
UPDATE periods SET state = 'closed' WHERE state = 'closing';
