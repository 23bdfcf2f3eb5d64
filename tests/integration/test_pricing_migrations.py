"""Pricing's migrations on the real Postgres: the settlements made before a visit was kept get
their visit from what pricing passed on for them (migration 005), so a retry of such a visit under
a new msgid is refused too; the prepayment mirror keeps clearing's balances in its 24 digits (006), and a person's year counters
have as many (007)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "pricing" / "migrations"


@asynccontextmanager
async def _schema_of_its_own(settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search_path is a fresh schema, dropped after."""
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path = {schema}")
        yield conn
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_settlements_made_before_migration_004_get_their_visit_from_what_was_passed_on(settings):
    async with _schema_of_its_own(settings) as conn:
        for name in ("001_init.sql", "002_prepayment_mirror.sql", "003_kept_messages_as_json.sql"):
            await conn.execute((MIGRATIONS / name).read_text())
        await conn.execute("""INSERT INTO requests (msgid, request_hash, infno, setl_id, emitted) VALUES
            ('M1', 'h', '2207', 'S1', '[{"kind": "settle", "facts": {"fixmedins_code": "H1", "mdtrt_id": "V9"}}]'),
            ('M2', 'h', '2208', 'S1', '[{"kind": "cancel", "facts": null}]')""")
        await conn.execute("INSERT INTO settlements (setl_id, msgid, psn_no, year, usage_delta) "
                           "VALUES ('S1', 'M1', 'P1', 2026, '{}')")
        for name in ("004_one_settlement_per_visit.sql", "005_visits_of_earlier_settlements.sql"):
            await conn.execute((MIGRATIONS / name).read_text())
        rows = await conn.fetch("SELECT setl_id, fixmedins_code, mdtrt_id FROM settlements")
        assert [tuple(r) for r in rows] == [("S1", "H1", "V9")]


async def test_a_balance_clearing_publishes_past_numeric_16_2_is_kept(settings):
    # Clearing's sums are numeric(24, 2) from its migration 013: a balance it publishes past
    # numeric(16, 2) would be refused by pricing's mirror and dead-lettered, and pricing would go on
    # deciding on the balance before it.
    async with _schema_of_its_own(settings) as conn:
        for name in sorted(p.name for p in MIGRATIONS.glob("*.sql")):
            await conn.execute((MIGRATIONS / name).read_text())
        await conn.execute("INSERT INTO prepayments VALUES ('810000', '710000', -100999999999899.00, 1)")
        assert str(await conn.fetchval("SELECT balance FROM prepayments")) == "-100999999999899.00"


async def test_a_persons_year_counter_past_numeric_14_2_is_kept(settings):
    # Two of the largest bills a settlement may carry, under a policy without an annual cap, took the
    # person's pooled-fund counter past numeric(14, 2): the batch was refused by the database, and
    # every later settlement of that person's year answered INTERNAL_ERROR (a review, session 37).
    async with _schema_of_its_own(settings) as conn:
        for name in sorted(p.name for p in MIGRATIONS.glob("*.sql")):
            await conn.execute((MIGRATIONS / name).read_text())
        upsert = ("INSERT INTO accumulators (psn_no, year, counter, amount) VALUES ('P1', 2026, 'pooled_paid', $1) "
                  "ON CONFLICT (psn_no, year, counter) DO UPDATE SET amount = accumulators.amount + EXCLUDED.amount")
        for _ in range(2):
            await conn.execute(upsert, Decimal("799999999999.20"))
        assert str(await conn.fetchval("SELECT amount FROM accumulators")) == "1599999999998.40"
