-- What pricing answered for a settlement.eligible record and kept nowhere else (a refusal it
-- decided, a pre-settlement's quote), by the record's place in Kafka. A batch handled again after
-- its Postgres commit (its Kafka transaction lost: a rebalance, a broker away, a crash between the
-- two commits) answers those records as the first attempt did. Decided again, they met a state that
-- already held the batch's own later settlements and cancellations: a settlement refused
-- PREPAYMENT_EXHAUSTED or ALREADY_SETTLED could settle on the retry (a review, session 37).
-- A resend (the same msgid at a later place) is decided anew. A row is used for the record of its
-- msgid and payload only (a topic deleted and made again numbers its records from 0 anew). Rows go
-- after 14 days: past a topic's retention (7 days by default, a segment kept until its newest
-- record is that old), no record is left to handle again.
CREATE TABLE decided (
    topic       text NOT NULL,
    part        integer NOT NULL,
    off         bigint NOT NULL,
    msgid       text NOT NULL,
    request_hash text NOT NULL,
    answer      text NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, part, off)
);
CREATE INDEX decided_decided_at ON decided (decided_at);
