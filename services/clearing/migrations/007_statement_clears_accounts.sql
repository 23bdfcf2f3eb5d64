-- Account payments are cleared too (domain/clearing.py `owed`): a settlement draws its funds' and
-- its individual account's payments on the prepayment, and a statement clears what its
-- settlements drew. Before this version a settlement drew, and a statement cleared, the funds'
-- payment only. So each row keeps what it drew: a cancellation gives back exactly that, and a
-- month sums it. Settlements before this version have NULL (read as fund_pay_sumamt, what they
-- drew): adding a nullable column rewrites nothing, however long the ledger.
ALTER TABLE ledger ADD COLUMN drawn numeric(14, 2);
COMMENT ON COLUMN ledger.drawn IS 'drawn on the prepayment: fund_pay_sumamt + acct_pay; NULL before migration 007, meaning fund_pay_sumamt';
-- What a statement clears; statements before this version cleared their funds' payments.
ALTER TABLE statements ADD COLUMN clr_sumamt numeric(16, 2);
UPDATE statements SET clr_sumamt = fund_pay_sumamt;
ALTER TABLE statements ALTER COLUMN clr_sumamt SET NOT NULL;
