"""The person feed applies the newest record of each person, by the region's time, on the real Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from yidi.contracts.refdata import FacilityRecord, PersonRecord
from yidi.platform.db import create_pool, migrate
from yidi.platform.feeds import Sent

from services.eligibility.repository import EligibilityRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "eligibility" / "migrations"


def _person(psn_no: str, balance: str, updated_at: str = "") -> PersonRecord:
    return PersonRecord(psn_no=psn_no, psn_name="Feed Test", insuplc_admdvs="330100", insutype="310",
                        psn_type="11", acct_balc=balance, acct_version=balance, updated_at=updated_at)


def _balance(subject: tuple[int, dict]) -> str:
    return subject[1]["person"]["acct_balc"]


async def test_a_record_older_than_the_one_held_is_ignored(settings):
    pool = await create_pool(settings.database_url, size=1)
    psn = unique("P")
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        repo = EligibilityRepository(pool)
        subjects, stale = await repo.upsert_persons([_person(psn, "500.00", "2026-03-02T09:00:00+08:00")])
        assert (_balance(subjects[psn]), stale) == ("500.00", 0)
        version = subjects[psn][0]
        # Yesterday's file reloaded: the older balance does not come back, nor does the version move.
        subject, stale = await repo.upsert_person(_person(psn, "900.00", "2026-03-01T09:00:00+08:00"))
        assert (_balance(subject), subject[0], stale) == ("500.00", version, 1)
        # A zone-less time is China time: 01:30 UTC is 09:30 in China, after 09:00 +08:00.
        subject, stale = await repo.upsert_person(_person(psn, "450.00", "2026-03-02 09:30:00"))
        assert (_balance(subject), stale) == ("450.00", 0)
        subject, stale = await repo.upsert_person(_person(psn, "440.00", "2026-03-02T01:29:00Z"))
        assert (_balance(subject), stale) == ("450.00", 1)
        # A record without a time applies in arrival order and keeps the time held: an older timed
        # record after it is still ignored (it used to clear the time, and the next record won).
        subject, stale = await repo.upsert_person(_person(psn, "300.00"))
        assert (_balance(subject), stale) == ("300.00", 0)
        subject, stale = await repo.upsert_person(_person(psn, "200.00", "2020-01-01T00:00:00+08:00"))
        assert (_balance(subject), stale) == ("300.00", 1)
        subject, stale = await repo.upsert_person(_person(psn, "250.00", "2026-03-02T09:31:00+08:00"))
        assert (_balance(subject), stale) == ("250.00", 0)
    finally:
        await pool.execute("DELETE FROM eligibility.persons WHERE psn_no = $1", psn)
        await pool.close()


async def test_within_a_batch_the_newest_record_wins_whatever_the_order(settings):
    pool = await create_pool(settings.database_url, size=1)
    first, second = unique("P"), unique("P")
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        repo = EligibilityRepository(pool)
        subjects, stale = await repo.upsert_persons([
            _person(first, "700.00", "2026-05-01T10:00:00+08:00"),
            _person(second, "10.00"),
            _person(first, "800.00", "2026-05-01T08:00:00+08:00"),  # older, arrives later: ignored
            _person(second, "20.00"),  # no times: the later one wins
        ])
        assert (_balance(subjects[first]), _balance(subjects[second]), stale) == ("700.00", "20.00", 1)
        # Within a batch as one by one: an untimed record keeps the time of the one before it.
        subjects, stale = await repo.upsert_persons([
            _person(second, "30.00", "2026-05-02T10:00:00+08:00"),
            _person(second, "40.00"),
            _person(second, "50.00", "2026-05-02T09:00:00+08:00"),  # older than the time held: ignored
        ])
        assert (_balance(subjects[second]), stale) == ("40.00", 1)
        subject, stale = await repo.upsert_person(_person(second, "60.00", "2026-05-02T09:59:00+08:00"))
        assert (_balance(subject), stale) == ("40.00", 1)
        # Folded over the time held in the database (found by review): an untimed record, then an
        # older timed one, over a newer time held: the untimed one applies, as one by one.
        subjects, stale = await repo.upsert_persons([
            _person(second, "70.00"),
            _person(second, "80.00", "2026-05-02T09:30:00+08:00"),
        ])
        assert (_balance(subjects[second]), stale) == ("70.00", 1)
        # Two older records over a newer time held: both stale, as one by one.
        subjects, stale = await repo.upsert_persons([
            _person(second, "90.00", "2026-05-02T05:00:00+08:00"),
            _person(second, "95.00", "2026-05-02T07:00:00+08:00"),
        ])
        assert (_balance(subjects[second]), stale) == ("70.00", 2)
    finally:
        await pool.execute("DELETE FROM eligibility.persons WHERE psn_no = ANY($1::text[])", [first, second])
        await pool.close()


async def test_persons_stored_before_migration_002_get_their_time_from_their_record(settings):
    """Migration 003: the rows 002 left without a time (their updated_at was free text then) get
    it where it is an ISO 8601 time, so reloading an earlier file right after the upgrade is ignored
    too; free text, PostgreSQL's special words and times far ahead stay without one."""
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path = {schema}")
        for name in ("001_init.sql", "002_person_source_time.sql"):
            await conn.execute((MIGRATIONS / name).read_text())
        cases = {
            "A": ("2026-01-05T08:00:00", "2026-01-05T00:00:00+00:00"),  # China time
            "B": ("2026-01-05T08:00:00Z", "2026-01-05T08:00:00+00:00"),
            "C": ("2026-01-05T08:00:00-05:00", "2026-01-05T13:00:00+00:00"),
            "D": ("2026-01-05", "2026-01-04T16:00:00+00:00"),
            "E": ("last Tuesday", None), "F": ("infinity", None), "G": ("2999-01-01T00:00:00", None),
            "H": ("2026-13-01", None), "I": ("", None),
        }
        await conn.executemany(
            "INSERT INTO persons (psn_no, record, version) VALUES ($1, $2::jsonb, 1)",
            [(psn, orjson.dumps({"psn_no": psn, "updated_at": text}).decode()) for psn, (text, _) in cases.items()])
        await conn.execute((MIGRATIONS / "003_person_source_time_backfill.sql").read_text())
        rows = {r["psn_no"]: r["source_time"] for r in await conn.fetch("SELECT psn_no, source_time FROM persons")}
        assert {psn: t and t.isoformat() for psn, t in rows.items()} == {psn: want for psn, (_, want) in cases.items()}
        # 004: a time held far ahead (stored before the feed refused them) is dropped; others stay.
        await conn.execute("UPDATE persons SET source_time = '2999-01-01T00:00:00Z' WHERE psn_no = 'E'")
        await conn.execute((MIGRATIONS / "004_person_source_time_ahead.sql").read_text())
        rows = {r["psn_no"]: r["source_time"] for r in await conn.fetch("SELECT psn_no, source_time FROM persons")}
        assert rows["E"] is None and rows["A"].isoformat() == "2026-01-05T00:00:00+00:00"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_a_stored_facility_this_version_cannot_read_is_unknown_not_a_stopped_stage(settings):
    # Stored before area codes had to be ASCII digits: its validation error escaped the batch's
    # per-request handling and stopped eligibility, again after every restart.
    pool = await create_pool(settings.database_url, size=1)
    code, good = unique("HFW"), unique("HOK")
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        record = {"fixmedins_code": code, "fixmedins_name": "x", "admdvs": "１１００００", "level": 3, "med_types": ["11"]}
        await pool.execute("INSERT INTO eligibility.facilities (fixmedins_code, record) VALUES ($1, $2::jsonb)",
                           code, orjson.dumps(record).decode())
        repo = EligibilityRepository(pool)
        await repo.upsert_facility(FacilityRecord(fixmedins_code=good, fixmedins_name="y", admdvs="110000", level=3,
                                                  med_types=["11"]))
        assert list(await repo.facilities([code, good])) == [good]
    finally:
        await pool.close()


async def test_the_insurance_held_before_a_change_is_kept_with_the_days_it_was_held(settings):
    """A stay admitted while the person held an insurance since stopped or moved is settled under it:
    eligibility keeps it, with the moment it began (None: before the platform knew) and the moment
    it changed (the region's time of the record that changed it; without one, the record's publish
    time, as filing dates the change), through a batch as one by one."""
    pool = await create_pool(settings.database_url, size=1)
    psn, other = unique("P"), unique("P")

    def record(psn_no: str, updated_at: str = "", **fields) -> PersonRecord:
        return PersonRecord.model_validate(_person(psn_no, "100.00", updated_at).model_dump(mode="json") | fields)

    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        repo = EligibilityRepository(pool)
        subjects, _ = await repo.upsert_persons([record(psn, "2026-03-01T09:00:00+08:00")])
        assert "before" not in subjects[psn][1]  # nothing changed yet
        # A balance restated is no change of insurance.
        subject, _ = await repo.upsert_person(record(psn, "2026-03-02T09:00:00+08:00", acct_balc="90.00"))
        assert "before" not in subject[1]
        subject, _ = await repo.upsert_person(record(psn, "2026-03-05T10:00:00+08:00", active=False))
        before = subject[1]["before"]
        assert before["record"]["active"] and before["record"]["acct_balc"] == "90.00"
        assert (before["since"], before["until"]) == (None, "2026-03-05T10:00:00+08:00")  # held since before we knew
        # Moved while stopped: the insurance held before the stop is kept.
        subject, _ = await repo.upsert_person(record(psn, "2026-03-07T10:00:00+08:00", active=False,
                                                      insuplc_admdvs="120000"))
        assert subject[1]["before"] == before
        # Resumed, then moved (one batch): the insurance moved from, held since the resume.
        subjects, _ = await repo.upsert_persons([
            record(psn, "2026-03-08T10:00:00+08:00"),
            record(psn, "2026-03-09T10:00:00+08:00", insuplc_admdvs="120000"),
        ])
        moved = subjects[psn][1]["before"]
        assert (moved["record"]["insuplc_admdvs"], moved["record"]["active"]) == ("330100", True)
        assert (moved["since"], moved["until"]) == ("2026-03-08T10:00:00+08:00", "2026-03-09T10:00:00+08:00")
        # An older record is ignored and changes nothing.
        subject, _ = await repo.upsert_person(record(psn, "2026-03-08T12:00:00+08:00", insutype="390"))
        assert subject[1]["before"] == moved
        # A change without updated_at is dated by its publish time (the feed's Kafka timestamp).
        await repo.upsert_person(record(other), Sent(1, 10, datetime(2026, 3, 9, 2, 0, tzinfo=UTC)))
        sent = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
        subject, _ = await repo.upsert_person(record(other, insutype="390"), Sent(1, 11, sent))
        assert subject[1]["before"]["record"]["insutype"] == "310"
        assert datetime.fromisoformat(subject[1]["before"]["until"]) == sent
        # A balance restated, then stopped: the 390 insurance held since its publish time.
        batch = [(record(other, insutype="390", acct_balc="50.00"), Sent(1, 12, sent + timedelta(days=1))),
                 (record(other, insutype="390", active=False), Sent(1, 13, sent + timedelta(days=2)))]
        subjects, _ = await repo.upsert_persons([r for r, _ in batch], [w for _, w in batch])
        kept = subjects[other][1]["before"]
        assert (datetime.fromisoformat(kept["since"]), kept["record"]["acct_balc"]) == (sent, "50.00")
        # The same batch applied again (its commit failed after Postgres's): passed over, not folded
        # over what came after it (the balance record read as a resume moved ``since`` to its time).
        subjects, _ = await repo.upsert_persons([r for r, _ in batch], [w for _, w in batch])
        assert subjects[other][1]["before"] == kept
        assert subjects[other][1]["person"]["active"] is False
    finally:
        await pool.execute("DELETE FROM eligibility.persons WHERE psn_no = ANY($1::text[])", [psn, other])
        await pool.close()
