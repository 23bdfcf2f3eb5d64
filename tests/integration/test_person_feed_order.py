"""The person feed applies the newest record of each person, by the region's time, on the real Postgres."""

from __future__ import annotations

import pytest

from yidi.contracts.refdata import PersonRecord
from yidi.platform.db import create_pool, migrate

from services.eligibility.repository import EligibilityRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration


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
        # A record without a time applies in arrival order, and so does the next timed one after it.
        subject, stale = await repo.upsert_person(_person(psn, "300.00"))
        assert (_balance(subject), stale) == ("300.00", 0)
        subject, stale = await repo.upsert_person(_person(psn, "200.00", "2020-01-01T00:00:00+08:00"))
        assert (_balance(subject), stale) == ("200.00", 0)
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
    finally:
        await pool.execute("DELETE FROM eligibility.persons WHERE psn_no = ANY($1::text[])", [first, second])
        await pool.close()
