"""R21: when a pending office filing is past its two working days (Beijing time, Monday to Friday)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import pytest
from prometheus_client import REGISTRY

from services.filing.overdue import show_overdue
from yidi.platform.sampling import show_every


def _before(now: str) -> str:
    from yidi.domain.filing import office_overdue_before

    return office_overdue_before(datetime.fromisoformat(now)).isoformat()


@pytest.mark.parametrize(("now", "asked_before"), [
    # a Thursday: asked Monday, due Wednesday, overdue; asked Tuesday, due today
    ("2026-12-03T10:00:00+08:00", "2026-12-01T00:00:00+08:00"),
    # a Monday: asked Wednesday, due Friday, overdue; asked Thursday, due today
    ("2026-12-07T01:00:00+08:00", "2026-12-03T00:00:00+08:00"),
    # Monday 17:00 in UTC is Tuesday 01:00 in Beijing: the day is Beijing's (asked Thursday, overdue)
    ("2026-12-07T17:00:00+00:00", "2026-12-04T00:00:00+08:00"),
    ("2026-12-07T15:59:59+00:00", "2026-12-03T00:00:00+08:00"),  # Monday 23:59:59 in Beijing
    # a Saturday: asked Wednesday, due Friday, overdue
    ("2026-12-05T12:00:00+08:00", "2026-12-03T00:00:00+08:00"),
    # a Tuesday: asked Thursday, due Monday, overdue; asked Friday, due today
    ("2026-12-08T09:00:00+08:00", "2026-12-04T00:00:00+08:00"),
    # asked on a Saturday counts from the Monday after: due Tuesday, overdue on Wednesday
    ("2026-12-09T00:00:00+08:00", "2026-12-07T00:00:00+08:00"),
])
def test_a_pending_filing_is_overdue_once_two_working_days_have_passed_after_the_day_it_was_asked(now, asked_before):
    assert _before(now) == asked_before


def test_the_gauges_show_each_overdue_region_and_take_out_one_no_longer_overdue():
    t = datetime.fromisoformat("2026-12-01T09:00:00+08:00")
    shown = show_overdue({"U30001": (3, t), "U30002": (1, t)}, set())
    assert REGISTRY.get_sample_value("yidi_filing_office_overdue", {"insured": "U30001"}) == 3
    assert REGISTRY.get_sample_value("yidi_filing_office_overdue_oldest_timestamp_seconds",
                                     {"insured": "U30002"}) == t.timestamp()
    shown = show_overdue({"U30002": (2, t)}, shown)
    assert REGISTRY.get_sample_value("yidi_filing_office_overdue", {"insured": "U30001"}) is None
    assert shown == {"U30002"}
    show_overdue({}, shown)
    assert REGISTRY.get_sample_value("yidi_filing_office_overdue", {"insured": "U30002"}) is None


async def test_a_sample_that_fails_shows_nothing_and_is_logged_once_until_one_succeeds(caplog):
    answers: list[object] = [1, OSError("away"), OSError("away"), OSError("away"), 2]
    shown: list[object] = []
    timeouts: list[float] = []

    async def read(timeout: float) -> object:
        timeouts.append(timeout)
        answer = answers.pop(0) if answers else None
        if answer is None:
            raise asyncio.CancelledError
        if isinstance(answer, Exception):
            raise answer
        return answer

    log = logging.getLogger("test.sampling")
    with caplog.at_level(logging.WARNING, logger="test.sampling"), pytest.raises(asyncio.CancelledError):
        await show_every(0.001, read, shown.append, log, "not read")
    assert shown == [1, None, None, None, 2]
    assert timeouts == [5.0] * 6  # at least 5 s, however short the period
    assert [r.getMessage() for r in caplog.records] == ["not read: OSError('away')"]


async def test_a_sample_that_hangs_is_cut_at_its_timeout(monkeypatch):
    from yidi.platform import sampling

    monkeypatch.setattr(sampling, "MIN_TIMEOUT_S", 0.05)
    shown: list[object] = []

    async def read(timeout: float) -> object:
        if not shown:
            await asyncio.sleep(10)  # a read that ignores its timeout
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(show_every(0.01, read, shown.append, logging.getLogger("test.sampling"), "x"), 5)
    assert shown == [None]


@pytest.mark.parametrize(("now", "asked_before"), [
    # 2026's National Day week: 1-7 October off, Sunday 27 September and Saturday 10 October worked
    ("2026-10-08T09:00:00+08:00", "2026-09-29T00:00:00+08:00"),  # due 30 Sep: 29 Sep, 30 Sep worked
    ("2026-10-09T09:00:00+08:00", "2026-09-30T00:00:00+08:00"),
    ("2026-10-12T09:00:00+08:00", "2026-10-09T00:00:00+08:00"),  # 10 Oct (a Saturday) worked
    ("2026-09-29T09:00:00+08:00", "2026-09-27T00:00:00+08:00"),  # 27 Sep (a Sunday) worked
])
def test_the_office_calendar_skips_holidays_and_counts_the_weekend_days_worked_for_them(now, asked_before):
    from datetime import date, timedelta

    from yidi.domain.filing import OfficeCalendar, office_overdue_before

    calendar = OfficeCalendar(frozenset(date(2026, 10, 1) + timedelta(days=n) for n in range(7)),
                              frozenset({date(2026, 9, 27), date(2026, 10, 10)}))
    assert office_overdue_before(datetime.fromisoformat(now), calendar).isoformat() == asked_before


def test_a_calendar_without_working_days_does_not_hang():
    from datetime import date, timedelta

    from yidi.domain.filing import OfficeCalendar, office_overdue_before

    never = OfficeCalendar(frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(800)))
    assert office_overdue_before(datetime.fromisoformat("2027-06-01T09:00:00+08:00"), never).year < 2027
