-- What filing answered for a filing.requests record and kept nowhere else (a refusal), by the
-- record's place in Kafka. A batch handled again after its Postgres commit (its Kafka transaction
-- lost) answers those records as the first attempt did. Decided again, they met a state that held
-- the batch's later requests: an add refused as the person's second long-term filing was accepted
-- once the cancellation behind it had been applied (a review, session 37). A resend (the same
-- reqid at a later place) is decided anew; a row is used for the record of its reqid and payload
-- only. Rows go after 14 days: past a topic's retention (7 days by default, a segment kept until
-- its newest record is that old), no record is left to handle again.
CREATE TABLE decided (
    topic       text NOT NULL,
    part        integer NOT NULL,
    off         bigint NOT NULL,
    reqid       text NOT NULL,
    request_hash text NOT NULL,
    emitted     jsonb NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, part, off)
);
CREATE INDEX decided_decided_at ON decided (decided_at);
