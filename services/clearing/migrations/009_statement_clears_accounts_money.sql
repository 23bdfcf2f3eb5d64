-- The money of a database that ran 007's first text (see 008). Its code drew each settlement's
-- fund and account payments on the prepayment, with no ledger.drawn to record it, so those rows
-- read as having drawn their fund payment only: a cancellation would give back, and the month
-- clear, the fund payment alone. Such rows are the ones settled after 007 was applied that have
-- no drawn (the second text's code always writes it). The statements issued before 007 cleared
-- their fund payments, as 007's second text recorded them; the first text's generated column
-- said fund + account. On a database that ran the second text, neither statement changes a row.
UPDATE ledger AS l SET drawn = l.fund_pay_sumamt + l.acct_pay
FROM schema_migrations AS m
WHERE m.version = '007_statement_clears_accounts.sql' AND l.drawn IS NULL AND l.settled_at >= m.applied_at;
UPDATE statements AS s SET clr_sumamt = s.fund_pay_sumamt
FROM schema_migrations AS m
WHERE m.version = '007_statement_clears_accounts.sql' AND s.issued_at < m.applied_at
  AND s.clr_sumamt <> s.fund_pay_sumamt;
