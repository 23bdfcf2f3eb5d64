"""Where each stage and feed stood in its service's database, for a restore (runbook, "Restoring a
service's database").

Kafka keeps a consumer group's committed offsets, and a service's Postgres keeps what the batches
before them did. A database restored to an earlier point (a backup, point-in-time recovery) lacks
what the batches after that point wrote, while the group's offsets say they are done: the ledger
would lack settlements that were answered, pricing's accumulators the bills after that point.

So every transaction a batch opens (``Repository.transaction``) also records, in the same
transaction, where that batch began on each partition (one that another of the batch's follows, one
record earlier: ``Progress.before_last``): ``stage_progress`` (a table in each
service's schema) says "every record before this offset is in this database". A restored database
brings its own ``stage_progress`` back to its point in time, exactly.
``python -m yidi.platform.recover`` then moves each group of the stopped service back to that offset,
and leaves on the committed offset a mark (``answered_to``): the records between were handled and
their outputs published before the restore. A stage handles them again, without publishing anything
(their answers, passed-on records and dead letters are in their topics already: a gateway is never
answered twice, and the next stage reads the originals), and carries the mark in each offset commit
below it, so a stage that stops half-way keeps it. Past the mark, records are handled as always.

The offset is where the batch *began*: a batch whose transactions were not all in the backup is
handled again whole, and the handlers' idempotence (by msgid, reqid, version) passes over what was.
A row never goes back (``GREATEST``): an instance the group has moved on from, whose batch's
transaction commits late, cannot lower what a later batch recorded.

A feed records where its batch *ends*, in a statement of its own once it has applied the batch.

The other way round, each offset a stage or a feed commits says in its metadata what its batch's
row says (``applied``: a stage's first offsets, a feed's ends), once the database holds that row:
a stage records it in its batch's transaction, or in a statement of its own for a batch that
opened none, before its Kafka transaction commits (below a restore's mark the commit carries the
mark alone); a feed before its acknowledgement. So while the database is whole, its row of every
partition is at or past what the group's committed offset says. A service checks that at start
(``yidi.platform.recover.behind``): a database restored without ``yidi-recover``, or a Postgres that
lost its last commits, is behind, and the service stops before it handles anything on it.

While it runs, a stage or a feed also keeps what it recorded for each partition (``hold``), or what
the partition's committed offset said when the service started or the stage or feed first read it
(``hold_at_least``), and the statement that records a batch's row first checks that the row still
holds at least that (rows never go back while the database is whole); a feed checks before it
applies its batch, and the service checks everything held every ``CHECK_SECONDS``. A row below
it, or gone, is a database that went back under the running service (a failover to a replica that
was behind, a restore while it ran). The statement raises (``stage_progress_went_back``, migration
``platform_002``), the batch's transaction is rolled back, nothing of it is committed to Kafka, and the service stops
(``DatabaseWentBack``); its check at the next start refuses until ``yidi-recover`` has run.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
TABLE = "stage_progress"
MARK_PREFIX = "yidi-restore answered-to="
_MARK = re.compile(re.escape(MARK_PREFIX) + r"(\d+)")
APPLIED_PREFIX = "yidi-progress applied-below="
_APPLIED = re.compile(re.escape(APPLIED_PREFIX) + r"(\d+)")
# The function a batch's check calls where a row went back (migration platform_002), and the
# SQLSTATE it raises (yidi.platform.db.transient_errors makes it DatabaseWentBack).
WENT_BACK = "stage_progress_went_back"
WENT_BACK_SQLSTATE = "YB001"
# How often a service checks every row its stages and feeds hold (``Service``), so that a partition
# without traffic, and a service whose only reader of a database is a stage that records nothing
# (eligibility's settlement stage), find a database that went back too.
CHECK_SECONDS = 10.0


_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _literal(text: str) -> str:
    """``text`` (a topic's or a group's name) as an SQL string literal: only the characters Kafka
    allows in a topic's name, which need no escaping whatever the server's settings."""
    if not _NAME.fullmatch(text):
        raise ValueError(f"a topic or group name of other characters than letters, digits, '.', '_' and '-' "
                         f"cannot be recorded: {text!r}")
    return f"'{text}'"


@dataclass(eq=False)
class Progress:
    """What a batch of ``group`` says the database holds: ``{(topic, partition): an offset below
    which every record is in it}`` (a stage's batch: its first offsets, ``began``; a feed's, once
    applied: its ends, ``reached``), recorded by each transaction the batch opens in the
    ``stage_progress`` table of its repository's schema (one that another of the batch's follows:
    ``before_last``); ``recorded`` once one of them has committed.
    ``held``: what the service has seen those rows hold (its earlier batches' records, ``hold``, or
    its committed offsets' claims, ``hold_committed``), for those of the batch's partitions it has
    seen anything of: the rows must still hold at least that."""

    group: str
    below: Mapping[tuple[str, int], int]
    recorded: bool = False
    held: Mapping[tuple[str, int], int] = field(default_factory=dict)
    # A stage's batch: where it ends on each partition (its last offset + 1), recorded beside
    # ``below`` as the row's ``reached`` (migration platform_003): where the stage stood once the
    # batch committed. Clearing's close of a month reads its settlement stage's (``period_cuts``).
    ends: Mapping[tuple[str, int], int] = field(default_factory=dict)

    def before_last(self) -> Progress:
        """What a transaction of the batch that another of its transactions follows records
        (clearing's close of a month, before the batch's transaction runs the month): every record
        before the one before the batch's first, with the same check. A Postgres that kept it but
        lost the later transaction (a failover to a replica that was behind) holds a row below what
        the batch recorded, and so below what the stage holds then: the check finds it. A backup
        taken between the two has the group read again from one record earlier (the handlers'
        idempotence passes over it). A partition whose batch begins at 0 is not recorded: its row is
        missing then, which the check finds too."""
        return Progress(self.group, {tp: offset - 1 for tp, offset in self.below.items() if offset > 0},
                        held=self.held)  # no ``ends``: the batch's last transaction records them

    def sql(self, schema: str) -> str:
        """The upsert into ``schema``'s table, as statements of a simple query (they travel with
        BEGIN: no round trip of their own): first, where anything is ``held``, the check that raises
        if a row went back (a look-up by primary key per partition, returning no row while the
        database is whole); then the upsert, partitions in order, so two batches never wait on
        each other's rows in a circle."""
        if not self.below:
            return ""
        group = _literal(self.group)
        rows = ", ".join(f"({group}, {_literal(topic)}, {int(partition)}, {int(offset)}, {self._end(topic, partition)})"
                         for (topic, partition), offset in sorted(self.below.items()))
        # GREATEST passes over a NULL: a transaction without ``ends`` leaves ``reached`` as it is.
        upsert = (f'INSERT INTO "{schema}".{TABLE} AS p (consumer_group, topic, kafka_partition, applied_below, reached) '
                  f"VALUES {rows} ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE "
                  "SET applied_below = GREATEST(p.applied_below, EXCLUDED.applied_below), "
                  "reached = GREATEST(p.reached, EXCLUDED.reached), updated_at = now()")
        check = self.check_sql(schema)
        return f"{check}; {upsert}" if check else upsert

    def _end(self, topic: str, partition: int) -> str:
        end = self.ends.get((topic, partition))
        return "NULL::bigint" if end is None else str(int(end))

    def check_sql(self, schema: str) -> str:
        """The check alone (``sql``'s first statement; "" where nothing is ``held``): it raises if a
        row of ``held``'s partitions is below it, or gone, and returns no row otherwise. A feed runs
        it before applying its batch, and each service every ``CHECK_SECONDS`` for all it holds."""
        if not self.held:
            return ""
        group = _literal(self.group)
        held = ", ".join(f"({_literal(topic)}, {int(partition)}, {int(offset)}::bigint)"
                         for (topic, partition), offset in sorted(self.held.items()))
        return (f'SELECT "{schema}".{WENT_BACK}({group}, e.topic, e.kafka_partition, p.applied_below, e.held) '
                f"FROM (VALUES {held}) AS e (topic, kafka_partition, held) "
                f'LEFT JOIN "{schema}".{TABLE} AS p ON p.consumer_group = {group} AND p.topic = e.topic '
                "AND p.kafka_partition = e.kafka_partition WHERE p.applied_below IS NULL OR p.applied_below < e.held")


# The batch whose transactions record their progress: set by a stage or a feed around its handler
# (tasks the handler starts inherit it; ``Purge`` clears it for its own).
BATCH: ContextVar[Progress | None] = ContextVar("yidi_batch_progress", default=None)


# Set by a stage around its handler for a batch answered before a restore (below its marks): a
# handler whose decisions depend on the clock judges such a record by its own time, as it was
# judged then (clearing's month runs: "has not ended" then must not close the month now).
RESTORED: ContextVar[bool] = ContextVar("yidi_batch_restored", default=False)


@contextlib.contextmanager
def _set(var: ContextVar[T], value: T) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def restored(flag: bool) -> contextlib.AbstractContextManager[None]:
    """Handle the block's batch as one answered before a restore (``RESTORED``)."""
    return _set(RESTORED, flag)


def batch(progress: Progress | None) -> contextlib.AbstractContextManager[None]:
    """Record ``progress`` in every transaction opened inside the block (None: record nothing)."""
    return _set(BATCH, progress)


def began(group: str, records: Iterator[tuple[str, int, int]] | list[tuple[str, int, int]],
          held: Mapping[tuple[str, int], int] | None = None) -> Progress:
    """The progress of a batch of ``records`` (topic, partition, offset): each partition's first
    offset, and where it ends (``ends``); checked against what its stage ``held`` (``hold``)."""
    records = list(records)
    first = firsts(records)
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in records:
        if offset + 1 > ends.get((topic, partition), -1):
            ends[(topic, partition)] = offset + 1
    return Progress(group, first, held=_held(first, held), ends=ends)


def firsts(records: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """Each partition's first offset among ``records`` (topic, partition, offset)."""
    first: dict[tuple[str, int], int] = {}
    for topic, partition, offset in records:
        key = (topic, partition)
        if key not in first or offset < first[key]:
            first[key] = offset
    return first


def reached(group: str, records: list[tuple[str, int, int]],
            held: Mapping[tuple[str, int], int] | None = None) -> Progress:
    """Where a batch of ``records`` (topic, partition, offset) ends: each partition's last offset + 1
    (a feed records it once the batch is applied); checked against what its feed ``held``."""
    last: dict[tuple[str, int], int] = {}
    for topic, partition, offset in records:
        last[(topic, partition)] = max(last.get((topic, partition), -1), offset + 1)
    return Progress(group, last, held=_held(last, held))


def _held(below: Mapping[tuple[str, int], int], held: Mapping[tuple[str, int], int] | None
          ) -> dict[tuple[str, int], int]:
    return {key: held[key] for key in below if key in held} if held else {}


def hold(held: dict[tuple[str, int], int], batch: Progress) -> None:
    """Keep what ``batch`` recorded, once it has (``recorded``), in its stage's or feed's ``held``:
    the rows of its partitions hold at least that from now on, whichever instance writes them next
    (a row never goes back), so a later batch's check against it never fails on a whole database,
    however the partitions move between instances meanwhile."""
    if batch.recorded:
        for key, offset in batch.below.items():
            hold_at_least(held, key, offset)


def hold_committed(held: dict[tuple[str, int], int], committed: Mapping[Any, Any]) -> None:
    """``held`` raised to what each committed offset of ``committed`` (a TopicPartition's
    OffsetAndMetadata, or None) says the row held when it was committed (``applied_below``); an
    offset without that claim adds nothing. A stage's partitions as they are assigned, a feed's at
    their first batch since its group's last rebalance."""
    for tp, found in committed.items():
        if (vouched := applied_below(getattr(found, "metadata", None))) is not None:
            hold_at_least(held, (tp.topic, tp.partition), vouched)


def hold_at_least(held: dict[tuple[str, int], int], key: tuple[str, int], offset: int) -> None:
    """``held`` of a partition raised to ``offset``: what its batch recorded, or what a committed offset
    read as it was assigned says (``applied_below``: the row held that when it was committed), so
    that a partition's first batch in this instance is checked too, as the check at start would."""
    if offset > held.get(key, -1):
        held[key] = offset


def mark(answered_to: int) -> str:
    """The committed offset's metadata that says the records below ``answered_to`` were answered."""
    return f"{MARK_PREFIX}{answered_to}"


def applied(below: int) -> str:
    """The committed offset's metadata that says the database held every record before ``below``
    when it was committed (a stage's or a feed's, after its batch's row was recorded)."""
    return f"{APPLIED_PREFIX}{below}"


def answered_to(metadata: str | None) -> int | None:
    """The mark in a committed offset's metadata (``mark``), or None."""
    found = _MARK.fullmatch(metadata or "")
    return int(found.group(1)) if found else None


def applied_below(metadata: str | None) -> int | None:
    """Where the database held the partition's records up to when the offset was committed
    (``applied``), or None: an offset committed by hand, by ``yidi-recover``, below a restore's mark
    (which a commit carries alone, as the versions before 2026-12-07 session 42 read it), or before
    that version."""
    found = _APPLIED.fullmatch(metadata or "")
    return int(found.group(1)) if found else None
