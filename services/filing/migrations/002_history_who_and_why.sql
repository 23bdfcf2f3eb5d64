-- R21 and the history: who asked for each version and why (refusals, cancellations).
ALTER TABLE filing_history ADD COLUMN opter text NOT NULL DEFAULT '';
ALTER TABLE filing_history ADD COLUMN reason text NOT NULL DEFAULT '';
