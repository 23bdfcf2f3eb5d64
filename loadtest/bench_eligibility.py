"""Decisions per second of the eligibility stage's handler, in-process, on the real Postgres and Redis.

    python -m loadtest.bench_eligibility [--persons 2000] [--batches 20] [--out result.json]

The handler (services.eligibility.handlers.EligibilityHandler) gets batches of 500 generated
settlement requests as ``Incoming`` records, as its stage would hand them over, twice:

- **Redis warm**: the cache holds every person (a first pass filled it), reads are one MGET;
- **Redis down**: the cache points at a port nobody listens on (redis://127.0.0.1:1/0), so the
  breaker sends every read to Postgres, as when Redis is away.

Persons, facilities and filings are written straight through ``EligibilityRepository`` upserts,
with psn_nos of their own: no Kafka, no services needed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from loadtest.generator import DayOptions, day_lines
from loadtest.procs import own_database
from loadtest.world import World
from services.eligibility.handlers import EligibilityHandler
from services.eligibility.repository import EligibilityRepository
from services.eligibility.subjects import Subjects
from yidi.contracts.filing import FilingRecord
from yidi.contracts.refdata import FacilityRecord, PersonRecord
from yidi.platform.cache import VersionedCache
from yidi.platform.db import migrate, settings_pool
from yidi.platform.kafka import Incoming
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_REQUESTS

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
SETTLEMENT_KINDS = {"inpatient", "outpatient", "chronic", "pharmacy"}


async def load_world(repo: EligibilityRepository, world: World, concurrency: int = 4) -> None:
    await repo.upsert_facilities([FacilityRecord.model_validate(record) for record in world.facility_records()])
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        person = world.persons[index]
        async with semaphore:
            await repo.upsert_person(PersonRecord.model_validate(world.person_record(person)))
            filing = world.filing_record(index, person)
            if filing:
                await repo.upsert_filing(FilingRecord(
                    filing_id=f"F{world.run_id}{index:07d}", psn_no=person.psn_no, insutype=person.insutype,
                    insuplc_admdvs=person.insured, filed_admdvs=filing["filed_admdvs"], category=person.category,
                    begndate=filing["begndate"], enddate=filing.get("enddate"),
                    status="active", version=1,
                ))

    await asyncio.gather(*(one(i) for i in range(len(world.persons))))


def make_batches(world: World, settings: Settings, *, batches: int, size: int) -> list[list[Incoming]]:
    """``batches`` batches of ``size`` settlement requests of the world's persons, as the stage reads them."""
    needed = batches * size
    lines = day_lines(world, DayOptions(settlements=needed + needed // 10, seed=world.seed, tag="EB"))
    requests = [ln for ln in lines if ln["kind"] in SETTLEMENT_KINDS][:needed]
    topic, now_ms = settings.topic(SETTLEMENT_REQUESTS), int(time.time() * 1000)
    records = [Incoming(topic, i % 6, i, ln["key"].encode(), orjson.dumps(ln["request"]), now_ms)
               for i, ln in enumerate(requests)]
    return [records[i:i + size] for i in range(0, len(records), size)]


async def timed(handler: EligibilityHandler, batches: list[list[Incoming]], eligible_topic: str) -> dict[str, Any]:
    decided = refused = 0
    started = time.perf_counter()
    for batch in batches:
        for out in await handler(batch):
            if out.topic == eligible_topic:
                decided += 1
                refused += b'"refusal":null' not in out.value
    elapsed = time.perf_counter() - started
    n = sum(len(b) for b in batches)
    return {"decisions": n, "seconds": round(elapsed, 3), "decisions_per_s": round(n / elapsed, 1),
            "ms_per_batch": round(elapsed / len(batches) * 1000, 2), "passed_on": decided, "refused": refused}


async def bench(settings: Settings, *, persons: int = 2000, batches: int = 20, size: int = 500) -> dict[str, Any]:
    tag = "EB" + uuid.uuid4().hex[:8].upper()
    pool = await settings_pool(settings)
    results: dict[str, Any] = {"persons": persons, "batches": batches, "batch_size": size}
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        repo = EligibilityRepository(pool, reference_ttl=settings.reference_cache_seconds)
        world = World(persons=persons, seed=11, run_id=tag)
        started = time.perf_counter()
        await load_world(repo, world)
        results["load_s"] = round(time.perf_counter() - started, 2)
        work = make_batches(world, settings, batches=batches, size=size)
        eligible = settings.topic(SETTLEMENT_ELIGIBLE)
        for mode, url in (("redis_warm", settings.redis_url), ("redis_down", UNREACHABLE_REDIS)):
            cache = VersionedCache(url, ttl_seconds=600, prefix=f"{tag}:elig:")
            try:
                handler = EligibilityHandler(settings, repo, Subjects(repo, cache))
                await timed(handler, work if mode == "redis_warm" else work[:1], eligible)  # fills the cache / warms PG
                results[mode] = await timed(handler, work, eligible)
            finally:
                await cache.close()
    finally:
        await pool.close()
    warm, down = results["redis_warm"]["decisions_per_s"], results["redis_down"]["decisions_per_s"]
    results["down_vs_warm"] = round(down / warm, 3) if warm else None
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_eligibility", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    settings = Settings(namespace=os.environ.get("YIDI_NAMESPACE", "") or "benchelig.")

    async def on_a_database_of_its_own() -> dict[str, Any]:
        # Its generated persons, facilities and filings stay out of the database of the system
        # sharing the stack (``make bench`` runs it on the run's own database).
        async with own_database(settings, "EB" + uuid.uuid4().hex[:8]) as own:
            return await bench(own, persons=args.persons, batches=args.batches, size=args.batch_size)

    result = asyncio.run(on_a_database_of_its_own())
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    print(text.decode())
    if args.out:
        args.out.write_bytes(text)
    print(f"eligibility: {result['redis_warm']['decisions_per_s']:.0f} decisions/s with Redis warm, "
          f"{result['redis_down']['decisions_per_s']:.0f}/s with Redis down", file=sys.stderr)


if __name__ == "__main__":
    main()
