"""R21 for operators: the filings still pending past the office's two working days, as gauges, and
listed for an operator: ``python -m services.filing.overdue [--insured REGION]`` (the services'
``YIDI_*`` settings), tab-separated, oldest first."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime

from yidi.domain.filing import OfficeCalendar, office_overdue_before
from yidi.platform import metrics
from yidi.platform.db import close_pool, settings_pool, statements_for
from yidi.platform.sampling import show_every
from yidi.platform.settings import Settings, settings_for

from services.filing.repository import FilingRepository

log = logging.getLogger(__name__)


def show_overdue(found: dict[str, tuple[int, datetime]], shown: set[str]) -> set[str]:
    """Set the gauges from ``found`` (insured region: how many, the oldest asked); a region no
    longer overdue (shown before, in ``shown``) is taken out. Returns the regions shown now."""
    for region, (count, oldest) in found.items():
        metrics.FILING_OFFICE_OVERDUE.labels(region).set(count)
        metrics.FILING_OFFICE_OVERDUE_OLDEST.labels(region).set(oldest.timestamp())
    for region in shown - found.keys():
        metrics.FILING_OFFICE_OVERDUE.remove(region)
        metrics.FILING_OFFICE_OVERDUE_OLDEST.remove(region)
    return set(found)


def office_calendar(settings: Settings) -> OfficeCalendar:
    """The offices' working days: ``YIDI_OFFICE_DAYS_OFF``, ``YIDI_OFFICE_WEEKEND_WORKDAYS``."""
    return OfficeCalendar(frozenset(settings.office_days_off), frozenset(settings.office_weekend_workdays))


async def show_overdue_every(repository: FilingRepository, seconds: float, calendar: OfficeCalendar) -> None:
    """Every ``seconds``, the pending filings past R21's limit, by insured region, into the gauges.
    A read that fails (or takes longer than ``seconds``, at least 5 s) takes them out, logged once."""
    shown: set[str] = set()

    def show(found: dict[str, tuple[int, datetime]] | None) -> None:
        nonlocal shown
        shown = show_overdue(found or {}, shown)

    with statements_for("office-overdue"):
        await show_every(
            seconds, lambda timeout: repository.office_overdue(office_overdue_before(datetime.now(UTC), calendar), timeout),
            show, log, "pending filings past the office's limit not read for the metrics, their gauges taken out")


async def overdue_filings(settings: Settings, insured: str | None) -> list[tuple[str, ...]]:
    """The pending filings past the office's limit now, as the gauges count them, oldest first."""
    pool = await settings_pool(settings, size=1, tool="filing-overdue")
    try:
        before = office_overdue_before(datetime.now(UTC), office_calendar(settings))
        rows = await FilingRepository(pool).office_overdue_filings(before, insured)
    finally:
        await close_pool(pool)
    return [(r["insuplc_admdvs"], r["filing_id"], r["psn_no"], r["category"], r["asked"].isoformat()) for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.filing.overdue", description=__doc__)
    parser.add_argument("--insured", help="one insured region (the alert's `insured` label)")
    args = parser.parse_args(argv)
    rows = asyncio.run(overdue_filings(settings_for("filing"), args.insured))
    print("insured\tfiling_id\tpsn_no\tcategory\tasked")
    for row in rows:
        print("\t".join(row))
    print(f"{len(rows)} filings pending past the office's two working days", file=sys.stderr)


if __name__ == "__main__":
    main()
