-- The alert a move triggered, kept with it: a batch replayed after a crash publishes it again.
ALTER TABLE prepayment_moves ADD COLUMN alert jsonb;
