"""After a restore, a stage that answers from what its service's feeds keep waits for them to catch up.

Eligibility's settlement stage keeps nothing in its database and is not moved back by
``yidi-recover``: it answers from the copies its feeds and its filings stage keep (persons,
facilities, outages, filings). Restored from a backup, those copies lack what came after it, and
the feeds apply it again from Kafka. Answered meanwhile, a person whose insurance stopped after the
backup, a facility whose designation ended or a filing cancelled would still count.

So the stage waits: at the service's start each group's committed offsets carry the mark
``yidi-recover`` left (``progress.answered_to``: what was applied before the restore), read by the
check at start (``recover.behind``, into ``Service.marks``), and each of the stage's batches first
asks whether every such partition's ``stage_progress`` row now holds every record below its mark
(``reached``, where a stage's last batch ended, or ``applied_below``). Until then the batch is
retried (``FeedsCatchingUp``, a ``TransientError``: the requests wait in Kafka, none is lost), and
once they have, the stage never asks again. Without a restore there are no marks and nothing waits.

A feed's first commit after the start replaces its mark with its progress: an instance started
again half-way through the catch-up no longer waits for that feed's partition.

The wait is bounded (``GIVE_UP_SECONDS`` from the first batch that waited): a feed's row can stay
below its mark without anything left to apply (the last records below the mark compacted away,
tombstones past their retention, on a partition nothing new comes to). Past it the stage answers,
and says at ERROR which partitions had not caught up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import asyncpg

from yidi.platform.db import transient_errors
from yidi.platform.errors import TransientError
from yidi.platform.progress import TABLE

log = logging.getLogger(__name__)

# How long a stage waits for the feeds at most, from its first batch that waited.
GIVE_UP_SECONDS = 600.0


class FeedsCatchingUp(TransientError):
    """The feeds have not yet applied again what the restored database lacked: the batch waits."""


class CatchUp:
    """``targets``, per consumer group: each partition's restore mark; ``check`` raises
    ``FeedsCatchingUp`` until the rows of ``schema``'s ``stage_progress`` hold every record below
    them, and passes at once after that."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], schema: str,
                 targets: Mapping[str, Mapping[tuple[str, int], int]], give_up_seconds: float = GIVE_UP_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._schema = schema
        self._targets = {g: dict(m) for g, m in targets.items() if m}
        self._give_up = give_up_seconds
        self._clock = clock
        self._since: float | None = None

    @property
    def waiting(self) -> bool:
        return bool(self._targets)

    async def check(self) -> None:
        if not self._targets:
            return
        async with transient_errors():
            rows = await self._pool().fetch(
                f'SELECT consumer_group, topic, kafka_partition, GREATEST(reached, applied_below) AS at '
                f'FROM "{self._schema}".{TABLE} WHERE consumer_group = ANY($1::text[])', sorted(self._targets))
        at = {(r["consumer_group"], r["topic"], r["kafka_partition"]): r["at"] for r in rows}
        short = [(g, topic, partition, mark, at.get((g, topic, partition)))
                 for g, marks in sorted(self._targets.items()) for (topic, partition), mark in sorted(marks.items())
                 if (at.get((g, topic, partition)) or 0) < mark]
        if short:
            where = ", ".join(f"{g} {t}[{p}] at {'nothing' if now is None else now} of {mark}"
                              for g, t, p, mark, now in short[:3])
            self._since = self._clock() if self._since is None else self._since
            if self._clock() - self._since < self._give_up:
                raise FeedsCatchingUp(f"waiting for its feeds to apply again what the restored database lacked "
                                      f"({len(short)} partition(s): {where})")
            log.error("answering although its feeds have not applied again all the restored database lacked, after "
                      "%.0f s (%d partition(s): %s): nothing left to apply there (records compacted away)? Check "
                      "yidi_feed_lag_records", self._give_up, len(short), where)
            self._targets = {}
            return
        log.info("the feeds have applied again what the restored database lacked: answering from them (%s)",
                 ", ".join(sorted(self._targets)))
        self._targets = {}
