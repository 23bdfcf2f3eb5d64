-- Pricing's own schema: policies and catalogues by version, accumulators, priced requests.
CREATE SEQUENCE ref_rev;

CREATE TABLE policies (
    insuplc_admdvs  text NOT NULL,
    insutype        text NOT NULL,
    begndate        date NOT NULL,
    version         text NOT NULL,
    record          jsonb NOT NULL,
    rev             bigint NOT NULL,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (insuplc_admdvs, insutype, begndate)
);

CREATE TABLE catalogue (
    mdtrtarea_admvs text NOT NULL,
    hilist_code     text NOT NULL,
    begndate        date NOT NULL,
    enddate         date,
    record          jsonb NOT NULL,
    rev             bigint NOT NULL,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mdtrtarea_admvs, hilist_code, begndate)
);

-- Per person and year (year 0: counters that do not reset yearly, e.g. account draws by balance version).
CREATE TABLE accumulators (
    psn_no   text NOT NULL,
    year     integer NOT NULL,
    counter  text NOT NULL,
    amount   numeric(14, 2) NOT NULL,
    PRIMARY KEY (psn_no, year, counter)
);

-- Every settlement, cancellation and reversal pricing has processed, by the request's msgid:
-- the idempotency record. ``emitted`` is what it passed on, replayed for a repeated request.
CREATE TABLE requests (
    msgid         text PRIMARY KEY,
    request_hash  text NOT NULL,
    infno         text NOT NULL,
    setl_id       text,
    emitted       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settlements (
    setl_id      text PRIMARY KEY,
    msgid        text NOT NULL UNIQUE,
    psn_no       text NOT NULL,
    year         integer NOT NULL,
    usage_delta  jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'settled',
    undone_by    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    undone_at    timestamptz
);
CREATE INDEX settlements_psn_no ON settlements (psn_no);
