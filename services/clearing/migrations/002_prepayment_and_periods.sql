-- R3: prepayment accounts, clearing periods and statements; the ledger learns its periods.
ALTER TABLE ledger ADD COLUMN setl_date date;
ALTER TABLE ledger ADD COLUMN clr_period text;
ALTER TABLE ledger ADD COLUMN undo_period text;
UPDATE ledger SET setl_date = (answer -> 'output' -> 'setlinfo' ->> 'setl_time')::date, clr_period = setlym;
ALTER TABLE ledger ALTER COLUMN setl_date SET NOT NULL;
ALTER TABLE ledger ALTER COLUMN clr_period SET NOT NULL;
CREATE INDEX ledger_clr_period ON ledger (clr_period, insuplc_admdvs, mdtrtarea_admvs);
CREATE INDEX ledger_undo_period ON ledger (undo_period) WHERE undo_period IS NOT NULL;
CREATE INDEX ledger_facility_date ON ledger (fixmedins_code, setl_date);

-- A period is open until it is cleared; then what arrives for it lands in the next open one.
CREATE TABLE periods (
    setlym     text PRIMARY KEY,
    state      text NOT NULL,
    closed_at  timestamptz
);

-- One account per insured region and treating region pair (docs/clearing.md says why).
CREATE TABLE prepayment_accounts (
    insuplc_admdvs   text NOT NULL,
    mdtrtarea_admvs  text NOT NULL,
    funded           numeric(16, 2) NOT NULL DEFAULT 0,
    drawn            numeric(16, 2) NOT NULL DEFAULT 0,
    given_back       numeric(16, 2) NOT NULL DEFAULT 0,
    cleared          numeric(16, 2) NOT NULL DEFAULT 0,
    warn_share       numeric(5, 4) NOT NULL DEFAULT 0.20,
    alerted          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (insuplc_admdvs, mdtrtarea_admvs)
);

-- Every change of an account, once per (kind, ref): fund (reqid), draw and give_back (setl_id),
-- clearing (statement_id).
CREATE TABLE prepayment_moves (
    id               bigserial PRIMARY KEY,
    insuplc_admdvs   text NOT NULL,
    mdtrtarea_admvs  text NOT NULL,
    kind             text NOT NULL,
    amount           numeric(16, 2) NOT NULL,
    ref              text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);

CREATE TABLE statements (
    statement_id        text PRIMARY KEY,
    setlym              text NOT NULL,
    insuplc_admdvs      text NOT NULL,
    mdtrtarea_admvs     text NOT NULL,
    settlements         integer NOT NULL,
    undone              integer NOT NULL,
    medfee_sumamt       numeric(16, 2) NOT NULL,
    fund_pay_sumamt     numeric(16, 2) NOT NULL,
    acct_pay            numeric(16, 2) NOT NULL,
    confirmed_insured   boolean NOT NULL DEFAULT false,
    confirmed_treating  boolean NOT NULL DEFAULT false,
    state               text NOT NULL DEFAULT 'issued',
    issued_at           timestamptz NOT NULL DEFAULT now(),
    settled_at          timestamptz
);
CREATE INDEX statements_month ON statements (setlym);

CREATE TABLE admin_requests (
    reqid    text PRIMARY KEY,
    emitted  jsonb NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
