-- A person's year counter sums the settlements of the year: two of the largest bills (each up to
-- 999,999,999,999.99) under a policy without an annual cap passed numeric(14, 2), and every later
-- settlement of that person's year was refused by the database. numeric(24, 2), as clearing's sums
-- (its migration 013): precision raised with the scale kept, so no row is rewritten.
ALTER TABLE accumulators ALTER COLUMN amount TYPE numeric(24, 2);
