"""Clearing's migrations on the real Postgres: a database that applied migration 007's first text
(commit 5267afe: a generated ``statements.clr_sumamt``, no ``ledger.drawn``) is brought to the
schema clearing's SQL uses by 008, and ``migrate`` logs a shipped migration that was edited."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import asyncpg
import pytest

from yidi.platform.db import migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "clearing" / "migrations"
# 007 as it first shipped (git show 5267afe:services/clearing/migrations/007_statement_clears_accounts.sql)
FIRST_007 = """ALTER TABLE statements
    ADD COLUMN clr_sumamt numeric(16, 2) GENERATED ALWAYS AS (fund_pay_sumamt + acct_pay) STORED;"""


async def _columns(conn: asyncpg.Connection, schema: str) -> dict[tuple[str, str], tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT table_name, column_name, is_generated, is_nullable FROM information_schema.columns
           WHERE table_schema = $1 AND (table_name, column_name) IN (('ledger', 'drawn'), ('statements', 'clr_sumamt'))""",
        schema)
    return {(r["table_name"], r["column_name"]): (r["is_generated"], r["is_nullable"]) for r in rows}


async def _insert_ledger_row(conn: asyncpg.Connection, setl_id: str, *, fund: str, acct: str, settled_at: str) -> None:
    """A ledger row with every required column filled (amounts 0 but the two named)."""
    columns = await conn.fetch(
        """SELECT column_name, data_type FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'ledger' AND is_nullable = 'NO'
             AND column_default IS NULL""")
    values = {"setl_id": f"'{setl_id}'", "msgid": f"'M{setl_id}'", "fund_pay_sumamt": fund, "acct_pay": acct,
              "settled_at": settled_at}
    for c in columns:
        values.setdefault(c["column_name"], {"numeric": "0", "date": "'2025-10-01'", "json": "'{}'",
                                             "jsonb": "'{}'"}.get(c["data_type"], "'x'"))
    await conn.execute(f"INSERT INTO ledger ({', '.join(values)}) VALUES ({', '.join(values.values())})")


async def test_a_database_that_applied_007s_first_text_gets_the_schema_clearing_uses(settings, caplog):
    first, second = f"mig_{uuid.uuid4().hex[:8]}", f"mig_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            # One schema as migrated at commit 5267afe: 001–006, then 007's first text, recorded as applied.
            await conn.execute(f"CREATE SCHEMA {first}")
            await conn.execute(f"SET search_path = {first}")
            for f in sorted(MIGRATIONS.glob("00[1-6]_*.sql")):
                await conn.execute(f.read_text())
            await conn.execute(FIRST_007)
            await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            await conn.executemany("INSERT INTO schema_migrations(version) VALUES ($1)",
                                   [(f.name,) for f in sorted(MIGRATIONS.glob("00[1-7]_*.sql"))])
            # A statement issued before 007 (it cleared the fund payment; the generated column says
            # fund + account) and a settlement made after it under the first text's code (it drew both).
            await conn.execute("UPDATE schema_migrations SET applied_at = now() - interval '1 day' WHERE version LIKE '007%'")
            await conn.execute(
                """INSERT INTO statements (statement_id, setlym, insuplc_admdvs, mdtrtarea_admvs, settlements, undone,
                                          medfee_sumamt, fund_pay_sumamt, acct_pay, issued_at)
                   VALUES ('ST1', '202510', '131000', '110000', 1, 0, 100, 60, 15, now() - interval '2 days')""")
            await _insert_ledger_row(conn, "S-AFTER", fund="48.89", acct="15.40", settled_at="now()")
            await _insert_ledger_row(conn, "S-BEFORE", fund="30.00", acct="5.00", settled_at="now() - interval '2 days'")
            # Two prepayment accounts, one warned low under the single flag (010 makes it level 1).
            await conn.execute("""INSERT INTO prepayment_accounts (insuplc_admdvs, mdtrtarea_admvs, funded, drawn, alerted)
                                  VALUES ('131000', '110000', 1000, 900, true), ('131000', '120000', 1000, 0, false)""")
            # A month cleared before 011 (closed and totalled in one transaction): totalled.
            await conn.execute("INSERT INTO periods (setlym, state, closed_at) VALUES ('202509', 'closed', now())")
            await conn.execute("RESET search_path")
            before = await _columns(conn, first)
        assert before == {("statements", "clr_sumamt"): ("ALWAYS", "YES")}

        assert await migrate(pool, first, "services.clearing.migrations") == [
            "008_statement_clears_accounts_either_way.sql", "009_statement_clears_accounts_money.sql",
            "010_alert_level.sql", "011_period_totalled.sql", "012_undo_waiting.sql", "013_sums_in_24_digits.sql",
            "014_period_cuts.sql", "015_refusal_warned.sql", "016_statement_confirmations.sql", "platform_001_stage_progress.sql", "platform_002_progress_went_back.sql",
            "platform_003_progress_reached.sql"]  # the platform's own, in every
        # service's schema
        async with pool.acquire() as conn:
            levels = dict(await conn.fetch(f"SELECT mdtrtarea_admvs, alert_level FROM {first}.prepayment_accounts"))
            assert levels == {"110000": 1, "120000": 0}
            drawn = dict(await conn.fetch(f"SELECT setl_id, drawn::text FROM {first}.ledger"))
            assert drawn == {"S-AFTER": "64.29", "S-BEFORE": None}  # before 007: NULL, its fund payment
            assert await conn.fetchval(f"SELECT clr_sumamt::text FROM {first}.statements") == "60.00"
            assert await conn.fetchval(f"SELECT totalled_at IS NOT NULL FROM {first}.periods WHERE setlym = '202509'")
            # 013: the sums in 24 digits, the values kept (a statement's totals, an account's balances).
            widened = await conn.fetch(
                """SELECT table_name, column_name FROM information_schema.columns
                   WHERE table_schema = $1 AND numeric_precision = 24 AND numeric_scale = 2""", first)
            assert {(r["table_name"], r["column_name"]) for r in widened} == {
                ("statements", c) for c in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay", "clr_sumamt")} | {
                ("prepayment_accounts", c) for c in ("funded", "drawn", "given_back", "cleared")} | {
                ("prepayment_moves", "amount")}
            assert await conn.fetchval(f"SELECT drawn::text FROM {first}.prepayment_accounts WHERE mdtrtarea_admvs = '110000'") \
                == "900.00"
        assert await migrate(pool, second, "services.clearing.migrations")  # a new database: every file
        async with pool.acquire() as conn:
            expected = {("ledger", "drawn"): ("NEVER", "YES"), ("statements", "clr_sumamt"): ("NEVER", "NO")}
            assert await _columns(conn, first) == expected
            assert await _columns(conn, second) == expected

            # An applied migration whose text changed since is logged (the database keeps the text it ran).
            await conn.execute(f"UPDATE {first}.schema_migrations SET sha256 = 'edited' WHERE version LIKE '007%'")
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="yidi.platform.db"):
            assert await migrate(pool, first, "services.clearing.migrations") == []
        assert any("007_statement_clears_accounts.sql differs" in r.getMessage() for r in caplog.records)
        with caplog.at_level(logging.ERROR, logger="yidi.platform.db"):
            caplog.clear()
            await migrate(pool, second, "services.clearing.migrations")
        assert not caplog.records
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {first} CASCADE")
            await conn.execute(f"DROP SCHEMA IF EXISTS {second} CASCADE")
        await pool.close()

