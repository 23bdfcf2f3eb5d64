-- Filing's own schema: filings, their full history, and the requests already answered.
CREATE TABLE filings (
    filing_id       text PRIMARY KEY,
    psn_no          text NOT NULL,
    insutype        text NOT NULL,
    insuplc_admdvs  text NOT NULL,
    filed_admdvs    text NOT NULL,
    category        text NOT NULL,
    begndate        date NOT NULL,
    enddate         date,
    status          text NOT NULL,
    version         integer NOT NULL,
    filed_on        date NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX filings_psn_no ON filings (psn_no);

CREATE TABLE filing_history (
    filing_id   text NOT NULL,
    version     integer NOT NULL,
    action      text NOT NULL,
    reqid       text NOT NULL,
    decl_source text NOT NULL,
    record      jsonb NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (filing_id, version)
);

CREATE TABLE requests (
    reqid    text PRIMARY KEY,
    result   jsonb NOT NULL,
    emitted  jsonb NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
