-- Migration 007 first shipped (commit 5267afe) as a generated statements.clr_sumamt and no
-- ledger.drawn, and was then rewritten in place; a database migrated in between kept the first
-- text, and clearing's SQL failed on ledger.drawn. This brings either state to the same schema
-- (on a database that ran the second text it changes nothing). Migrations are never edited once
-- shipped: platform/db.py `migrate` now logs one that differs from the text it applied.
ALTER TABLE ledger ADD COLUMN IF NOT EXISTS drawn numeric(14, 2);
COMMENT ON COLUMN ledger.drawn IS 'drawn on the prepayment: fund_pay_sumamt + acct_pay; NULL before migration 007, meaning fund_pay_sumamt';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'statements'
                 AND column_name = 'clr_sumamt' AND is_generated = 'ALWAYS') THEN
        ALTER TABLE statements ALTER COLUMN clr_sumamt DROP EXPRESSION;  -- keeps the values it had
    END IF;
END $$;
ALTER TABLE statements ALTER COLUMN clr_sumamt SET NOT NULL;
