-- R7: a long-term filing is valid until it is changed or the person's insurance status changes.
-- Filing follows refdata.persons for each person's insurance (region, fund, active) and ends the
-- long-term filings under it when it changes. The record that last ended any, and the events it
-- published, are kept: a batch handled again (its Kafka transaction lost after this commit)
-- publishes them again, so eligibility hears of every ended filing.
CREATE TABLE persons (
    psn_no            text PRIMARY KEY,
    insuplc_admdvs    text NOT NULL,
    insutype          text NOT NULL,
    active            boolean NOT NULL,
    source_time       timestamptz,          -- the region's time of the newest record held (updated_at)
    seen_partition    integer NOT NULL,     -- the refdata.persons record last applied
    seen_offset       bigint NOT NULL,
    ended_partition   integer,              -- the record that last ended filings, and their events
    ended_offset      bigint,
    ended_events      jsonb NOT NULL DEFAULT '[]',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
