"""R21 for operators: the filings still pending past the office's two working days, counted on the
real Postgres and shown as gauges."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.filing.overdue import show_overdue_every
from services.filing.repository import FilingRepository
from tests.conftest import unique
from tests.e2e.system import ROOT
from yidi.domain.codes import FilingCategory, InsuranceType
from yidi.domain.filing import FilingAsk, OfficeCalendar, new_filing, office_overdue_before

pytestmark = pytest.mark.integration


async def _pending(repo: FilingRepository, insured: str, *, asked: datetime | None, at_once: bool = False) -> str:
    """An office filing (pending) of ``insured`` asked for at ``asked`` (None: saved before
    ``made_at`` was kept, its last write then)."""
    filing = new_filing(FilingAsk(unique("F"), unique("P"), InsuranceType("310"), insured, "110000",
                                  FilingCategory.LONG_TERM_RESIDENT, date(2026, 1, 1), None, at_once))
    async with repo.transaction() as conn:
        await repo.save(conn, filing, 1, date(2026, 1, 1), "add", unique("R"), "office", made_at=asked)
        if asked is None:
            await conn.execute("UPDATE filing.filings SET made_at = NULL, updated_at = now() - interval '9 days' "
                               "WHERE filing_id = $1", filing.filing_id)
    return filing.filing_id


def _gauge(insured: str) -> tuple[float | None, float | None]:
    return (REGISTRY.get_sample_value("yidi_filing_office_overdue", {"insured": insured}),
            REGISTRY.get_sample_value("yidi_filing_office_overdue_oldest_timestamp_seconds", {"insured": insured}))


async def test_pending_filings_past_two_working_days_are_counted_by_insured_region(filing_of_its_own):
    _, repo = filing_of_its_own
    now = datetime.now(UTC)
    before = office_overdue_before(now)
    a, b, c, d = (unique("R")[:6] for _ in range(4))
    oldest = before - timedelta(days=6)
    await _pending(repo, a, asked=oldest)
    await _pending(repo, a, asked=before - timedelta(seconds=1))
    await _pending(repo, a, asked=before)  # the limit not passed yet
    await _pending(repo, b, asked=now)  # asked today
    await _pending(repo, c, asked=oldest, at_once=True)  # self-service: active at once, never pending
    await _pending(repo, d, asked=None)  # pending since before made_at was kept
    found = await repo.office_overdue(before, timeout=5)
    assert set(found) == {a, d}
    assert found[a] == (2, oldest)
    assert found[d][0] == 1 and found[d][1] < before


async def test_the_gauges_follow_the_database_and_a_region_no_longer_overdue_is_taken_out(filing_of_its_own):
    _, repo = filing_of_its_own
    region = unique("R")[:6]
    asked = datetime.now(UTC) - timedelta(days=10)
    filing_id = await _pending(repo, region, asked=asked)
    task = asyncio.create_task(show_overdue_every(repo, 0.05, OfficeCalendar()))
    try:
        async def until(expected: tuple[float | None, float | None]) -> None:
            while _gauge(region) != expected:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(until((1.0, asked.timestamp())), 10)
        async with repo.transaction() as conn:  # the office approves it
            await conn.execute("UPDATE filing.filings SET status = 'active' WHERE filing_id = $1", filing_id)
        await asyncio.wait_for(until((None, None)), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_an_operator_lists_them_oldest_first_for_one_region(filing_of_its_own):
    own, repo = filing_of_its_own
    region, other = unique("R")[:6], unique("R")[:6]
    asked = datetime.now(UTC) - timedelta(days=12)
    later = await _pending(repo, region, asked=asked + timedelta(days=1))
    first = await _pending(repo, region, asked=asked)
    await _pending(repo, other, asked=asked)
    await _pending(repo, region, asked=datetime.now(UTC))  # not overdue yet
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.filing.overdue", "--insured", region],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=os.environ | {"YIDI_DATABASE_URL": own.database_url})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("\t") == ["insured", "filing_id", "psn_no", "category", "asked"]
    assert [line.split("\t")[:2] for line in lines[1:]] == [[region, first], [region, later]]
    assert "2 filings pending past" in done.stderr
