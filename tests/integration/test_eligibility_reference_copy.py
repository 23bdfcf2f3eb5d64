"""Eligibility's in-process copy of facilities and outage windows, on the real Postgres.

Every settlement batch read the facilities it names and its regions' outage windows from
Postgres: two queries per batch for data that changes a few times a day. The repository now
keeps what it read for ``reference_ttl`` seconds (Settings.reference_cache_seconds). A change
this instance applies from its feed takes effect at once; one written by another instance, when
the copy is that old.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from yidi.contracts.refdata import FacilityRecord
from yidi.platform.db import create_pool, migrate

from services.eligibility.repository import EligibilityRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration

# A region no other test settles in (the session's database is shared; see test_region_status_query).
REGION = "994000"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def copy(settings):
    """(pool, a repository keeping its copy for 5 s on a clock of the test's, that clock)."""
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        clock = Clock()
        yield pool, EligibilityRepository(pool, reference_ttl=5.0, clock=clock), clock
    finally:
        await pool.close()


def _facility(code: str, name: str) -> FacilityRecord:
    return FacilityRecord(fixmedins_code=code, fixmedins_name=name, admdvs="110105", level=3, med_types=["11"])


async def test_facilities_are_read_once_per_ttl_and_a_change_applied_here_at_once(copy):
    pool, repo, clock = copy
    code, unknown = unique("H"), unique("H")
    try:
        await repo.upsert_facility(_facility(code, "first"))
        assert {c: f.fixmedins_name for c, f in (await repo.facilities([code, unknown])).items()} == {code: "first"}
        # Written by another instance (straight into the table): this one serves its copy ...
        await pool.execute("UPDATE eligibility.facilities SET record = jsonb_set(record, '{fixmedins_name}', "
                           "'\"second\"') WHERE fixmedins_code = $1", code)
        await pool.execute("INSERT INTO eligibility.facilities (fixmedins_code, record) VALUES ($1, $2::jsonb)",
                           unknown, _facility(unknown, "new").model_dump_json())
        clock.now += 4.9
        assert {c: f.fixmedins_name for c, f in (await repo.facilities([code, unknown])).items()} == {code: "first"}
        # ... until it is ttl old: then both are read again, the unknown one found.
        clock.now += 0.2
        assert {c: f.fixmedins_name for c, f in (await repo.facilities([code, unknown])).items()} == {
            code: "second", unknown: "new"}
        # A change this instance applies (its feed) takes effect at once.
        await repo.upsert_facility(_facility(code, "third"))
        assert (await repo.facilities([code]))[code].fixmedins_name == "third"
        # Without a ttl every call reads.
        direct = EligibilityRepository(pool)
        await pool.execute("UPDATE eligibility.facilities SET record = jsonb_set(record, '{fixmedins_name}', "
                           "'\"fourth\"') WHERE fixmedins_code = $1", code)
        assert (await direct.facilities([code]))[code].fixmedins_name == "fourth"
    finally:
        await pool.execute("DELETE FROM eligibility.facilities WHERE fixmedins_code = ANY($1::text[])", [code, unknown])


async def test_outage_windows_are_read_once_per_ttl_and_a_change_applied_here_at_once(copy):
    pool, repo, clock = copy
    first, second = unique("S"), unique("S")
    try:
        now = datetime.now(UTC)
        assert await repo.outages([REGION], now) == []
        # Announced through this instance's feed: at once.
        await repo.upsert_outage(first, REGION, now - timedelta(minutes=1), now + timedelta(hours=1), "network", False)
        assert [o.reason for o in await repo.outages([REGION], now)] == ["network"]
        assert await repo.outages(["995000"], now) == []  # another region's batch
        # Written by another instance: seen when the copy is ttl old.
        await pool.execute("INSERT INTO eligibility.outages (status_id, admdvs, starts_at, ends_at, reason, cancelled) "
                           "VALUES ($1, $2, $3, $4, 'upgrade', false)", second, REGION, now, now + timedelta(hours=2))
        clock.now += 4.9
        assert [o.reason for o in await repo.outages([REGION], now)] == ["network"]
        clock.now += 0.2
        assert sorted(o.reason for o in await repo.outages([REGION], now)) == ["network", "upgrade"]
        # A window that ends meanwhile is left out without a read.
        later = now + timedelta(hours=1, minutes=30)
        assert [o.reason for o in await repo.outages([REGION], later)] == ["upgrade"]
        # Cancelled through this instance's feed: at once.
        await repo.upsert_outage(second, REGION, now, now + timedelta(hours=2), "upgrade", True)
        assert [o.reason for o in await repo.outages([REGION], now)] == ["network"]
    finally:
        await pool.execute("DELETE FROM eligibility.outages WHERE status_id = ANY($1::text[])", [first, second])


async def test_a_read_under_way_when_a_change_is_applied_is_not_kept(copy):
    """The copy read before a feed's change committed may lack it: it serves the batch that read
    it, but the next batch reads again."""
    pool, repo, _ = copy
    code = unique("H")
    try:
        await repo.upsert_facility(_facility(code, "before"))
        reading, release = asyncio.Event(), asyncio.Event()
        read = repo._read_facilities

        async def slow_read(codes: list[str]) -> dict[str, FacilityRecord]:
            found = await read(codes)  # the state before the change
            reading.set()
            await release.wait()
            return found

        repo._read_facilities = slow_read  # type: ignore[method-assign]
        batch = asyncio.ensure_future(repo.facilities([code]))
        await reading.wait()
        repo._read_facilities = read  # type: ignore[method-assign]
        await repo.upsert_facility(_facility(code, "after"))
        release.set()
        assert (await batch)[code].fixmedins_name == "before"
        assert (await repo.facilities([code]))[code].fixmedins_name == "after"
    finally:
        await pool.execute("DELETE FROM eligibility.facilities WHERE fixmedins_code = $1", code)


async def test_the_copy_of_facilities_is_bounded_dropping_expired_entries_first(copy):
    _, repo, clock = copy
    codes = [unique("H") for _ in range(4)]
    repo._reference.limit = 3
    await repo.facilities(codes[:2])
    clock.now += 6  # both expired
    await repo.facilities(codes[2:])
    assert sorted(repo._reference.facilities) == sorted(codes[2:])  # the expired ones went, not all
    await repo.facilities(codes[:2])  # none expired, past the limit: the copy starts again
    assert sorted(repo._reference.facilities) == sorted(codes[:2])


async def test_a_feed_batch_of_facilities_is_one_statement_the_last_of_a_code_winning(copy):
    """The facilities feed applies a batch at once (a region's file is thousands of facilities):
    of a code sent twice in the batch the later record holds, as one by one; and the in-process
    copy forgets what the batch changed."""
    pool, repo, clock = copy
    first, second = unique("H"), unique("H")
    try:
        await repo.upsert_facility(_facility(first, "held"))
        assert (await repo.facilities([first]))[first].fixmedins_name == "held"  # in the copy now
        await repo.upsert_facilities([_facility(first, "older"), _facility(second, "new"), _facility(first, "newer")])
        assert {c: f.fixmedins_name for c, f in (await repo.facilities([first, second])).items()} == {
            first: "newer", second: "new"}
        stored = await pool.fetch("SELECT fixmedins_code, record->>'fixmedins_name' AS name FROM eligibility.facilities "
                                  "WHERE fixmedins_code = ANY($1::text[]) ORDER BY fixmedins_code", [first, second])
        assert {r["fixmedins_code"]: r["name"] for r in stored} == {first: "newer", second: "new"}
    finally:
        await pool.execute("DELETE FROM eligibility.facilities WHERE fixmedins_code = ANY($1::text[])", [first, second])
