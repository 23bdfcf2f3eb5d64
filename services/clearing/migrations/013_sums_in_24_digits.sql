-- Sums of many amounts in 24 digits (22 before the point): a statement's totals and an account's
-- balances. Each ledger amount is numeric(14, 2), so numeric(16, 2) held a hundred of the largest
-- bills; a pair's month past that failed its statement after the month had closed, and every later
-- month was refused behind it. 24 digits hold the largest amount times more settlements than an
-- integer counts. Precision raised, scale kept: Postgres rewrites no row.
ALTER TABLE statements
    ALTER COLUMN medfee_sumamt TYPE numeric(24, 2),
    ALTER COLUMN fund_pay_sumamt TYPE numeric(24, 2),
    ALTER COLUMN acct_pay TYPE numeric(24, 2),
    ALTER COLUMN clr_sumamt TYPE numeric(24, 2);
ALTER TABLE prepayment_accounts
    ALTER COLUMN funded TYPE numeric(24, 2),
    ALTER COLUMN drawn TYPE numeric(24, 2),
    ALTER COLUMN given_back TYPE numeric(24, 2),
    ALTER COLUMN cleared TYPE numeric(24, 2);
ALTER TABLE prepayment_moves ALTER COLUMN amount TYPE numeric(24, 2);
