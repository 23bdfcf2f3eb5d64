-- An undoing (2208/2305/2601) of a settlement the ledger lacks: its settlement was dead-lettered
-- here, while pricing recorded it and then its undoing. Kept until that settlement is sent again
-- (a resend under its msgid, or its dead letter re-published), which applies it as the row is
-- entered: without it, the settlement entered the ledger as settled and the insured region paid
-- for a cancelled bill. No foreign key: the settlement is not in the ledger yet.
CREATE TABLE undo_waiting (
    msgid         text PRIMARY KEY,
    request_hash  text NOT NULL,
    setl_id       text NOT NULL,
    infno         text NOT NULL,
    month         text NOT NULL,
    answer        json NOT NULL,
    -- The order they came in, within a batch too (now() is the transaction's start).
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX undo_waiting_setl_id ON undo_waiting (setl_id);
