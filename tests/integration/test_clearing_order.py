"""Months are cleared in order, and nothing dated in a month no one runs waits there, on the real Postgres.

A settlement dated in a month that was never run (before go-live, or skipped) landed in that
month, and stayed there uncleared once a later month had been cleared: the insured region never
paid for it, the treating region was never paid. Months could also be run in any order, so a
month skipped stayed skipped. Now what is dated at or before the latest month closed lands after
it, and a month is run only when no earlier open month holds settlements or undoings.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal

import orjson
import pytest

from services.clearing.admin import ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from services.clearing.repository import AMOUNT_COLUMNS, ClearingRepository
from tests.integration.priced import priced
from tests.integration.waiting import until
from yidi.platform.errors import RaceLost
from yidi.platform.kafka import Incoming

pytestmark = pytest.mark.integration

PAIR = ("951001", "941001")


@pytest.fixture
def repo(clearing_of_its_own) -> ClearingRepository:
    return clearing_of_its_own[1]


async def _settle(settings, repo, when: str, fund: str = "10.00") -> str:
    """A settlement of ``fund`` yuan at ``when``, through clearing's settlement stage; its setl_id."""
    setl_id = f"S-{uuid.uuid4().hex[:12]}"
    await ClearingHandler(settings, repo)([priced(settings, "settle", f"M-{setl_id}", setl_id, PAIR, fund,
                                                   inf_time=when, setl_time=when)])
    return setl_id


async def _cancel(settings, repo, setl_id: str, when: str) -> None:
    await ClearingHandler(settings, repo)([priced(settings, "cancel", f"M-UNDO-{setl_id}", setl_id, PAIR, "0.00",
                                                   inf_time=when)])


async def _handle(settings, repo, *bodies: dict) -> list[dict]:
    """``bodies`` as one batch of clearing.requests; their results, in the order sent."""
    records = [Incoming(settings.topic("clearing.requests"), 0, i, b["reqid"].encode(), orjson.dumps(b), 0)
               for i, b in enumerate(bodies)]
    out = await ClearingAdminHandler(settings, repo)(records)
    results = {r["reqid"]: r for o in out if o.topic == settings.topic("clearing.results")
               for r in [orjson.loads(o.value)]}
    return [results[b["reqid"]] for b in bodies]


def _run_body(month: str, reqid: str | None = None) -> dict:
    return {"type": "run_month", "reqid": reqid or f"R-{uuid.uuid4().hex}", "setlym": month}


async def _run(settings, repo, month: str, reqid: str | None = None) -> dict:
    (result,) = await _handle(settings, repo, _run_body(month, reqid))
    return result


async def _periods(repo, setl_id: str) -> tuple[str, str | None]:
    async with repo.transaction() as conn:
        row = await conn.fetchrow("SELECT clr_period, undo_period FROM clearing.ledger WHERE setl_id = $1", setl_id)
    return row["clr_period"], row["undo_period"]


def _cleared(result: dict) -> tuple[int, int, str]:
    (statement,) = result["data"]["statements"]
    return statement["settlements"], statement["undone"], statement["clr_sumamt"]


async def test_a_month_is_run_only_when_no_earlier_month_holds_settlements(settings, repo):
    await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    await _settle(settings, repo, "2025-10-10 10:00:00", "20.00")
    reqid = f"R-{uuid.uuid4().hex}"
    refused = await _run(settings, repo, "202510", reqid)
    assert not refused["ok"] and refused["reason"].startswith(
        "month 202509 holds settlements or undoings not cleared yet: run it before 202510")
    async with repo.transaction() as conn:  # nothing closed, nothing kept under its reqid
        assert await conn.fetchval("SELECT count(*) FROM clearing.periods") == 0
        assert await conn.fetchval("SELECT count(*) FROM clearing.admin_requests WHERE reqid = $1", reqid) == 0
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    again = await _run(settings, repo, "202510", reqid)  # sent again, its turn come: it runs
    assert again["ok"] and _cleared(again) == (1, 0, "20.00")


async def test_what_is_dated_in_a_month_never_run_lands_after_the_latest_month_cleared(settings, repo):
    first = await _settle(settings, repo, "2025-10-10 10:00:00", "20.00")
    assert _cleared(await _run(settings, repo, "202510")) == (1, 0, "20.00")
    # Dated before go-live, or in a month skipped: it would have waited in 2025-09 for a run that
    # was never coming. An undoing dated back does the same.
    late = await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    await _cancel(settings, repo, first, "2025-08-01 10:00:00")
    assert await _periods(repo, late) == ("202511", None)
    assert await _periods(repo, first) == ("202510", "202511")
    nothing = await _run(settings, repo, "202509")
    assert not nothing["ok"] and "nothing is left to clear" in nothing["reason"] and "after 202510" in nothing["reason"]
    query = {"type": "query_month", "reqid": f"Q-{uuid.uuid4().hex}", "setlym": "202509"}
    (never,) = await _handle(settings, repo, query)
    assert not never["ok"] and "was not run, and 202510 after it is cleared: it has no statements" in never["reason"]
    assert _cleared(await _run(settings, repo, "202511")) == (1, 1, "-10.00")


async def test_an_undoing_in_an_earlier_open_month_holds_a_later_month_back(settings, repo):
    setl_id = await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    await _cancel(settings, repo, setl_id, "2025-10-02 10:00:00")
    refused = await _run(settings, repo, "202511")
    assert not refused["ok"] and refused["reason"].startswith("month 202510 holds settlements or undoings")
    assert _cleared(await _run(settings, repo, "202510")) == (0, 1, "-10.00")
    assert (await _run(settings, repo, "202511"))["ok"]


async def test_a_month_left_open_behind_a_later_one_by_an_earlier_version_is_run_to_clear_it(settings, repo):
    # Before this version months could be run in any order: 2025-10 cleared, 2025-09 left open with
    # a settlement in it.
    setl_id = await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    async with repo.transaction() as conn:
        await conn.execute("INSERT INTO clearing.periods (setlym, state, closed_at, totalled_at) "
                           "VALUES ('202510', 'closed', now(), now())")
    refused = await _run(settings, repo, "202511")
    assert not refused["ok"] and refused["reason"].startswith("month 202509 holds settlements or undoings")
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    await _cancel(settings, repo, setl_id, "2025-09-20 10:00:00")  # lands after the latest month closed
    assert await _periods(repo, setl_id) == ("202509", "202511")
    assert _cleared(await _run(settings, repo, "202511")) == (0, 1, "-10.00")


async def test_every_earlier_month_holding_settlements_or_undoings_is_named_in_order(settings, repo):
    first = await _settle(settings, repo, "2025-06-10 10:00:00", "10.00")
    assert (await _run(settings, repo, "202506"))["ok"]
    await _cancel(settings, repo, first, "2025-07-02 10:00:00")  # an undoing, alone in 2025-07
    later = await _settle(settings, repo, "2025-08-10 10:00:00", "30.00")
    await _cancel(settings, repo, later, "2025-07-20 10:00:00")  # dated before its settlement's month
    assert await _periods(repo, later) == ("202508", "202508")
    refused = await _run(settings, repo, "202509")
    assert refused["reason"].startswith("months 202507, 202508 hold settlements or undoings not cleared yet: "
                                        "run them, in this order, before 202509"), refused
    # Sent together, in any order, the runs go in month order, and each closes its month.
    results = await _handle(settings, repo, _run_body("202509"), _run_body("202508"), _run_body("202507"))
    assert [r["ok"] for r in results] == [True, True, True], results
    assert [_cleared(r) for r in results[1:]] == [(1, 1, "0.00"), (0, 1, "-10.00")]
    assert results[0]["data"]["statements"] == []


async def test_a_month_whose_run_stopped_before_its_statements_is_finished_first(settings, repo):
    await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    await _settle(settings, repo, "2025-10-10 10:00:00", "20.00")
    assert await repo.close_month("202509", f"R-{uuid.uuid4().hex}") is None  # and the run stopped there
    refused = await _run(settings, repo, "202510")
    assert not refused["ok"] and refused["reason"] == (
        "the run of month 202509 stopped before its statements were written: send run_month for it again before 202510")
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    assert _cleared(await _run(settings, repo, "202510")) == (1, 0, "20.00")


async def test_a_settlement_committed_while_a_close_waits_for_the_lock_holds_the_month_back(settings, repo):
    # The order is checked after the periods lock is held: a batch in flight when the close began
    # is seen, so its settlement in an earlier month is not left behind a month closed over it.
    pool = repo._pool
    async with repo.transaction() as batch:
        await repo.lock_batch(batch, [b"P-IN-FLIGHT"])
        close = asyncio.create_task(repo.close_month("202510", f"R-{uuid.uuid4().hex}"))
        await until(lambda: _waiting(pool, "advisory"), timeout=10)
        # The batch's ledger row, as the stage writes it (a settlement dated 2025-09).
        await batch.execute(
            f"""INSERT INTO clearing.ledger (setl_id, msgid, request_hash, infno, psn_no, mdtrt_id, insuplc_admdvs,
                    mdtrtarea_admvs, fixmedins_code, setlym, {", ".join(AMOUNT_COLUMNS)}, answer, setl_date,
                    clr_period, drawn)
                VALUES ('S-IN-FLIGHT', 'M-IN-FLIGHT', 'h', '2207', 'P1', 'V1', $1, $2, 'H1', '202509',
                        {", ".join("0" for _ in AMOUNT_COLUMNS)}, '{{}}'::json, '2025-09-10', '202509', 0)""", *PAIR)
    refusal = await asyncio.wait_for(close, timeout=10)
    assert refusal is not None and refusal.startswith("month 202509 holds settlements or undoings"), refusal
    async with repo.transaction() as conn:
        assert await conn.fetchval("SELECT count(*) FROM clearing.periods") == 0


async def test_a_refused_run_holds_no_lock_while_the_rest_of_its_batch_runs(settings, repo):
    # A run refused by the close (in its own short transaction) is not checked again under the
    # periods lock in the batch's transaction: that lock would have held every settlement batch
    # back until the batch committed, through other runs' totals and reconciliations.
    await _settle(settings, repo, "2025-10-10 10:00:00", "20.00")
    assert (await _run(settings, repo, "202510"))["ok"]
    fund = {"type": "fund", "reqid": f"F-{uuid.uuid4().hex}", "insuplc_admdvs": PAIR[0], "mdtrtarea_admvs": PAIR[1],
            "amount": "100.00"}
    async with repo.transaction() as held:  # the account's row (the settlement drew on it): the batch's fund waits
        await held.fetchrow("SELECT 1 FROM clearing.prepayment_accounts WHERE insuplc_admdvs = $1 "
                            "AND mdtrtarea_admvs = $2 FOR UPDATE", *PAIR)
        handled = asyncio.create_task(_handle(settings, repo, _run_body("202509"), fund))
        await until(lambda: _waiting(repo._pool, "transactionid"), timeout=10)
        async with repo.transaction() as batch:  # a settlement batch meanwhile: not held back
            await asyncio.wait_for(repo.lock_batch(batch, [b"P-BESIDE"]), timeout=5)
    refused, funded = await asyncio.wait_for(handled, timeout=10)
    assert not refused["ok"] and "nothing is left to clear" in refused["reason"]
    assert funded["ok"] and Decimal(funded["data"]["funded"]) == Decimal("100.00")


async def _waiting(pool, locktype: str) -> bool:
    """Whether a session of this test's database waits for a lock of ``locktype``."""
    return bool(await pool.fetchval(
        """SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
           WHERE a.datname = current_database() AND NOT l.granted AND l.locktype = $1""", locktype))


async def test_a_pairs_month_shows_what_its_statement_clears_beside_what_is_dated_in_it(settings, repo):
    # What a month clears is what landed in it, not what is dated in it: a clerk comparing the
    # month's settlements with its statement needs both.
    first = await _settle(settings, repo, "2025-10-10 10:00:00", "20.00")
    assert (await _run(settings, repo, "202510"))["ok"]
    await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")  # lands in 2025-11
    await _settle(settings, repo, "2025-11-10 10:00:00", "40.00")
    await _cancel(settings, repo, first, "2025-11-12 10:00:00")  # gives 20.00 back in 2025-11
    query = {"type": "query_pair_month", "insuplc_admdvs": PAIR[0], "mdtrtarea_admvs": PAIR[1], "setlym": "202511"}
    (before,) = await _handle(settings, repo, query | {"reqid": f"Q-{uuid.uuid4().hex}"})
    assert (before["data"]["settlements"], before["data"]["settled_fund_pay_sumamt"]) == (1, "40.00")
    assert before["data"]["clearing"] == {"settlements": 2, "undone": 1, "medfee_sumamt": "30.00",
                                          "fund_pay_sumamt": "30.00", "acct_pay": "0.00", "clr_sumamt": "30.00"}
    assert before["data"]["statements"] == []
    assert _cleared(await _run(settings, repo, "202511")) == (2, 1, "30.00")
    (after,) = await _handle(settings, repo, query | {"reqid": f"Q-{uuid.uuid4().hex}"})
    (statement,) = after["data"]["statements"]
    assert {k: statement[k] for k in after["data"]["clearing"]} == after["data"]["clearing"]


class _CommitHeld(ClearingRepository):
    """A clearing instance that has done a batch's work and not committed it yet: its transaction
    (the one after ``close_month``'s) waits for ``release`` before it commits."""

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.held, self.release, self._next = asyncio.Event(), asyncio.Event(), False

    async def close_month(self, *args, **kwargs):
        try:
            return await super().close_month(*args, **kwargs)
        finally:
            self._next = True

    @contextlib.asynccontextmanager
    async def transaction(self, locked=None, **kwargs):
        hold, self._next = self._next, False
        async with super().transaction(locked, **kwargs) as conn:
            yield conn
            if hold:
                self.held.set()
                await self.release.wait()


async def test_a_run_two_instances_handle_at_once_publishes_what_the_one_that_committed_stored(settings, repo):
    # A rebalance while a month is totalled: the instance that lost the partition commits the month
    # to Postgres and its Kafka transaction is refused. The new owner read the request as not
    # handled (the other had not committed) and waited for the month's lock. It answered "cleared
    # already" and published no statement: the month's statements never reached the topic.
    await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    body = _run_body("202509")
    record = Incoming(settings.topic("clearing.requests"), 0, 0, body["reqid"].encode(), orjson.dumps(body), 0)
    revoked = _CommitHeld(repo._pool)
    first = asyncio.create_task(ClearingAdminHandler(settings, revoked)([record]))
    await asyncio.wait_for(revoked.held.wait(), timeout=10)
    second = asyncio.create_task(ClearingAdminHandler(settings, repo)([record]))
    await until(lambda: _waiting(repo._pool, "transactionid"), timeout=10)
    revoked.release.set()
    lost = await asyncio.wait_for(first, timeout=10)  # its Kafka transaction refused: none of it published
    assert len(lost) == 2 and orjson.loads(lost[0].value)["ok"]  # the result and the pair's statement
    try:
        published = await asyncio.wait_for(second, timeout=10)
    except RaceLost:  # the stage handles the batch again
        published = await ClearingAdminHandler(settings, repo)([record])
    assert [(o.topic, o.value, o.key) for o in published] == [(o.topic, o.value, o.key) for o in lost]
