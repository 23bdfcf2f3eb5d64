-- The balances clearing publishes, in clearing's 24 digits (its migration 013).
ALTER TABLE prepayments ALTER COLUMN balance TYPE numeric(24, 2);
