"""``yidi-recover``: after a service's database was restored to an earlier point, move its consumer
groups back to where the restored database stood (yidi.platform.progress).

    yidi-recover pricing            # say what it would do (nothing is changed)
    yidi-recover pricing --apply    # do it: the service must be stopped, every instance

For each consumer group of the service, and each partition: the restored database's
``stage_progress`` says where its batches stood (every record before that offset is in it), and
the group's committed offset says how far it had answered. Where the database stands before the
committed offset, the group is moved back to the database's offset and its committed offset is kept
as a mark in the offset's metadata: the stage handles those records again without publishing
anything (they were answered before the restore), then goes on as always. A feed re-applies them
(its dead letters among them go out again, with their source's offset in ``yidi-dlq-source``).
Where the database is ahead (a batch whose Kafka commit had not landed), the group stays: the
stage handles that batch again as after any crash.

A partition the database has no row of (the group had handled nothing of it since the upgrade
that brought ``stage_progress`` when the backup was taken) is read again from its first record
still in Kafka, with the same mark. Eligibility's settlement stage keeps nothing in its database
(``GROUPS_WITHOUT_PROGRESS``): left as it is.

It refuses, changing nothing (exit status 2), when:
- the database has no ``stage_progress`` (a backup taken before that table existed: where it stood
  is unknown; runbook, "Restoring a service's database");
- a group has members (an instance of the service still runs);
- a partition's records from the database's offset are no longer in Kafka (retention deleted them:
  what the database lacks cannot be re-applied from Kafka);
- a partition has no committed offset (expired, or the group deleted), unless ``--answer-again``
  says to move it without a mark: what it had answered is then answered again.

For eligibility, ``--apply`` also drops its Redis cache's entries and tombstones (their versions
are newer than the restored database's).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from yidi.platform import fencing, progress
from yidi.platform.settings import Settings, settings_for
from yidi.platform.topics import CLEARING_PERIODS, FEED_READERS, FILING_EVENTS, GROUPS_WITHOUT_PROGRESS, feed_group

SERVICES = ("filing", "eligibility", "pricing", "clearing")
MIGRATION = "platform_001_stage_progress.sql"
# How long before the backup's known time a partition without a row is read again from: a record
# that came shortly before the backup may not have been handled by then.
NO_ROW_MARGIN = timedelta(minutes=10)
# How long the tool waits for a transaction holding the groups' offsets (a stopped instance's) to end.
STABLE_WAIT_SECONDS = 90.0
# How long a service's check at start asks again a broker that answers "not yet" (coordinators loading).
BEHIND_KAFKA_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Move:
    """What becomes of one partition of one group: moved back to ``to`` with the mark
    ``answered_to``, or left (``to`` None); ``problem``: why nothing may be done."""

    group: str
    tp: TopicPartition
    committed: int | None
    applied_below: int | None
    to: int | None = None
    answered_to: int | None = None
    why: str = ""
    problem: str = ""


def plan(group: str, rows: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, OffsetAndMetadata | None],
         first: Mapping[TopicPartition, int], *, answer_again: bool = False, records_progress: bool = True,
         since: Mapping[TopicPartition, int] | None = None, answers: bool = True,
         end: Mapping[TopicPartition, int] | None = None) -> list[Move]:
    """The moves of ``group``: ``rows`` its progress in the restored database, ``committed`` its
    committed offsets (with their metadata), ``first`` each partition's first offset still in Kafka.
    A partition the database has no row of (it handled nothing between the upgrade that brought
    ``stage_progress`` and the backup: a quiet stage) is read again from ``since`` (its first record
    from shortly before the time the backup is known to be at or after), or else its first record:
    what the database holds of it is passed over by the handlers' idempotence.
    ``answer_again``: a partition without a committed offset (expired, or the group deleted) is
    moved without a mark, and what it had answered is answered again; otherwise it is refused.
    ``records_progress`` False: a stage that keeps nothing in its database, left as it is.
    ``answers`` False: a feed, which answers no one: a partition without a committed offset is
    moved to the database's offset as if ``answer_again``. ``end``: each partition's end offset; a
    row past it is of a topic deleted and created again since the backup, and refused."""
    if not records_progress:
        return [Move(group, tp, c.offset if c is not None else None, None,
                     why="this stage keeps nothing in its database: left as it is")
                for tp, c in sorted(committed.items())]
    moves = []
    for tp in sorted(set(rows) | {tp for tp, c in committed.items() if c is not None and c.offset >= 0}):
        found = committed.get(tp)
        c = found.offset if found is not None and found.offset >= 0 else None
        # A recovery not finished (a second restore meanwhile): what was answered stays so.
        earlier = progress.answered_to(found.metadata if found is not None else None)
        answered = max((x for x in (c, earlier) if x is not None), default=None)
        held = rows.get(tp)
        r, why = held, ""
        if held is not None and end is not None and held > end.get(tp, held):
            # Rows never pass the records of their topic: this one counts another topic of the
            # same name. Kept, everything the new one brought since the backup would be skipped.
            moves.append(Move(group, tp, c, held, problem=f"the database's row is past the partition's end ({end[tp]}): "
                                                           "its topic was deleted and created again after the backup? "
                                                           "delete that topic's rows from the restored database "
                                                           "(runbook, Topics) and run the tool again"))
            continue
        if r is None:
            if since is not None and tp in since:
                r, why = since[tp], "no batch of this partition in the database: from shortly before the backup; "
            else:
                r, why = first.get(tp, 0), "no batch of this partition in the database: from its first record; "
            # Every batch the group recorded came after the backup, which has no row of it: one its
            # committed offset says began earlier than that guess (a stage that lagged over the
            # margin at the backup) is handled again too, or it would be lost, and the start check,
            # seeing the claim above the row it lacks, would refuse for ever.
            claimed = progress.applied_below(found.metadata if found is not None else None)
            if claimed is not None and claimed < r:
                r, why = claimed, ("no batch of this partition in the database: from where its committed offset says "
                                   "the database held every record; ")
        if r < first.get(tp, 0):
            moves.append(Move(group, tp, c, held, problem=f"records {r} to {first[tp] - 1} are no longer in Kafka "
                                                           "(retention): they cannot be applied again"))
        elif answered is None and not answer_again and answers:
            # Its offsets expired (the group empty past offsets.retention.minutes) or it was deleted.
            moves.append(Move(group, tp, c, held, problem="no committed offset: what the group had answered is unknown "
                                                        "(--answer-again moves it to the database's offset and "
                                                        "answers it again)"))
        elif answered is None:
            moves.append(Move(group, tp, c, held, to=r, why=why + (
                "no committed offset: from the database's, and what it had answered is answered again (--answer-again)"
                if answers else "no committed offset: a feed, which answers no one: from the database's")))
        elif r >= answered:
            moves.append(Move(group, tp, c, held, why=why + "the database holds every batch answered: left as it is"))
        else:
            moves.append(Move(group, tp, c, held, to=r, answered_to=answered,
                              why=why + f"{answered - r} record(s) handled again, publishing nothing"))
    return moves


class Refused(Exception):
    """The tool will not move anything: the reason is said, and the exit status is 2."""


@dataclass(frozen=True)
class Restored:
    """What the restored database says: each group's progress, and a time the backup was taken at
    or after (its newest progress row, or the upgrade that brought ``stage_progress``)."""

    rows: dict[str, dict[TopicPartition, int]]
    not_before: datetime | None


async def progress_rows(dsn: str, schema: str, prefix: str = "") -> Restored:
    """The restored database's ``stage_progress`` of ``schema``, by group (those named ``prefix…``)."""
    conn = await asyncpg.connect(dsn)
    try:
        restored = await _read_progress(conn, schema, prefix)
    finally:
        await conn.close()
    if restored is None:
        raise Refused(f"the database has no {schema}.{progress.TABLE}: it was backed up before "
                      "the services recorded their progress there, so where it stood is unknown (runbook, "
                      "\"Restoring a service's database\")")
    return restored


async def _read_progress(conn: asyncpg.Connection | asyncpg.Pool, schema: str, prefix: str) -> Restored | None:
    """``progress_rows`` over ``conn``; None when the database has no such table."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".{progress.TABLE}'):
        return None
    rows = await conn.fetch(f'SELECT consumer_group, topic, kafka_partition, applied_below, updated_at FROM '
                            f'"{schema}".{progress.TABLE} WHERE starts_with(consumer_group, $1)', prefix)
    upgraded = await conn.fetchval(f'SELECT applied_at FROM "{schema}".schema_migrations WHERE version = $1',
                                   MIGRATION)
    by_group: dict[str, dict[TopicPartition, int]] = {}
    for row in rows:
        by_group.setdefault(row["consumer_group"], {})[TopicPartition(row["topic"], row["kafka_partition"])] = \
            row["applied_below"]
    times = [t for t in (upgraded, *(row["updated_at"] for row in rows)) if t is not None]
    return Restored(by_group, max(times) if times else None)


class DatabaseBehind(Exception):
    """A service's database lacks batches its groups' committed offsets say it holds: restored
    without ``yidi-recover``, or a Postgres that lost its last commits. The service does not start."""


async def behind(settings: Settings, service: str, pool: asyncpg.Pool | None = None,
                 held: dict[str, dict[tuple[str, int], int]] | None = None,
                 marks: dict[str, dict[tuple[str, int], int]] | None = None) -> list[str]:
    """Where ``service``'s database stands behind its groups' committed offsets: each offset a stage
    or a feed commits says what its batch's row says (``progress.applied_below``), once the database
    holds that row, and a row never goes back, so a whole database is at or past every one of them. One line per
    partition behind; none when the database is whole (or the offsets say nothing: committed by
    hand, by this tool, or before this check existed). A database without ``stage_progress`` (a
    backup from before it, or an empty one) holds no row. Read through ``pool``, or a connection of
    its own.

    Kafka is read first: an instance still running commits only what its database holds already,
    so rows read after the offsets are at or past them, whatever it commits meanwhile.

    ``held``, per group: filled with what each offset said of a partition the database is not behind
    on (``progress.hold_at_least``), which the service's stages and feeds then check while it runs.
    ``marks``, per group: filled with each partition's restore mark (``progress.answered_to``: the
    records below it were applied before the database was restored, and are applied again now;
    ``CatchUp``)."""
    prefix = settings.group(f"yidi-{service}-")
    committed = await _committed_offsets(settings.kafka_bootstrap, prefix)
    groups = sorted(committed)
    if marks is not None:
        for g in groups:
            for tp, found in committed[g].items():
                if found is not None and (mark := progress.answered_to(found.metadata)) is not None:
                    marks.setdefault(g, {})[(tp.topic, tp.partition)] = mark
    vouched = {(g, tp): (found.offset, below) for g in groups for tp, found in sorted(committed[g].items())
               if found is not None and (below := progress.applied_below(found.metadata)) is not None}
    if not vouched:
        return []
    if pool is not None:
        restored = await _read_progress(pool, service, prefix)
    else:
        conn = await asyncpg.connect(settings.database_url)
        try:
            restored = await _read_progress(conn, service, prefix)
        finally:
            await conn.close()
    rows = restored.rows if restored is not None else {}
    lines = []
    for (g, tp), (offset, below) in vouched.items():
        row = rows.get(g, {}).get(tp)
        if row is not None and row >= below:
            if held is not None:
                progress.hold_at_least(held.setdefault(g, {}), (tp.topic, tp.partition), below)
            continue
        has = (f"holds only those before {row}" if row is not None else "has no row of it" if restored is not None
               else f"has no {service}.{progress.TABLE} at all (an empty database, or a backup from before it)")
        lines.append(f"{g} {tp.topic}[{tp.partition}]: its offset {offset} was committed once the database held "
                     f"every record before {below}; the database {has}")
    return lines


async def _committed_offsets(bootstrap: str, prefix: str, wait: float = BEHIND_KAFKA_WAIT_SECONDS
                             ) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
    """The committed offsets of every group named ``prefix…``. A broker that has just started answers
    "coordinator loading" for a while (retriable): asked again each second, for at most ``wait``."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            groups = sorted(g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix))
            return {g: await admin.list_consumer_group_offsets(g) for g in groups}
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or asyncio.get_running_loop().time() > deadline:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(1.0)


async def _group_states(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, tuple[str, int]]:
    """Each group's state and how many members it has. One group a request: aiokafka 0.14 cannot
    read Kafka 4.1's answer about several (a string read past its end)."""
    states: dict[str, tuple[str, int]] = {}
    for group in groups:
        for response in await admin.describe_consumer_groups([group]):
            for entry in response.groups:
                # DescribeGroups: error_code, group_id, group_state, protocol_type, protocol_data, members, ...
                states[entry[1]] = (entry[2], len(entry[5]))
    return states


async def make_plan(settings: Settings, service: str, *, answer_again: bool = False) -> list[Move]:
    prefix = settings.group(f"yidi-{service}-")
    # The namespace's own (a database may hold test namespaces' rows beside them).
    restored = await progress_rows(settings.database_url, service, prefix)
    rows = restored.rows
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        listed = {g[0] for g in await admin.list_consumer_groups()}
        groups = sorted({g for g in listed if g.startswith(prefix)} | set(rows))
        listed_offsets = {g: await admin.list_consumer_group_offsets(g) for g in groups}
        states = await _group_states(admin, groups)
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    moves: list[Move] = []
    # A topic deleted since (its group's rows and offsets left behind): nothing to apply from it.
    for g in groups:
        for tp in sorted(tp for tp in {*rows.get(g, {}), *listed_offsets[g]} if tp.topic not in topics):
            found = listed_offsets[g].pop(tp, None)
            moves.append(Move(g, tp, found.offset if found is not None else None, rows.get(g, {}).pop(tp, None),
                              why="the topic no longer exists: left as it is"))
    # Offsets a stopped instance's transaction was still committing are waited for (read stable).
    committed = {g: await _stable_offsets(settings, g, list(listed_offsets[g])) for g in groups}
    partitions = sorted({tp for g in groups for tp in (set(rows.get(g, {})) | set(committed[g]))})
    first: dict[TopicPartition, int] = {}
    since: dict[TopicPartition, int] = {}
    end: dict[TopicPartition, int] = {}
    if partitions:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            first = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
            if restored.not_before is not None:
                # A partition without a row handled nothing since the upgrade, up to the backup:
                # what it had came before the backup's time and was handled, or came after it.
                at_ms = int((restored.not_before - NO_ROW_MARGIN).timestamp() * 1000)
                found = await consumer.offsets_for_times({tp: at_ms for tp in partitions})
                since = {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in partitions}
        finally:
            await consumer.stop()
    without = {settings.group(g) for g in GROUPS_WITHOUT_PROGRESS}
    feeds = {settings.group(feed_group(reader, topic)) for topic, reader in FEED_READERS.items()
             if topic != FILING_EVENTS}  # eligibility reads filing.events with a stage, which answers
    for g in groups:
        state, members = states.get(g, ("Dead", 0))
        group_moves = plan(g, rows.get(g, {}), committed[g], first, answer_again=answer_again,
                           records_progress=g not in without, since=since, answers=g not in feeds, end=end)
        if members:
            group_moves = [Move(m.group, m.tp, m.committed, m.applied_below, problem=f"the group is {state} with "
                                f"{members} member(s): stop every instance of {service} first") for m in group_moves]
        moves += group_moves
    return moves


async def _stable_offsets(settings: Settings, group: str, partitions: list[TopicPartition]
                          ) -> dict[TopicPartition, OffsetAndMetadata]:
    """``group``'s committed offsets of ``partitions``, as they stand once no transaction holding
    offsets of them is in flight (OffsetFetch with require_stable, yidi.platform.fencing)."""
    if not partitions:
        return {}
    fencing.install()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        found = await asyncio.wait_for(consumer._coordinator.fetch_committed_offsets(set(partitions)),
                                       STABLE_WAIT_SECONDS)
    except TimeoutError as exc:
        raise Refused(f"{group}: a transaction holding its offsets is still open after {STABLE_WAIT_SECONDS:.0f} s "
                      "(an instance killed mid-commit: it ends at the transaction timeout); run yidi-recover again "
                      "then") from exc
    finally:
        await consumer.stop()
    return {tp: o for tp, o in found.items() if o is not None and o.offset >= 0}


async def apply(settings: Settings, moves: list[Move]) -> None:
    """Commit the moves, group by group (the groups must be empty: ``make_plan`` checked)."""
    by_group: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
    for m in moves:
        if m.to is not None:
            by_group.setdefault(m.group, {})[m.tp] = OffsetAndMetadata(
                m.to, progress.mark(m.answered_to) if m.answered_to is not None else "")
    for group, offsets in by_group.items():
        await commit_offsets(settings.kafka_bootstrap, group, offsets)
    # Read back what was committed: a commit the broker took otherwise is said, not assumed.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        for group, offsets in by_group.items():
            found = await admin.list_consumer_group_offsets(group, partitions=list(offsets))
            if wrong := sorted(f"{tp.topic}[{tp.partition}]" for tp, o in offsets.items() if found.get(tp) != o):
                raise Refused(f"{group}: the offsets read back differ from those committed on {', '.join(wrong)}: "
                              "run yidi-recover again (the marks already committed are kept)")
    finally:
        await admin.close()


async def commit_offsets(bootstrap: str, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
    """Commit ``offsets`` for ``group``, which must have no members (a stopped service's)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()


async def drop_cache(settings: Settings) -> int:
    """Eligibility's Redis entries and tombstones of the namespace (runbook, the cache)."""
    import redis.asyncio as redis

    client = redis.from_url(settings.redis_url)
    dropped = 0
    try:
        for pattern in (f"{settings.namespace}yidi:elig:*", f"{settings.namespace}yidi:elig-gone:*"):
            keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(keys), 1000):
                dropped += await client.unlink(*keys[i:i + 1000])
    finally:
        await client.aclose()
    return dropped


def describe(m: Move) -> str:
    held = "no row" if m.applied_below is None else m.applied_below
    where = f"{m.group} {m.tp.topic}[{m.tp.partition}]: committed {m.committed}, database {held}"
    if m.problem:
        return f"REFUSED {where}: {m.problem}"
    if m.to is None:
        return f"kept    {where}: {m.why}"
    mark = f", answered to {m.answered_to}" if m.answered_to is not None else ""
    return f"moved   {where} -> {m.to}{mark}: {m.why}"


async def run(service: str, do_apply: bool, settings: Settings | None = None, *, answer_again: bool = False) -> int:
    settings = settings or settings_for(service)
    try:
        return await _run(service, do_apply, settings, answer_again)
    except Refused as exc:
        print(f"yidi-recover: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"yidi-recover: Kafka: {exc!r} (a topic or partition gone since the backup? the broker away?)",
              file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"yidi-recover: Postgres or Kafka unreachable or refusing: {exc!r}", file=sys.stderr)
        return 2


async def _run(service: str, do_apply: bool, settings: Settings, answer_again: bool) -> int:
    moves = await make_plan(settings, service, answer_again=answer_again)
    for m in moves:
        print(describe(m))
    if problems := [m for m in moves if m.problem]:
        print(f"yidi-recover: {len(problems)} partition(s) refused; nothing changed", file=sys.stderr)
        return 2
    moving = [m for m in moves if m.to is not None]
    own = _own_part(service)
    if not do_apply:
        if own is not None:
            for line in await own(settings, False):
                print(line)
        print(f"yidi-recover: {len(moving)} partition(s) to move; run again with --apply to move them")
        return 0
    if own is not None:  # before the moves: refused, it changes nothing
        lines = await own(settings, True)
        for line in lines:
            print(line)
        print(f"yidi-recover: {len(lines)} month close(s) written from {settings.topic(CLEARING_PERIODS)}")
    await apply(settings, moves)
    print(f"yidi-recover: {len(moving)} partition(s) moved")
    if service == "eligibility":
        print(f"yidi-recover: {await drop_cache(settings)} cache key(s) dropped from Redis")
    return 0


# A service's own part of a restore, run before the moves (``apply``: write, or only say what it
# would; ``Refused`` before writing anything): clearing writes the months closed after the backup,
# with their cuts, so that its settlements handled again land where they did
# (services/clearing/restore.py).
OWN_PARTS = {"clearing": "services.clearing.restore:restore_closes"}


def _own_part(service: str) -> Callable[[Settings, bool], Awaitable[list[str]]] | None:
    if (where := OWN_PARTS.get(service)) is None:
        return None
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="yidi-recover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--apply", action="store_true", help="move the groups (the service must be stopped)")
    parser.add_argument("--answer-again", action="store_true",
                        help="move a partition without a committed offset too (its offsets expired, or its group was "
                             "deleted): what it had answered is answered again")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(run(args.service, args.apply, answer_again=args.answer_again)))


if __name__ == "__main__":
    main()
