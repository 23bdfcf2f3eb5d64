-- Who confirmed each side of a statement, when, and by which request (the confirm request's opter
-- and reqid): the first confirmation of the side. NULL for a side confirmed before this migration,
-- and a confirmation that named no operator has its time and reqid only.
ALTER TABLE statements
    ADD COLUMN confirmed_insured_by text,
    ADD COLUMN confirmed_insured_at timestamptz,
    ADD COLUMN confirmed_insured_reqid text,
    ADD COLUMN confirmed_treating_by text,
    ADD COLUMN confirmed_treating_at timestamptz,
    ADD COLUMN confirmed_treating_reqid text;
