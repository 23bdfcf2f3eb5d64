-- Under YIDI_PREPAYMENT_POLICY=refuse, whether the insured region has been warned that the account
-- refuses bills (a PrepaymentAlert with refused_draw, from pricing's notices): once, until a fund
-- or a month's clearing re-arms it. Beside alert_level (the balance's: low, run out), so that one
-- warning does not hold back the other.
ALTER TABLE prepayment_accounts ADD COLUMN refusal_warned boolean NOT NULL DEFAULT false;
