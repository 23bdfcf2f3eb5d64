-- Clearing's own schema: the settlement ledger, one row per settlement, idempotent by msgid.
CREATE TABLE ledger (
    setl_id            text PRIMARY KEY,
    msgid              text NOT NULL UNIQUE,
    request_hash       text NOT NULL,
    infno              text NOT NULL,
    psn_no             text NOT NULL,
    mdtrt_id           text NOT NULL,
    insuplc_admdvs     text NOT NULL,
    mdtrtarea_admvs    text NOT NULL,
    fixmedins_code     text NOT NULL,
    setlym             text NOT NULL,
    medfee_sumamt      numeric(14, 2) NOT NULL,
    fulamt_ownpay_amt  numeric(14, 2) NOT NULL,
    overlmt_selfpay    numeric(14, 2) NOT NULL,
    preselfpay_amt     numeric(14, 2) NOT NULL,
    inscp_scp_amt      numeric(14, 2) NOT NULL,
    act_pay_dedc       numeric(14, 2) NOT NULL,
    hifp_pay           numeric(14, 2) NOT NULL,
    hifmi_pay          numeric(14, 2) NOT NULL,
    hifob_pay          numeric(14, 2) NOT NULL,
    cvlserv_pay        numeric(14, 2) NOT NULL,
    maf_pay            numeric(14, 2) NOT NULL,
    oth_pay            numeric(14, 2) NOT NULL,
    fund_pay_sumamt    numeric(14, 2) NOT NULL,
    psn_part_amt       numeric(14, 2) NOT NULL,
    acct_pay           numeric(14, 2) NOT NULL,
    psn_cash_pay       numeric(14, 2) NOT NULL,
    hosp_part_amt      numeric(14, 2) NOT NULL,
    state              text NOT NULL DEFAULT 'settled',
    answer             jsonb NOT NULL,
    settled_at         timestamptz NOT NULL DEFAULT now(),
    undone_msgid       text,
    undone_answer      jsonb,
    undone_at          timestamptz
);
CREATE INDEX ledger_facility_day ON ledger (fixmedins_code, settled_at);
CREATE INDEX ledger_pair_month ON ledger (insuplc_admdvs, mdtrtarea_admvs, setlym);

-- Cancellations and reversals clearing has applied, by their own msgid (idempotency).
CREATE TABLE undo_requests (
    msgid         text PRIMARY KEY,
    request_hash  text NOT NULL,
    setl_id       text NOT NULL REFERENCES ledger (setl_id),
    answer        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
