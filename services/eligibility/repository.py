"""Eligibility's SQL: mirrors of persons, filings, facilities and outages (schema ``eligibility``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from yidi.contracts.filing import FilingRecord
from yidi.contracts.refdata import FacilityRecord, PersonRecord
from yidi.domain.eligibility import Outage
from yidi.platform.db import Repository, json_value, lock_keys, transient_errors
from yidi.platform.feeds import Sent

log = logging.getLogger(__name__)

Subject = tuple[int, dict[str, Any]]  # (version, {"person": {...} | None, "filings": [...]})

_SUBJECTS = """
SELECT s.psn_no,
       p.record AS person,
       p.insured_before AS before,
       coalesce(p.version, 0) AS pv,
       coalesce((SELECT jsonb_agg(f.record ORDER BY f.filing_id) FROM eligibility.filings f WHERE f.psn_no = s.psn_no), '[]'::jsonb) AS filings,
       coalesce((SELECT max(f.version) FROM eligibility.filings f WHERE f.psn_no = s.psn_no), 0) AS fv
FROM unnest($1::text[]) AS s(psn_no)
LEFT JOIN eligibility.persons p ON p.psn_no = s.psn_no
"""


async def _lock_person(conn: asyncpg.Connection, psn_no: str) -> None:
    """Changes to one person's insurance and filings take turns, so the version the cache
    compares always comes with the content it versions."""
    await lock_keys(conn, "yidi-eligibility", [psn_no])


async def _lock_persons(conn: asyncpg.Connection, psn_nos: list[str]) -> None:
    """``_lock_person`` for many persons (the same lock keys), in the order of the keys."""
    await lock_keys(conn, "yidi-eligibility", psn_nos)


@dataclass
class _ReferenceCopy:
    """Facilities and outage windows as last read, for ``ttl`` seconds (``EligibilityRepository``).
    ``generation`` moves on each change applied here: a read begun before it is not kept."""

    ttl: float
    clock: Callable[[], float]
    generation: int = 0
    facilities: dict[str, tuple[float, FacilityRecord | None]] = field(default_factory=dict)
    outages: list[Outage] | None = None
    outages_until: float = 0.0
    limit: int = 100_000  # facilities kept (a national platform has some hundred thousand)

    def changed(self) -> None:
        self.generation += 1


def _subject(row: Any) -> dict[str, Any]:
    subject = {"person": json_value(row["person"]), "filings": json_value(row["filings"])}
    if row["before"] is not None:  # the key only where there is one: cached entries stay as they were
        subject["before"] = json_value(row["before"])
    return subject


def _insurance(record: dict[str, Any]) -> tuple[Any, Any, bool]:
    """What a change of which ends the insurance a stay was admitted under: region, fund, active."""
    return record.get("insuplc_admdvs"), record.get("insutype"), bool(record.get("active", True))


def fold_insurance(held: dict[str, Any] | None, since: datetime | None, before: Any, record: dict[str, Any],
                   changed: datetime) -> tuple[Any, datetime | None]:
    """A person's ``insured_before`` and ``insured_since`` once ``record`` (as stored) applies over
    ``held`` (the record held, None for a person not seen yet; its insurance held ``since``). A
    record that changes the insurance (region, fund or active) changes it at ``changed``: the
    record's time (``updated_at``), or without one when it was published (as filing dates the
    change). The new insurance begins then, and the one it ends, if active, is kept with its days.
    Otherwise both stay: a stopped insurance that resumes, or moves while stopped, keeps the one
    held before the stop. The first record of a person changes nothing: insured since before the
    platform knew."""
    if held is None or _insurance(held) == _insurance(record):
        return before, since
    if held.get("active", True):
        before = {"record": held, "since": since.isoformat() if since else None, "until": changed.isoformat()}
    return before, changed


class EligibilityRepository(Repository):
    """``reference_ttl``: how long the facilities and outage windows read serve later batches
    (Settings.reference_cache_seconds; 0, the default here, reads them for every batch)."""

    schema = "eligibility"

    def __init__(self, pool: asyncpg.Pool, *, reference_ttl: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(pool)
        self._reference = _ReferenceCopy(reference_ttl, clock)

    async def subjects(self, psn_nos: list[str], conn: asyncpg.Connection | None = None) -> dict[str, Subject]:
        """Each person's insurance and filings, with the version the cache compares."""
        async with transient_errors():
            if conn is None:
                rows = await self._pool.fetch(_SUBJECTS, psn_nos)
            else:
                rows = await conn.fetch(_SUBJECTS, psn_nos)
        return {
            r["psn_no"]: (
                max(r["pv"], r["fv"]),
                _subject(r),
            )
            for r in rows
        }

    async def upsert_person(self, record: PersonRecord, sent: Sent | None = None) -> tuple[Subject, int]:
        """``upsert_persons`` of one record."""
        subjects, stale = await self.upsert_persons([record], None if sent is None else [sent])
        return subjects[record.psn_no], stale

    async def upsert_persons(self, records: list[PersonRecord],
                             sent: list[Sent] | None = None) -> tuple[dict[str, Subject], int]:
        """Apply a feed batch in one transaction and return the subject of every person it names,
        with the number of records ignored as stale. ``sent``: where and when each record was
        published (its Kafka timestamp is the time of a change of insurance by a record without
        ``updated_at``; default now). A record at or before the one last applied for its person on
        the same partition was applied already (the batch is read again after its commit failed)
        and is passed over: folded again over what came after it, it moved ``insured_since``.

        Of each person's records the newest wins, by the region's time (``updated_at``): a record
        older than the newest time held for that person is ignored (a region that reloads an
        earlier file does not bring back an earlier balance or status). A record without a time
        applies in arrival order and keeps the time held, so an older timed record after it is
        still ignored. Each applied record gets a new version, in the batch's order. The result,
        and the stale count, are those of applying the records one by one: the batch is folded
        here over the times held, read under the persons' locks (``fold_insurance`` too)."""
        named = list(dict.fromkeys(r.psn_no for r in records))
        now = datetime.now(UTC)
        async with self.transaction() as conn:
            # The persons' locks in a fixed order (no deadlock with another batch or a filing).
            await _lock_persons(conn, named)
            rows = await conn.fetch(
                "SELECT psn_no, source_time, record, insured_before, insured_since, seen_partition, seen_offset "
                "FROM eligibility.persons WHERE psn_no = ANY($1::text[])", named)
            held: dict[str, datetime] = {r["psn_no"]: r["source_time"] for r in rows if r["source_time"] is not None}
            # Each person's record, insurance before and since, and last record applied, as the fold stands.
            current: dict[str, Any] = {r["psn_no"]: json_value(r["record"]) for r in rows}
            before: dict[str, Any] = {r["psn_no"]: json_value(r["insured_before"]) for r in rows}
            since: dict[str, datetime | None] = {r["psn_no"]: r["insured_since"] for r in rows}
            seen: dict[str, tuple[int | None, int | None]] = {r["psn_no"]: (r["seen_partition"], r["seen_offset"])
                                                              for r in rows}
            latest: dict[str, PersonRecord] = {}
            stale = 0
            for record, where in zip(records, sent or [None] * len(records), strict=True):
                psn = record.psn_no
                last_partition, last_offset = seen.get(psn, (None, None))
                if where is not None and where.partition == last_partition and last_offset is not None \
                        and where.offset <= last_offset:
                    continue  # applied already
                moment, newest = record.source_time, held.get(psn)
                if moment is not None and newest is not None and moment < newest:
                    stale += 1
                    continue
                if moment is not None:
                    held[psn] = moment
                stored = record.model_dump(mode="json")
                changed = moment or (where.at if where is not None else now)
                before[psn], since[psn] = fold_insurance(current.get(psn), since.get(psn), before.get(psn), stored, changed)
                current[psn] = stored
                if where is not None:
                    seen[psn] = (where.partition, where.offset)
                latest.pop(psn, None)
                latest[psn] = record  # re-inserted: ordered by each person's last record
            if latest:
                psn_nos = list(latest)
                await conn.execute(
                    """INSERT INTO eligibility.persons AS p (psn_no, record, version, source_time, insured_before,
                                                             insured_since, seen_partition, seen_offset)
                       SELECT u.p, u.r::jsonb, nextval('eligibility.change_seq'), u.h, u.b::jsonb, u.s, u.sp, u.so
                       FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[],
                                   $6::integer[], $7::bigint[])
                            WITH ORDINALITY AS u(p, r, h, b, s, sp, so, n)
                       ORDER BY u.n
                       ON CONFLICT (psn_no) DO UPDATE
                       SET record = EXCLUDED.record, version = EXCLUDED.version, updated_at = now(),
                           source_time = GREATEST(p.source_time, EXCLUDED.source_time),
                           insured_before = EXCLUDED.insured_before, insured_since = EXCLUDED.insured_since,
                           seen_partition = EXCLUDED.seen_partition, seen_offset = EXCLUDED.seen_offset""",
                    psn_nos, [r.model_dump_json() for r in latest.values()], [held.get(psn) for psn in psn_nos],
                    [orjson.dumps(before[psn]).decode() if before.get(psn) is not None else None for psn in psn_nos],
                    [since.get(psn) for psn in psn_nos],
                    [seen.get(psn, (None, None))[0] for psn in psn_nos], [seen.get(psn, (None, None))[1] for psn in psn_nos],
                )
            return await self.subjects(named, conn), stale

    async def upsert_filing(self, record: FilingRecord) -> Subject | None:
        """Apply a filing event unless a newer version of that filing is already mirrored."""
        async with self.transaction() as conn:
            await _lock_person(conn, record.psn_no)
            status = await conn.execute(
                """INSERT INTO eligibility.filings (filing_id, psn_no, record, filing_version, version)
                   VALUES ($1, $2, $3::jsonb, $4, nextval('eligibility.change_seq'))
                   ON CONFLICT (filing_id) DO UPDATE
                   SET record = EXCLUDED.record, filing_version = EXCLUDED.filing_version,
                       version = EXCLUDED.version, updated_at = now()
                   WHERE eligibility.filings.filing_version < EXCLUDED.filing_version""",
                record.filing_id,
                record.psn_no,
                record.model_dump_json(),
                record.version,
            )
            if status.endswith(" 0"):
                return None
            return (await self.subjects([record.psn_no], conn))[record.psn_no]

    async def upsert_filings(self, records: list[FilingRecord]) -> dict[str, Subject]:
        """``upsert_filing`` for a batch of filing events in one transaction (per filing the
        highest version of the batch, and only over an older mirrored one); returns the subject of
        every person the batch names, changed now or by an earlier run of the same batch."""
        newest: dict[str, FilingRecord] = {}
        for record in records:
            kept = newest.get(record.filing_id)
            if kept is None or record.version >= kept.version:
                newest.pop(record.filing_id, None)
                newest[record.filing_id] = record
        rows = list(newest.values())
        psn_nos = sorted({r.psn_no for r in rows})
        async with self.transaction() as conn:
            await _lock_persons(conn, psn_nos)
            await conn.execute(
                """INSERT INTO eligibility.filings AS f (filing_id, psn_no, record, filing_version, version)
                   SELECT i, p, r::jsonb, v, nextval('eligibility.change_seq')
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) WITH ORDINALITY AS u(i, p, r, v, n)
                   ORDER BY n
                   ON CONFLICT (filing_id) DO UPDATE
                   SET record = EXCLUDED.record, filing_version = EXCLUDED.filing_version,
                       version = EXCLUDED.version, updated_at = now()
                   WHERE f.filing_version < EXCLUDED.filing_version""",
                [r.filing_id for r in rows], [r.psn_no for r in rows], [r.model_dump_json() for r in rows],
                [r.version for r in rows],
            )
            return await self.subjects(psn_nos, conn)

    async def facilities(self, codes: list[str]) -> dict[str, FacilityRecord]:
        """The facilities of ``codes`` that are known (a code unknown is left out), through the
        in-process copy when it serves (``reference_ttl``): only the codes it lacks, or holds
        longer than that, are read."""
        copy = self._reference
        if not copy.ttl:
            return await self._read_facilities(codes)
        now, generation = copy.clock(), copy.generation
        found: dict[str, FacilityRecord] = {}
        missing: list[str] = []
        for code in codes:
            held = copy.facilities.get(code)
            if held is None or held[0] <= now:
                missing.append(code)
            elif held[1] is not None:
                found[code] = held[1]
        if missing:
            read = await self._read_facilities(missing)
            found.update(read)
            if generation == copy.generation:
                if len(copy.facilities) + len(missing) > copy.limit:
                    # Expired entries go first; all of them if that is not enough.
                    copy.facilities = {c: held for c, held in copy.facilities.items() if held[0] > now}
                    if len(copy.facilities) + len(missing) > copy.limit:
                        copy.facilities.clear()
                until = now + copy.ttl
                for code in missing:
                    copy.facilities[code] = (until, read.get(code))
        return found

    async def _read_facilities(self, codes: list[str]) -> dict[str, FacilityRecord]:
        async with transient_errors():
            rows = await self._pool.fetch(
                "SELECT record FROM eligibility.facilities WHERE fixmedins_code = ANY($1::text[])", codes
            )
        found: dict[str, FacilityRecord] = {}
        for r in rows:
            try:
                facility = FacilityRecord.model_validate(json_value(r["record"]))
            except ValidationError as exc:
                # A record stored by an earlier version that this one refuses (e.g. an area code in
                # full-width digits, taken before 2026-12-04): the facility is unknown to this
                # version, its requests refused UNKNOWN_FACILITY; raising here stopped the stage.
                log.error("eligibility: stored facility record cannot be read, treated as unknown: %s", exc)
                continue
            found[facility.fixmedins_code] = facility
        return found

    async def upsert_facilities(self, records: list[FacilityRecord]) -> None:
        """A feed batch of facilities in one statement (a region's file is thousands of them; one
        statement each took seconds). Of a code's records the last wins, as applied one by one."""
        last = {r.fixmedins_code: r for r in records}
        async with transient_errors():
            await self._pool.execute(
                """INSERT INTO eligibility.facilities (fixmedins_code, record)
                   SELECT code, record::jsonb FROM unnest($1::text[], $2::text[]) AS t(code, record)
                   ON CONFLICT (fixmedins_code) DO UPDATE SET record = EXCLUDED.record, updated_at = now()""",
                list(last),
                [r.model_dump_json() for r in last.values()],
            )
        # After the write: a read begun before it is not kept (it may have missed the change).
        for code in last:
            self._reference.facilities.pop(code, None)
        self._reference.changed()

    async def upsert_facility(self, record: FacilityRecord) -> None:
        await self.upsert_facilities([record])

    async def outages(self, regions: list[str], now: datetime) -> list[Outage]:
        """The windows of ``regions`` not cancelled that have not ended at ``now``; through the
        in-process copy of every such window when it serves (``reference_ttl``)."""
        copy = self._reference
        if not copy.ttl:
            return await self._read_outages(regions, now)
        held = copy.outages
        if held is None or copy.outages_until <= copy.clock():
            started, generation = copy.clock(), copy.generation
            held = await self._read_outages(None, now)
            if generation == copy.generation:
                copy.outages, copy.outages_until = held, started + copy.ttl
        wanted = set(regions)
        return [o for o in held if o.region in wanted and o.end > now]

    async def _read_outages(self, regions: list[str] | None, now: datetime) -> list[Outage]:
        """The windows of ``regions`` (None: of every region) not cancelled that end after ``now``."""
        async with transient_errors():
            if regions is None:
                rows = await self._pool.fetch(
                    """SELECT admdvs, starts_at, ends_at, reason FROM eligibility.outages
                       WHERE NOT cancelled AND ends_at > $1""", now)
            else:
                rows = await self._pool.fetch(
                    """SELECT admdvs, starts_at, ends_at, reason FROM eligibility.outages
                       WHERE admdvs = ANY($1::text[]) AND NOT cancelled AND ends_at > $2""", regions, now)
        return [Outage(r["admdvs"], r["starts_at"], r["ends_at"], r["reason"]) for r in rows]

    async def upsert_outage(
        self, status_id: str, admdvs: str, starts_at: datetime, ends_at: datetime, reason: str, cancelled: bool
    ) -> None:
        """A window published again replaces the one held, but a cancelled window stays cancelled:
        a region reloading an earlier file must not stop settlements again (a window announced
        again takes a new ``status_id``). A ``status_id`` another region's window holds is refused
        (``ValueError``: the feed dead-letters the record): taken as the same window, the other
        region's was moved away, or the new one stored already cancelled, and settlements went on
        through a real outage (a review, session 48)."""
        async with transient_errors():
            held = await self._pool.fetchrow(
                """INSERT INTO eligibility.outages AS o (status_id, admdvs, starts_at, ends_at, reason, cancelled)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (status_id) DO UPDATE SET starts_at = EXCLUDED.starts_at,
                       ends_at = EXCLUDED.ends_at, reason = EXCLUDED.reason, cancelled = o.cancelled OR EXCLUDED.cancelled
                   WHERE o.admdvs = EXCLUDED.admdvs
                   RETURNING cancelled""",
                status_id, admdvs, starts_at, ends_at, reason, cancelled,
            )
            other = None if held is not None else await self._pool.fetchval(
                "SELECT admdvs FROM eligibility.outages WHERE status_id = $1", status_id)
        if held is None:
            raise ValueError(f"status_id {status_id} is region {other}'s window, not {admdvs}'s: each region's "
                             "windows take status_ids of their own (its code before them, say); nothing was changed")
        held = held["cancelled"]
        self._reference.outages = None  # after the write, as for a facility
        self._reference.changed()
        if held and not cancelled:
            log.warning("region status %s of %s was cancelled and stays so: publishing it again does not reopen it; "
                        "announce the window again under a new status_id", status_id, admdvs)

    async def all_outages(self, now: datetime) -> list[dict[str, Any]]:
        async with transient_errors():
            rows = await self._pool.fetch(
                "SELECT * FROM eligibility.outages WHERE NOT cancelled AND ends_at > $1 ORDER BY starts_at", now
            )
        return [dict(r) for r in rows]

    async def mark_stale(self, psn_nos: list[str]) -> None:
        """Mark the cache entries of ``psn_nos`` stale: their subjects changed, and Redis could be
        neither written nor cleared from here (``Subjects.remember_many``). In a fixed order (no
        deadlock between two batches marking the same persons); a mark a sweep holds is made again
        once the sweep has removed it."""
        async with transient_errors():
            await self._pool.execute(
                """INSERT INTO eligibility.cache_stale (psn_no, marked_at)
                   SELECT p, clock_timestamp() FROM unnest($1::text[]) AS p ORDER BY p
                   ON CONFLICT (psn_no) DO UPDATE SET marked_at = clock_timestamp()""",
                sorted(set(psn_nos)),
            )

    async def sweep_stale(
        self, limit: int, ttl_seconds: float, drop: Callable[[dict[str, int]], Awaitable[bool]], *, wait: bool = False,
    ) -> tuple[int, bool, float]:
        """One sweep of the marks (``mark_stale``), in a short transaction: marks older than the
        cache's TTL go (their entries have expired); the oldest ``limit`` others, locked, are
        dropped from Redis by ``drop`` (given each person's version now: ``VersionedCache.drop``)
        and removed. Locked ``SKIP LOCKED`` (instances share the work), or, ``wait``, waiting for other sweeps to finish with theirs (so that none found
        means none left). A mark made again meanwhile waits for this transaction and then stays.
        Returns (marks dropped, whether Redis could not be reached, age in seconds of the oldest
        mark left: 0 for none)."""
        async with self.transaction() as conn:
            await conn.execute(
                "DELETE FROM eligibility.cache_stale WHERE marked_at < clock_timestamp() - make_interval(secs => $1)",
                float(ttl_seconds),
            )
            keys = [r["psn_no"] for r in await conn.fetch(
                "SELECT psn_no FROM eligibility.cache_stale ORDER BY marked_at LIMIT $1 FOR UPDATE"
                + ("" if wait else " SKIP LOCKED"), limit)]
            # Each person's version now: their entry is forgotten as of it, so that a read-through
            # that read Postgres before their change cannot write the old subject back after it.
            # Read in a statement of its own, after the locks: a mark made again while this sweep
            # waited for it was made after its change committed, and only a snapshot taken after
            # the lock sees that change (the locking statement's own snapshot is older).
            marked = {psn: version for psn, (version, _) in (await self.subjects(keys, conn)).items()} if keys else {}
            unreachable = bool(keys) and not await drop(marked)
            if keys and not unreachable:
                await conn.execute("DELETE FROM eligibility.cache_stale WHERE psn_no = ANY($1::text[])", keys)
            oldest = await conn.fetchval(
                "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(marked_at)), 0) FROM eligibility.cache_stale")
        return (0 if unreachable else len(keys)), unreachable, float(oldest)
