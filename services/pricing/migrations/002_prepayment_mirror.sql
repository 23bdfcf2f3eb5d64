-- Balances clearing publishes (clearing.prepayment-status), for the "refuse" prepayment policy.
CREATE TABLE prepayments (
    insuplc_admdvs   text NOT NULL,
    mdtrtarea_admvs  text NOT NULL,
    balance          numeric(16, 2) NOT NULL,
    version          bigint NOT NULL,
    PRIMARY KEY (insuplc_admdvs, mdtrtarea_admvs)
);
