"""``yidi-load``: publish a reference data file to the feeds, validated whole first.

The file is one JSON object with any of these lists (docs/reference-data.md):
``facilities``, ``persons``, ``policies``, ``catalogue``, ``filings`` (filing requests) and
``region_status``. Every record is validated against its contract before anything is
published: a file with one bad record publishes nothing. ``--wait`` then waits until the
services have applied all of it.

    yidi-load deploy/demo/refdata.json --wait 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ValidationError

from yidi.contracts.filing import FilingRequest
from yidi.contracts.refdata import CatalogueRecord, FacilityRecord, PersonRecord, PolicyRecord, RegionStatusRecord
from yidi.platform.kafka import ensure_platform_topics
from yidi.platform.lag import wait_caught_up
from yidi.platform.topics import (
    FEED_READERS,
    FILING_PERSONS_GROUP,
    OPTIONAL_FEEDS,
    FILING_EVENTS,
    FILING_REQUESTS,
    FILING_STAGE_GROUP,
    REFDATA_CATALOGUE,
    REFDATA_FACILITIES,
    REFDATA_PERSONS,
    REFDATA_POLICIES,
    REGION_STATUS,
    feed_group,
)

# section of the file → (contract, topic, key)
SECTIONS: dict[str, tuple[type[BaseModel], str, str]] = {
    "facilities": (FacilityRecord, REFDATA_FACILITIES, "fixmedins_code"),
    "persons": (PersonRecord, REFDATA_PERSONS, "psn_no"),
    "policies": (PolicyRecord, REFDATA_POLICIES, "insuplc_admdvs"),
    "catalogue": (CatalogueRecord, REFDATA_CATALOGUE, "mdtrtarea_admvs"),
    "filings": (FilingRequest, FILING_REQUESTS, "psn_no"),
    "region_status": (RegionStatusRecord, REGION_STATUS, "admdvs"),
}


class DataFileError(ValueError):
    """The data file does not validate; nothing was published."""


def validate(data: dict[str, Any]) -> dict[str, list[BaseModel]]:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise DataFileError(f"unknown sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
    errors, parsed = [], {}
    for section, (model, _, _) in SECTIONS.items():
        records = []
        for i, raw in enumerate(data.get(section, [])):
            try:
                records.append(model.model_validate(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                errors.append(f"{section}[{i}] {where}: {first['msg']}")
        parsed[section] = records
    if errors:
        raise DataFileError("; ".join(errors[:20]) + (f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""))
    return parsed


async def publish(bootstrap: str, namespace: str, parsed: dict[str, list[BaseModel]], *,
                  compression_type: str | None = None) -> dict[str, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True,
                                compression_type=compression_type)
    await producer.start()
    counts: dict[str, int] = {}
    try:
        for section, records in parsed.items():
            _, topic, key_field = SECTIONS[section]
            futures = [
                await producer.send(
                    f"{namespace}{topic}", r.model_dump_json().encode(), key=str(getattr(r, key_field)).encode()
                )
                for r in records
            ]
            await asyncio.gather(*futures)
            counts[section] = len(records)
    finally:
        await producer.stop()
    return counts


def consumers_to_wait_for(namespace: str, *, optional: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(group, topic) of every feed reader; of the ``OPTIONAL_FEEDS`` only those in ``optional``
    (their readers exist only in some configurations: waiting on an absent group never ends)."""
    wanted = set(optional)
    pairs = [(f"{namespace}{FILING_STAGE_GROUP}", f"{namespace}{FILING_REQUESTS}"),
             (f"{namespace}{FILING_PERSONS_GROUP}", f"{namespace}{REFDATA_PERSONS}")]
    pairs += [(f"{namespace}{feed_group(service, topic)}", f"{namespace}{topic}") for topic, service in FEED_READERS.items()
              if topic not in OPTIONAL_FEEDS or topic in wanted]
    # filing.events is written by the filing stage: check it after the stage has caught up.
    pairs.sort(key=lambda p: p[1] == f"{namespace}{FILING_EVENTS}")
    return pairs


async def load(path: str, *, bootstrap: str, namespace: str = "", wait: float = 0.0) -> dict[str, int]:
    data = json.loads(Path(path).read_text())
    parsed = validate(data)
    # The feeds' topics with their specs (compacted), before a first write lets the broker create them.
    await ensure_platform_topics(bootstrap, namespace)
    counts = await publish(bootstrap, namespace, parsed)
    if wait:
        await wait_caught_up(bootstrap, consumers_to_wait_for(namespace), timeout=wait)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="yidi-load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--bootstrap", default=os.environ.get("YIDI_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--namespace", default=os.environ.get("YIDI_NAMESPACE", ""))
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the services to apply it")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        counts = asyncio.run(load(args.file, bootstrap=args.bootstrap, namespace=args.namespace, wait=args.wait))
    except DataFileError as exc:
        print(f"yidi-load: {args.file} refused, nothing published: {exc}", file=sys.stderr)
        sys.exit(2)
    except TimeoutError as exc:
        print(f"yidi-load: published, but the services have not applied it yet: {exc}", file=sys.stderr)
        sys.exit(3)
    summary = ", ".join(f"{n} {section}" for section, n in counts.items() if n)
    applied = " and applied" if args.wait else ""
    print(f"yidi-load: {summary} published{applied} in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
