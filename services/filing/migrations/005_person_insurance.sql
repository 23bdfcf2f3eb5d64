-- R7: a long-term filing is valid until it is changed or the person's insurance status changes.
-- Filing follows refdata.persons for each person's insurance (region, fund, active) and ends the
-- long-term filings made under it before it changed.
CREATE TABLE persons (
    psn_no          text PRIMARY KEY,
    insuplc_admdvs  text NOT NULL,
    insutype        text NOT NULL,
    active          boolean NOT NULL,
    source_time     timestamptz,          -- the region's time of the newest record held (updated_at)
    since           timestamptz NOT NULL, -- when the insurance held took effect, as far as filing knows
    seen_partition  integer NOT NULL,     -- the refdata.persons record last applied: a batch handled
    seen_offset     bigint NOT NULL,      -- again is known by it, and publishes again what it ended
    seen_at         timestamptz NOT NULL, -- (that record's Kafka timestamp)
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- When the version of a filing was asked for (add, change): the request's publish time. Filings
-- saved before have none; their updated_at stands in.
ALTER TABLE filings ADD COLUMN made_at timestamptz;
-- What a persons record ended, found again by the record (reqid refdata.persons/<partition>/<offset>@<ms>).
CREATE INDEX filing_history_ended ON filing_history (reqid) WHERE action = 'ended';
