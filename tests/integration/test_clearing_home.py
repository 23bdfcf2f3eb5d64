"""Care in the insured region itself, in clearing, on the real Postgres.

A person filed long-term elsewhere may be treated at home (R10): insured and treating region are
one. That region's own fund pays its own facility, so the settlement draws on no prepayment (no
region advanced one to itself) and no region owes it another at month end. It drew on an
(A, A) account nobody funds: the balance went negative, the shortfall alerts fired, and the month
issued a statement of region A owing region A.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import orjson
import pytest

from services.clearing.admin import ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from tests.integration.priced import priced, published
from yidi.platform.kafka import Incoming
from yidi.platform.topics import CLEARING_ALERTS, CLEARING_STATEMENTS, PREPAYMENT_STATUS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("county", [False, True], ids=["same code", "a county of the insured city"])
async def test_care_at_home_is_in_the_ledger_draws_nothing_and_clears_with_no_statement(settings, clearing_of_its_own,
                                                                                       county):
    own, repo = clearing_of_its_own
    # Area codes nest: a facility coded to a county of the insured city is at home too.
    city = f"95{random.randrange(1, 100):02d}00"
    insured = city if county else f"95{random.randrange(100):02d}{random.randrange(1, 100):02d}"
    pair_home = (insured, city[:4] + f"{random.randrange(1, 100):02d}" if county else insured)
    away = (insured, f"94{random.randrange(10_000):04d}")
    handler = ClearingHandler(own, repo)
    at_home = priced(own, "settle", "M-HOME", "S-HOME", pair_home, "90.00",
                     inf_time="2025-09-05 10:00:00", setl_time="2025-09-05 10:00:00")
    elsewhere = priced(own, "settle", "M-AWAY", "S-AWAY", away, "40.00",
                       inf_time="2025-09-05 11:00:00", setl_time="2025-09-05 11:00:00")

    out = await handler([at_home, elsewhere])

    answers = [orjson.loads(o.value) for o in out if o.answered]
    assert sorted(a["output"]["setlinfo"]["setl_id"] for a in answers) == ["S-AWAY", "S-HOME"]
    assert all(a["infcode"] == 0 for a in answers)
    # Only the pair across regions has an account, and only it hears of its balance.
    assert [(s["insuplc_admdvs"], s["mdtrtarea_admvs"]) for s in published(own, out, PREPAYMENT_STATUS)] == [away]
    assert all(a["mdtrtarea_admvs"] != pair_home[1] for a in published(own, out, CLEARING_ALERTS))  # no shortfall at home
    async with repo.transaction() as conn:
        ledger = {r["setl_id"]: r["drawn"] for r in await conn.fetch("SELECT setl_id, drawn FROM clearing.ledger")}
        moves = await conn.fetch("SELECT kind, ref FROM clearing.prepayment_moves ORDER BY ref")
        accounts = await conn.fetch("SELECT insuplc_admdvs, mdtrtarea_admvs FROM clearing.prepayment_accounts")
    assert ledger == {"S-HOME": Decimal("0.00"), "S-AWAY": Decimal("40.00")}  # in the ledger once, both
    assert [(m["kind"], m["ref"]) for m in moves] == [("draw", "S-AWAY")]
    assert [(a["insuplc_admdvs"], a["mdtrtarea_admvs"]) for a in accounts] == [away]

    # Sent again, and cancelled: nothing moves for the care at home, and no balance goes out for it.
    again = await handler([at_home])
    assert [orjson.loads(o.value)["infcode"] for o in again if o.answered] == [0]
    assert published(own, again, PREPAYMENT_STATUS) == []
    cancel = priced(own, "cancel", "M-HOME-UNDO", "S-HOME", pair_home, "90.00", inf_time="2025-09-06 09:00:00")
    undone = await handler([cancel])
    assert [orjson.loads(o.value)["infcode"] for o in undone if o.answered] == [0]
    assert published(own, undone, PREPAYMENT_STATUS) == []
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.prepayment_moves WHERE ref = 'S-HOME'") == 0
        assert await conn.fetchval("SELECT state FROM clearing.ledger WHERE setl_id = 'S-HOME'") == "cancelled"

    # A settlement at home that stays: the month has a statement for the pair across regions only.
    kept = priced(own, "settle", "M-HOME2", "S-HOME2", pair_home, "25.00",
                  inf_time="2025-09-07 10:00:00", setl_time="2025-09-07 10:00:00")
    await handler([kept])
    run = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": "202509"}
    month = await ClearingAdminHandler(own, repo)(
        [Incoming(own.topic("clearing.requests"), 0, 1, run["reqid"].encode(), orjson.dumps(run), 0)])
    (result,) = published(own, month, "clearing.results")
    assert result["ok"], result
    statements = published(own, month, CLEARING_STATEMENTS)
    assert [(s["insuplc_admdvs"], s["mdtrtarea_admvs"], s["clr_sumamt"]) for s in statements] == [(*away, "40.00")]
    assert result["data"]["clr_sumamt"] == "40.00"


async def test_rows_a_now_home_pair_drew_before_the_upgrade_are_cleared_alone(settings, clearing_of_its_own,
                                                                                monkeypatch):
    # A (city, county) pair drew on a prepayment until area codes nested. In the month of the
    # upgrade its old rows are cleared as they drew, and its new care at home stays out of the
    # statement: its totals (settlements, fund payments) added the home rows, while what it
    # cleared did not, so clr_sumamt was no longer fund_pay_sumamt + acct_pay.
    import services.clearing.handlers as clearing_handlers

    own, repo = clearing_of_its_own
    city = f"95{random.randrange(1, 100):02d}00"
    pair = (city, city[:4] + "07")
    handler = ClearingHandler(own, repo)

    def settle(msgid: str, setl_id: str, fund: str, day: int) -> Incoming:
        when = f"2025-09-{day:02d} 10:00:00"
        return priced(own, "settle", msgid, setl_id, pair, fund, inf_time=when, setl_time=when)

    with monkeypatch.context() as older:  # the version before: home was the same code only
        older.setattr(clearing_handlers, "within", lambda region, area: region == area)
        await handler([settle("M-OLD", "S-OLD", "60.00", 1), settle("M-OLD2", "S-OLD2", "25.00", 2)])
    await handler([settle("M-NEW", "S-NEW", "90.00", 3)])  # care at home now
    undone = await handler([priced(own, "cancel", "M-OLD-UNDO", "S-OLD", pair, "60.00", inf_time="2025-09-04 09:00:00")])
    assert [orjson.loads(o.value)["infcode"] for o in undone if o.answered] == [0]
    async with repo.transaction() as conn:
        moves = [(m["kind"], m["ref"], m["amount"]) for m in await conn.fetch(
            "SELECT kind, ref, amount FROM clearing.prepayment_moves ORDER BY id")]
    # The old rows drew and the undoing gave back exactly what S-OLD drew; the new one moved nothing.
    assert moves == [("draw", "S-OLD", Decimal("60.00")), ("draw", "S-OLD2", Decimal("25.00")),
                     ("give_back", "S-OLD", Decimal("60.00"))], moves

    run = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": "202509"}
    month = await ClearingAdminHandler(own, repo)(
        [Incoming(own.topic("clearing.requests"), 0, 1, run["reqid"].encode(), orjson.dumps(run), 0)])
    (result,) = published(own, month, "clearing.results")
    assert result["ok"], result
    (statement,) = published(own, month, CLEARING_STATEMENTS)
    assert (statement["settlements"], statement["undone"], statement["fund_pay_sumamt"], statement["clr_sumamt"]) == (
        2, 1, "25.00", "25.00"), statement


async def test_a_row_from_before_drawn_was_kept_that_paid_no_fund_is_no_statement_of_care_at_home(
        settings, clearing_of_its_own):
    # A row recorded before migration 007 has no drawn: it drew its fund payment. One of care at
    # home that paid none drew nothing, as clearing's moves read it, and the month's totals must
    # agree: they kept it, and the month issued a statement for 0 that both regions had to confirm.
    own, repo = clearing_of_its_own
    city = f"95{random.randrange(1, 100):02d}00"
    pair = (city, city[:4] + "07")
    when = "2025-09-05 10:00:00"
    await ClearingHandler(own, repo)([priced(own, "settle", "M-PRE007", "S-PRE007", pair, "0.00",
                                             inf_time=when, setl_time=when)])
    async with repo.transaction() as conn:
        await conn.execute("UPDATE clearing.ledger SET drawn = NULL WHERE setl_id = 'S-PRE007'")
    run = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": "202509"}
    month = await ClearingAdminHandler(own, repo)(
        [Incoming(own.topic("clearing.requests"), 0, 1, run["reqid"].encode(), orjson.dumps(run), 0)])
    (result,) = published(own, month, "clearing.results")
    assert result["ok"], result
    assert published(own, month, CLEARING_STATEMENTS) == []
