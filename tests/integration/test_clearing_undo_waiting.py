"""An undoing of a settlement the ledger lacks, on the real Postgres.

A settlement clearing dead-lettered (a bug, a value Postgres refused) is recorded by pricing, and
the facility may cancel it before clearing is fixed: pricing gives the accumulators back and
passes the cancellation on, which clearing cannot apply (answered INTERNAL_ERROR, "the ledger lacks
it"). When the settlement is then sent again (the facility re-sends its msgid, or its dead letter
is re-published), it entered the ledger as settled and nothing undid it: the month cleared it,
and the insured region paid for a cancelled bill. The undoing is now kept and applied as the
settlement is entered.
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
from yidi.platform.topics import CLEARING_STATEMENTS, PREPAYMENT_STATUS

pytestmark = pytest.mark.integration


def _answers(out) -> list[dict]:
    return [orjson.loads(o.value) for o in out if o.answered]


async def test_a_cancellation_that_came_before_its_settlement_reached_the_ledger_is_applied_then(
        settings, clearing_of_its_own):
    own, repo = clearing_of_its_own
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    async with repo.transaction() as conn:
        await repo.move_prepayments(conn, [(*pair, "fund", Decimal("100.00"), "FUND-1")])
    handler = ClearingHandler(own, repo)
    settle = priced(own, "settle", "M-1", "S-1", pair, "90.00",
                    inf_time="2025-09-05 10:00:00", setl_time="2025-09-05 10:00:00")
    cancel = priced(own, "cancel", "M-1-UNDO", "S-1", pair, "90.00", inf_time="2025-09-06 09:00:00")

    # The settlement was dead-lettered here; its cancellation comes: the ledger lacks it.
    lacking = await handler([cancel])
    (refused,) = _answers(lacking)
    assert refused["err_code"] == "INTERNAL_ERROR" and "ledger lacks it" in refused["err_msg"]
    assert "takes effect if that settlement is recorded" in refused["err_msg"]

    # The settlement is sent again: it is entered, and undone by the cancellation at once. It is
    # answered as it stands, once: a success would have the facility collect only the cash part of
    # a bill no fund pays.
    entered = await handler([settle])
    (answer,) = _answers(entered)
    assert (answer["msgid"], answer["infcode"], answer["err_code"]) == ("M-1", -1, "ALREADY_UNDONE")
    assert answer["err_msg"].startswith("Settlement S-1 of msgid M-1 was cancelled by msgid M-1-UNDO; it does not stand")
    async with repo.transaction() as conn:
        row = await conn.fetchrow("SELECT state, undone_msgid, clr_period, undo_period FROM clearing.ledger "
                                  "WHERE setl_id = 'S-1'")
        moves = await conn.fetch("SELECT kind, amount FROM clearing.prepayment_moves WHERE ref = 'S-1' ORDER BY kind")
        waiting = await conn.fetchval("SELECT count(*) FROM clearing.undo_waiting")
    assert (row["state"], row["undone_msgid"], row["clr_period"], row["undo_period"]) == (
        "cancelled", "M-1-UNDO", "202509", "202509")
    assert [(m["kind"], m["amount"]) for m in moves] == [("draw", Decimal("90.00")), ("give_back", Decimal("90.00"))]
    assert [s["balance"] for s in published(own, entered, PREPAYMENT_STATUS)] == ["100.00"]
    assert waiting == 0

    # Either sent again: the cancellation gets pricing's answer to it, the settlement the same
    # refusal; nothing moves again.
    again = await handler([cancel, settle])
    assert [(a["msgid"], a.get("err_code")) for a in _answers(again)] == [("M-1-UNDO", None), ("M-1", "ALREADY_UNDONE")]
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.prepayment_moves WHERE ref = 'S-1'") == 2

    # The month clears nothing for it: settled and undone in it.
    run = {"type": "run_month", "reqid": f"R-{uuid.uuid4().hex}", "setlym": "202509"}
    month = await ClearingAdminHandler(own, repo)(
        [Incoming(own.topic("clearing.requests"), 0, 1, run["reqid"].encode(), orjson.dumps(run), 0)])
    (statement,) = published(own, month, CLEARING_STATEMENTS)
    assert (statement["settlements"], statement["undone"], statement["clr_sumamt"]) == (1, 1, "0.00")


async def test_without_its_settlement_an_undoing_waits_and_a_resend_of_it_is_refused_the_same(
        settings, clearing_of_its_own):
    own, repo = clearing_of_its_own
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    handler = ClearingHandler(own, repo)
    cancel = priced(own, "cancel", "M-2-UNDO", "S-2", pair, "10.00")
    first, second = await handler([cancel]), await handler([cancel])
    assert [a["err_code"] for a in _answers(first) + _answers(second)] == ["INTERNAL_ERROR", "INTERNAL_ERROR"]
    async with repo.transaction() as conn:
        kept = await conn.fetch("SELECT msgid, setl_id FROM clearing.undo_waiting")
        assert await conn.fetchval("SELECT count(*) FROM clearing.prepayment_moves") == 0
    assert [(k["msgid"], k["setl_id"]) for k in kept] == [("M-2-UNDO", "S-2")]  # kept once


@pytest.mark.parametrize("kept_before", [False, True])
async def test_an_undoing_and_its_settlement_sent_again_in_one_batch_undo_it(settings, clearing_of_its_own, kept_before):
    # Both are keyed by the person: re-published together, the undoing comes first in the batch
    # (and may have been kept by an earlier batch as well).
    own, repo = clearing_of_its_own
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    handler = ClearingHandler(own, repo)
    settle = priced(own, "settle", "M-3", "S-3", pair, "30.00")
    cancel = priced(own, "cancel", "M-3-UNDO", "S-3", pair, "30.00")
    if kept_before:
        await handler([cancel])

    out = await handler([cancel, settle])

    assert [(a["msgid"], a.get("err_code")) for a in _answers(out)] == [("M-3-UNDO", "INTERNAL_ERROR"), ("M-3", "ALREADY_UNDONE")]
    async with repo.transaction() as conn:
        row = await conn.fetchrow("SELECT state, undone_msgid FROM clearing.ledger WHERE setl_id = 'S-3'")
        kinds = [r["kind"] for r in await conn.fetch(
            "SELECT kind FROM clearing.prepayment_moves WHERE ref = 'S-3' ORDER BY kind")]
        assert await conn.fetchval("SELECT count(*) FROM clearing.undo_waiting") == 0
        assert await conn.fetchval("SELECT count(*) FROM clearing.undo_requests WHERE msgid = 'M-3-UNDO'") == 1
    assert (row["state"], row["undone_msgid"]) == ("cancelled", "M-3-UNDO")
    assert kinds == ["draw", "give_back"]
    # The batch handled again (its Kafka transaction lost: only this attempt's answers go out): the undoing
    # now has its kept answer, and nothing moves again.
    again = await handler([cancel, settle])
    assert [(a["msgid"], a.get("err_code")) for a in _answers(again)] == [("M-3-UNDO", None), ("M-3", "ALREADY_UNDONE")]
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.prepayment_moves WHERE ref = 'S-3'") == 2


def _ledger_count(state: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("yidi_ledger_entries_total", {"kind": state}) or 0.0


async def test_ledger_entries_are_counted_once_their_batch_committed(settings, clearing_of_its_own):
    """yidi_ledger_entries_total counts with the answer's on_commit, which the stage runs once the
    batch's transaction committed: a batch tried again (its first try rolled back) counts once.
    A settlement entered and undone at once by a waiting cancellation counts both."""
    own, repo = clearing_of_its_own
    pair = (f"95{random.randrange(10_000):04d}", f"94{random.randrange(10_000):04d}")
    handler = ClearingHandler(own, repo)
    states = ("settled", "cancelled", "duplicate")

    def counts() -> dict[str, float]:
        return {s: _ledger_count(s) for s in states}

    def committed(out) -> None:
        for o in out:
            if o.on_commit is not None:
                o.on_commit()

    before = counts()
    first = await handler([priced(own, "settle", "C-1", "CS-1", pair, "10.00")])
    assert counts() == before  # handled, not committed yet
    committed(first)
    again = await handler([priced(own, "settle", "C-1", "CS-1", pair, "10.00")])  # sent again
    committed(again)
    committed(await handler([priced(own, "cancel", "C-1-UNDO", "CS-1", pair, "10.00")]))
    # A cancellation before its settlement reached the ledger, then the settlement: one answer, two entries.
    await handler([priced(own, "cancel", "C-2-UNDO", "CS-2", pair, "20.00")])
    committed(await handler([priced(own, "settle", "C-2", "CS-2", pair, "20.00")]))
    assert {s: counts()[s] - before[s] for s in states} == {"settled": 2, "cancelled": 2, "duplicate": 1}
