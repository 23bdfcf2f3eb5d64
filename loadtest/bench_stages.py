"""CPU cost per record of each stage's handler, in-process, on the real Postgres and Redis.

    python -m loadtest.bench_stages [--persons 3000] [--batches 10] [--repeat 3] [--profile pricing] [--out result.json]

The three settlement handlers (eligibility → pricing → clearing) are chained without Kafka: the
generated day's requests go to eligibility's handler in batches of 500, its settlement.eligible
output to pricing's, pricing's settlement.priced output to clearing's, as their stages would
hand them over. Each stage is timed over the same records, so a change to one handler is
measured in seconds instead of a whole ``make bench``. ``--profile STAGE`` runs that stage's
batches under cProfile and prints the top functions.

This is the tool behind the "ms per record" figures in docs/BENCHMARKS.md; the end-to-end
figures (Kafka transactions included) come from ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil

from loadtest.bench_eligibility import load_world
from loadtest.generator import DayOptions, day_lines
from loadtest.procs import own_database
from loadtest.world import World
from services.clearing.handlers import ClearingHandler
from services.clearing.repository import ClearingRepository
from services.eligibility.handlers import EligibilityHandler
from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects
from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository
from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.platform import collector
from yidi.platform.cache import VersionedCache
from yidi.platform.db import migrate, settings_pool
from yidi.platform.kafka import Incoming, Outgoing
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED, SETTLEMENT_REQUESTS

STAGES = ("eligibility", "pricing", "clearing")


def as_incoming(outgoing: list[Outgoing], topic: str, now_ms: int) -> list[Incoming]:
    """What the next stage reads of what this one published on ``topic``."""
    return [Incoming(o.topic, i % 6, i, o.key, o.value, now_ms) for i, o in enumerate(outgoing) if o.topic == topic]


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def run_stage(handler: Any, batches: list[list[Incoming]], profile: bool, backend: int | None = None,
                    ) -> tuple[list[Outgoing], dict[str, Any]]:
    """Run ``batches`` through ``handler``; time it, in this process and in Postgres (``backend``:
    the pid of the one server process the handler's pool talks to)."""
    out: list[Outgoing] = []
    profiler = cProfile.Profile() if profile else None
    pg = _cpu_seconds(backend)
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches:
        out.extend(await handler(batch))
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg = _cpu_seconds(backend) - pg
    n = sum(len(b) for b in batches)
    stats: dict[str, Any] = {"records": n, "outputs": len(out), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                             "postgres_cpu_s": round(pg, 3),
                             "ms_per_record": round(wall / n * 1000, 3) if n else None,
                             "cpu_ms_per_record": round(cpu / n * 1000, 3) if n else None,
                             "postgres_cpu_ms_per_record": round(pg / n * 1000, 3) if n else None}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(45)
        stats["profile"] = text.getvalue()
    return out, stats


class Chain:
    """The three settlement handlers on one pool and cache, with a generated world loaded."""

    def __init__(self, settings: Settings, pool: Any, cache: VersionedCache, world: World) -> None:
        self.settings, self.pool, self.cache, self.world = settings, pool, cache, world
        elig_repo = EligibilityRepository(pool, reference_ttl=settings.reference_cache_seconds)
        self.elig_repo, self.pricing_repo = elig_repo, PricingRepository(pool)
        self.handlers: dict[str, Any] = {
            "eligibility": EligibilityHandler(settings, elig_repo, Subjects(elig_repo, cache)),
            "pricing": PricingHandler(settings, self.pricing_repo),
            "clearing": ClearingHandler(settings, ClearingRepository(pool)),
        }

    async def load(self) -> None:
        for service in STAGES:
            await migrate(self.pool, service, f"services.{service}.migrations")
        await load_world(self.elig_repo, self.world)
        for record in self.world.policy_records():
            await self.pricing_repo.upsert_policy(PolicyRecord.model_validate(record))
        for record in self.world.catalogue_records():
            await self.pricing_repo.upsert_catalogue_item(CatalogueRecord.model_validate(record))

    def requests(self, settlements: int, tag: str, day: int = 0, **extras: float) -> list[Incoming]:
        """A generated day's requests as the eligibility stage reads them (cancellations need
        answers, so a day here has none); ``day``: another day's draw of persons and bills (the
        tags of repeats have the same length, and the seed went by it alone)."""
        options = DayOptions(settlements=settlements, seed=self.world.seed + len(tag) + 1000 * day, tag=tag,
                             **({"pre_settlements": 0.02, "duplicates": 0.005, "malformed": 0.002} | extras))
        now_ms, topic = int(time.time() * 1000), self.settings.topic(SETTLEMENT_REQUESTS)
        return [Incoming(topic, i % 6, i, ln["key"].encode(), orjson.dumps(ln["request"]), now_ms)
                for i, ln in enumerate(day_lines(self.world, options)) if "request" in ln]

    async def run(self, records: list[Incoming], *, size: int = 500, profile: str | None = None,
                  ) -> dict[str, tuple[list[Outgoing], dict[str, Any]]]:
        """Each stage's output and figures, the records going through all three in batches of ``size``."""
        results = {}
        backend = None
        if self.pool.get_max_size() == 1:  # one server process: its CPU is the handlers' Postgres work
            backend = await self.pool.fetchval("SELECT pg_backend_pid()")
        next_topic = {"eligibility": SETTLEMENT_ELIGIBLE, "pricing": SETTLEMENT_PRICED, "clearing": None}
        for stage in STAGES:
            chunks = [records[i:i + size] for i in range(0, len(records), size)]
            results[stage] = await run_stage(self.handlers[stage], chunks, profile == stage, backend)
            if next_topic[stage]:
                records = as_incoming(results[stage][0], self.settings.topic(next_topic[stage]), records[0].timestamp_ms if records else 0)
        return results


async def bench(settings: Settings, *, persons: int, batches: int, size: int, profile: str | None,
                repeat: int = 1) -> dict[str, Any]:
    tag = "SB" + uuid.uuid4().hex[:8].upper()
    # A database of its own (dropped after), and one connection to it, so one Postgres server
    # process does (and is measured for) all the handlers' work: with YIDI_DB_PARALLEL_WORKERS at
    # its default, 0; parallel workers, when allowed, are other processes and not measured here.
    async with own_database(settings, tag) as own:
        pool = await settings_pool(settings, size=1, dsn=own.database_url)
        cache = VersionedCache(settings.redis_url, ttl_seconds=600, prefix=f"{tag}:elig:")
        results: dict[str, Any] = {"persons": persons, "batches": batches, "batch_size": size, "repeat": repeat}
        try:
            chain = Chain(settings, pool, cache, World(persons=persons, seed=11, run_id=tag))
            await chain.load()
            # A warm-up day of its own (caches, prepared statements), then the measured one.
            await chain.run(chain.requests(size * 2, f"{tag}W"), size=size)
            # The garbage collector as the services run it: their thresholds, what is held frozen.
            collector.tune(settings.gc_thresholds)
            collector.freeze()
            # Each repeat is a fresh day; a stage's figures are from its least disturbed repeat (the
            # least CPU): on a shared machine that is the closest to what the code itself costs.
            for n in range(repeat):
                measured = await chain.run(chain.requests(batches * size, f"{tag}M{n}", day=n), size=size,
                                           profile=profile)
                for stage in STAGES:
                    figures = measured[stage][1]
                    if stage not in results or figures["cpu_s"] < results[stage]["cpu_s"]:
                        results[stage] = figures
            results["cpu_ms_per_request"] = round(sum(results[s]["cpu_ms_per_record"] for s in STAGES), 3)
            results["postgres_cpu_ms_per_request"] = round(sum(results[s]["postgres_cpu_ms_per_record"] for s in STAGES), 3)
        finally:
            await cache.close()
            await pool.close()
    return results



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--profile", choices=STAGES)
    parser.add_argument("--repeat", type=int, default=1, help="measure N fresh days, keep each stage's least CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    settings = Settings(namespace=os.environ.get("YIDI_NAMESPACE", "") or "benchstages.")
    result = asyncio.run(bench(settings, persons=args.persons, batches=args.batches, size=args.batch_size,
                               profile=args.profile, repeat=args.repeat))
    profile = result.get(args.profile, {}).pop("profile", None) if args.profile else None
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        args.out.write_bytes(text)
    if profile:
        print(profile)
    for stage in STAGES:
        s = result[stage]
        print(f"{stage:12s} {s['records']:6d} records  {s['ms_per_record']:.3f} ms/record wall  "
              f"{s['cpu_ms_per_record']:.3f} ms/record CPU  {s['postgres_cpu_ms_per_record']:.3f} ms/record Postgres CPU",
              file=sys.stderr)
    print(f"{'all':12s} {result['cpu_ms_per_request']:.3f} ms CPU per request in the handlers, "
          f"{result['postgres_cpu_ms_per_request']:.3f} ms in Postgres", file=sys.stderr)


if __name__ == "__main__":
    main()
