"""The prepayment gauges over clearing's accounts on the real Postgres: every account counted by
alert level, only the worst shown (a national deployment's pairs of cities would be a series
each), and the runbook's SQL listing exactly the accounts low or run out that the gauges may leave
out, at the levels the gauges judge."""

from __future__ import annotations

import random
import re
from decimal import Decimal

import asyncpg
import pytest

from services.clearing.prepayment import account_of, show_balances
from tests.e2e.system import ROOT
from yidi.platform import metrics

pytestmark = pytest.mark.integration


def _runbook_sql(marker: str) -> str:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for block in re.findall(r"```sql\n(.*?)```", runbook, re.S):
        if marker in block:
            return block
    raise AssertionError(f"no SQL in the runbook with {marker!r}")


def _accounts() -> list[tuple[str, str, Decimal, Decimal, Decimal, Decimal, Decimal]]:
    """60 accounts of every kind, and the edges: unfunded and untouched (healthy), unfunded and drawn
    on (run out), exactly at the warning (healthy), exactly 0 (low)."""
    draw = random.Random(40)
    accounts = [("Q10000", "Q20000", Decimal("0"), Decimal("0"), Decimal("0"), Decimal("0"), Decimal("0.20")),
                ("Q10000", "Q20001", Decimal("0"), Decimal("5.00"), Decimal("0"), Decimal("0"), Decimal("0.20")),
                ("Q10000", "Q20002", Decimal("1000.00"), Decimal("800.00"), Decimal("0"), Decimal("0"), Decimal("0.20")),
                ("Q10000", "Q20003", Decimal("1000.00"), Decimal("1000.00"), Decimal("0"), Decimal("0"), Decimal("0.20"))]
    for i in range(56):
        funded = Decimal(draw.choice([0, 100, 1000, 50000])) + Decimal(draw.randint(0, 99)) / 100
        drawn = (funded * Decimal(draw.choice(["0.1", "0.5", "0.85", "0.95", "1.2"]))).quantize(Decimal("0.01"))
        given_back = Decimal(draw.choice([0, 0, 10])) if drawn > 0 else Decimal(0)
        cleared = Decimal(draw.choice([0, 0, 0, 30]))
        accounts.append((f"Q{11000 + i // 8}", f"Q{21000 + i}", funded, drawn, given_back, cleared,
                         Decimal(draw.choice(["0.10", "0.20", "0.50"]))))
    return accounts


async def test_every_account_is_counted_by_level_the_worst_shown_and_the_runbooks_sql_lists_the_others(
        clearing_of_its_own):
    own, repository = clearing_of_its_own
    conn = await asyncpg.connect(own.database_url)
    try:
        await conn.executemany(
            """INSERT INTO clearing.prepayment_accounts
                   (insuplc_admdvs, mdtrtarea_admvs, funded, drawn, given_back, cleared, warn_share)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""", _accounts())
        listed = await conn.fetch(_runbook_sql("CASE WHEN balance < 0 THEN 2"))
    finally:
        await conn.close()

    rows = await repository.prepayment_accounts(timeout=10)
    judged = {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): account_of(r) for r in rows}
    levels = {pair: account.alert_level() for pair, account in judged.items()}
    assert len(levels) == 60 and [levels[("Q10000", f"Q2000{i}")] for i in range(4)] == [0, 2, 0, 1]
    assert all(list(levels.values()).count(level) >= 5 for level in (0, 1, 2))  # every kind drawn

    # The runbook's list: exactly the accounts low or run out, at their levels, the worst first.
    assert {(r["insuplc_admdvs"], r["mdtrtarea_admvs"]): r["level"] for r in listed} == \
        {pair: level for pair, level in levels.items() if level > 0}
    assert [(r["level"], r["balance"]) for r in listed] == \
        sorted(((levels[p], judged[p].balance) for p in levels if levels[p] > 0), key=lambda lb: (-lb[0], lb[1]))

    shown = show_balances(rows, set(), 10)
    try:
        worst = sorted(levels, key=lambda p: (-levels[p], judged[p].balance, p))[:10]
        assert shown == set(worst)
        counted = {s.labels["level"]: s.value for f in metrics.PREPAYMENT_ACCOUNTS.collect() for s in f.samples}
        assert counted == {str(level): float(list(levels.values()).count(level)) for level in (0, 1, 2)}
        balances = {(s.labels["insured"], s.labels["treating"]): s.value
                    for f in metrics.PREPAYMENT_BALANCE.collect() for s in f.samples if s.labels["insured"][0] == "Q"}
        assert balances == {p: float(judged[p].balance) for p in worst}
    finally:
        show_balances(None, shown, 10)
