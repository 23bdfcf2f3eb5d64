"""Sweep eligibility's stale cache marks once, from an operator's shell, as every instance does each
second: ``python -m services.eligibility.sweep`` (the services' ``YIDI_*`` settings).

For ``YidiEligibilityCacheStaleServed``: the instances that sweep cannot reach Redis, and one that
reads Redis does not sweep. Run from a host that reaches both Redis and Postgres, it forgets each
marked entry as of the person's version (a tombstone, so a look-up in flight cannot cache the old
subject again) and removes the marks it forgot. Exit status 0 once no mark is left, 1 if Redis
could not be reached; ``--help`` prints the usage and sweeps nothing, and an option it does not
take exits 2 without sweeping."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from yidi.platform.db import close_pool, settings_pool
from yidi.platform.settings import Settings, settings_for

from services.eligibility.app import subjects_cache
from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects


async def sweep(settings: Settings) -> bool:
    """Sweep every mark, waiting for the instances' sweeps (``Subjects.sweep_all``): False if Redis
    could not be reached."""
    pool = await settings_pool(settings, size=1, tool="eligibility-sweep")
    cache = subjects_cache(settings)
    try:
        return await Subjects(EligibilityRepository(pool), cache).sweep_all()
    finally:
        await cache.close()
        await close_pool(pool)


def main(argv: list[str] | None = None) -> None:
    # No options: but ``--help`` (or a mistyped flag) must not sweep the production cache.
    argparse.ArgumentParser(
        prog="python -m services.eligibility.sweep",
        description="Sweep eligibility's stale cache marks once, as every instance does each second.",
        epilog="Settings from the services' YIDI_* environment (YIDI_DATABASE_URL, YIDI_REDIS_URL, ...).",
    ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the sweeps' "N cache entries marked stale dropped"
    if asyncio.run(sweep(settings_for("eligibility"))):
        print("no cache entry marked stale is left")
        sys.exit(0)
    print("Redis could not be reached from here: the marks are left", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
