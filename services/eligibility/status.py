"""``yidi-region-status``: which insured regions are down now, which will be, and when each
comes back (R19) — read from eligibility's mirror of platform.region-status.

    yidi-region-status                 # now
    yidi-region-status --at "2026-11-24T02:30:00+08:00"
    yidi-region-status --region 440106 # is it down, by its own window or its city's or province's?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

from yidi.domain.codes import BUSINESS_TZ, within
from yidi.domain.eligibility import Outage, unavailable
from yidi.platform.db import close_pool, settings_pool
from yidi.platform.settings import Settings

from services.eligibility.repository import EligibilityRepository


def region_status(windows: list[dict[str, Any]], at: datetime, region: str | None = None) -> dict[str, Any]:
    """Split open windows into those covering ``at`` (down now) and those still to come, and name
    when each region down now resumes: the end of the last of its overlapping or following
    windows, as a cashier is told (R19). With ``region``: whether that region is down, by its own
    window or by its city's or province's (area codes nest), and when it resumes."""
    down, planned = [], []
    for w in windows:
        entry = {"admdvs": w["admdvs"], "from": w["starts_at"].isoformat(), "until": w["ends_at"].isoformat(),
                 "reason": w["reason"], "status_id": w["status_id"]}
        (down if w["starts_at"] <= at < w["ends_at"] else planned).append(entry)
    outages = [Outage(w["admdvs"], w["starts_at"], w["ends_at"], w["reason"]) for w in windows]
    resumes = {}
    for listed in sorted({d["admdvs"] for d in down}):
        last = unavailable(listed, outages, at)
        assert last is not None  # a window covers ``at``
        resumes[listed] = {"at": last.end.isoformat(), "reason": last.reason}
    status = {"at": at.isoformat(), "down_now": down, "planned": planned, "resumes": resumes}
    if region is not None:
        last = unavailable(region, outages, at)
        status["region"] = {
            "admdvs": region, "down": last is not None,
            "resumes": {"at": last.end.isoformat(), "reason": last.reason, "window_of": last.region} if last else None,
            "windows": [w for w in (*down, *planned) if within(region, w["admdvs"])],
        }
    return status


async def current(settings: Settings, at: datetime, region: str | None = None) -> dict[str, Any]:
    pool = await settings_pool(settings, size=1, tool="region-status")
    try:
        return region_status(await EligibilityRepository(pool).all_outages(at), at, region)
    finally:
        await close_pool(pool)


def _area_code(text: str) -> str:
    if not re.fullmatch(r"[0-9]{6}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a 6-digit area code")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="yidi-region-status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--at", type=datetime.fromisoformat, default=None,
                        help="an ISO time; without a zone, the business zone's (UTC+08:00)")
    parser.add_argument("--region", default=None, type=_area_code,
                        help="an insured region's area code: is it down (its own window, its city's or province's)?")
    args = parser.parse_args(argv)
    at = args.at or datetime.now(UTC)
    if at.tzinfo is None:  # compared with aware windows: a naive time could not be
        at = at.replace(tzinfo=BUSINESS_TZ)
    print(json.dumps(asyncio.run(current(Settings(), at, args.region)), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
