-- What a statement clears: what the insured region's funds paid and what its people's individual
-- accounts paid (domain/clearing.py `owed`). Account payments used to be listed on the statement
-- but not cleared, so a treating region never got back the account money its hospitals paid out.
-- Generated, so statements issued before this version show it too.
ALTER TABLE statements
    ADD COLUMN clr_sumamt numeric(16, 2) GENERATED ALWAYS AS (fund_pay_sumamt + acct_pay) STORED;
