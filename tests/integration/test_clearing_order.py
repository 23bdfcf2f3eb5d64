"""Months are cleared in order, and nothing dated in a month no one runs waits there, on the real Postgres.

A settlement dated in a month that was never run (before go-live, or skipped) landed in that
month, and stayed there uncleared once a later month had been cleared: the insured region never
paid for it, the treating region was never paid. Months could also be run in any order, so a
month skipped stayed skipped. Now what is dated at or before the latest month closed lands after
it, and a month is run only when no earlier open month holds settlements or undoings.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from services.clearing.admin import ClearingAdminHandler
from services.clearing.handlers import ClearingHandler
from services.clearing.repository import ClearingRepository
from tests.integration.priced import priced
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


async def _run(settings, repo, month: str, reqid: str | None = None) -> dict:
    body = {"type": "run_month", "reqid": reqid or f"R-{uuid.uuid4().hex}", "setlym": month}
    request = Incoming(settings.topic("clearing.requests"), 0, 1, body["reqid"].encode(), orjson.dumps(body), 0)
    out = await ClearingAdminHandler(settings, repo)([request])
    (result,) = [orjson.loads(o.value) for o in out if o.topic == settings.topic("clearing.results")]
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
    assert not refused["ok"] and refused["reason"].startswith("month 2025-09 holds settlements not cleared yet")
    assert "run it before 2025-10" in refused["reason"]
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
    assert not nothing["ok"] and "nothing is left to clear" in nothing["reason"] and "after 2025-10" in nothing["reason"]
    assert _cleared(await _run(settings, repo, "202511")) == (1, 1, "-10.00")


async def test_an_undoing_in_an_earlier_open_month_holds_a_later_month_back(settings, repo):
    setl_id = await _settle(settings, repo, "2025-09-10 10:00:00", "10.00")
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    await _cancel(settings, repo, setl_id, "2025-10-02 10:00:00")
    refused = await _run(settings, repo, "202511")
    assert not refused["ok"] and refused["reason"].startswith("month 2025-10 holds settlements not cleared yet")
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
    assert not refused["ok"] and refused["reason"].startswith("month 2025-09 holds settlements not cleared yet")
    assert _cleared(await _run(settings, repo, "202509")) == (1, 0, "10.00")
    await _cancel(settings, repo, setl_id, "2025-09-20 10:00:00")  # lands after the latest month closed
    assert await _periods(repo, setl_id) == ("202509", "202511")
    assert _cleared(await _run(settings, repo, "202511")) == (0, 1, "-10.00")
