"""R21 for operators: the filings still pending past the office's two working days, as gauges."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from yidi.domain.filing import office_overdue_before
from yidi.platform import metrics
from yidi.platform.sampling import show_every

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


async def show_overdue_every(repository: FilingRepository, seconds: float) -> None:
    """Every ``seconds``, the pending filings past R21's limit, by insured region, into the gauges.
    A read that fails (or takes longer than ``seconds``, at least 5 s) takes them out, logged once."""
    shown: set[str] = set()

    def show(found: dict[str, tuple[int, datetime]] | None) -> None:
        nonlocal shown
        shown = show_overdue(found or {}, shown)

    await show_every(
        seconds, lambda timeout: repository.office_overdue(office_overdue_before(datetime.now(UTC)), timeout),
        show, log, "pending filings past the office's limit not read for the metrics, their gauges taken out")
