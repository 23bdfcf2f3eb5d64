-- Eligibility's own schema: mirrors of persons, filings, facilities and region status.
CREATE SEQUENCE change_seq;

CREATE TABLE persons (
    psn_no      text PRIMARY KEY,
    record      jsonb NOT NULL,
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE filings (
    filing_id       text PRIMARY KEY,
    psn_no          text NOT NULL,
    record          jsonb NOT NULL,
    filing_version  integer NOT NULL,
    version         bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX filings_psn_no ON filings (psn_no);

CREATE TABLE facilities (
    fixmedins_code text PRIMARY KEY,
    record         jsonb NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outages (
    status_id   text PRIMARY KEY,
    admdvs      text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL DEFAULT '',
    cancelled   boolean NOT NULL DEFAULT false
);
CREATE INDEX outages_admdvs ON outages (admdvs, ends_at);
