"""R19: what is down now, and when it comes back, from eligibility's mirror in the real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from yidi.platform.db import create_pool, migrate

from services.eligibility.repository import EligibilityRepository
from services.eligibility.status import current
from tests.conftest import unique

pytestmark = pytest.mark.integration


# Regions no other test settles in: the session's database is shared by every test, and an outage
# left in place would refuse their settlements (REGION_UNAVAILABLE) for the rest of the session.
DOWN_REGION, LATER_REGION = "991000", "992000"


@pytest.fixture
async def outages(settings):
    """Eligibility's repository on the session's database, and a list for the ``status_id``s a test
    writes: deleted after it, since an outage left in place would refuse other tests' settlements."""
    pool = await create_pool(settings.database_url, size=1)
    written: list[str] = []
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        yield EligibilityRepository(pool), written
    finally:
        await pool.execute("DELETE FROM eligibility.outages WHERE status_id = ANY($1::text[])", written)
        await pool.close()


async def test_region_status_names_what_is_down_now_and_when_it_resumes(settings, outages):
    repo, written = outages
    down, later, following, after_gap = unique("S"), unique("S"), unique("S"), unique("S")
    written += [down, later, following, after_gap]
    now = datetime.now(UTC)
    await repo.upsert_outage(down, DOWN_REGION, now - timedelta(minutes=5), now + timedelta(hours=1), "network", False)
    await repo.upsert_outage(later, LATER_REGION, now + timedelta(hours=2), now + timedelta(hours=3), "upgrade", False)
    # The down region's maintenance follows its network outage: it resumes after both.
    await repo.upsert_outage(following, DOWN_REGION, now + timedelta(hours=1), now + timedelta(hours=4), "maintenance",
                             False)
    # After a gap the region is up again: a window then does not move the resume time.
    await repo.upsert_outage(after_gap, DOWN_REGION, now + timedelta(hours=5), now + timedelta(hours=6), "upgrade",
                             False)
    status = await current(settings, now)
    assert [(d["admdvs"], d["reason"]) for d in status["down_now"] if d["status_id"] == down] == [
        (DOWN_REGION, "network")]
    assert [d["until"] for d in status["down_now"] if d["status_id"] == down] == [
        (now + timedelta(hours=1)).isoformat()]
    assert [d["admdvs"] for d in status["planned"] if d["status_id"] == later] == [LATER_REGION]
    assert status["resumes"][DOWN_REGION] == {"at": (now + timedelta(hours=4)).isoformat(), "reason": "maintenance"}
    assert LATER_REGION not in status["resumes"]
    # A county of the down city is down by the city's windows (area codes nest); one of
    # another city is not.
    county = await current(settings, now, DOWN_REGION[:4] + "07")
    assert county["region"]["down"] and county["region"]["resumes"] == {
        "at": (now + timedelta(hours=4)).isoformat(), "reason": "maintenance", "window_of": DOWN_REGION}
    assert {w["status_id"] for w in county["region"]["windows"]} >= {down, following, after_gap}
    elsewhere = (await current(settings, now, "993007"))["region"]
    assert not elsewhere["down"] and elsewhere["resumes"] is None, elsewhere


async def test_a_cancelled_window_published_again_stays_cancelled(outages, caplog):
    """A region reloading an earlier file (the window as first announced) must not stop its
    settlements again; a window published again before it is cancelled is replaced."""
    repo, written = outages
    window = unique("S")
    written.append(window)
    now = datetime.now(UTC)
    start = now - timedelta(minutes=5)
    await repo.upsert_outage(window, DOWN_REGION, start, now + timedelta(hours=1), "network", False)
    await repo.upsert_outage(window, DOWN_REGION, start, now + timedelta(hours=2), "network, longer", False)
    extended = [(o.end, o.reason) for o in await repo.outages([DOWN_REGION], now)]
    await repo.upsert_outage(window, DOWN_REGION, start, now + timedelta(hours=2), "network, longer", True)
    await repo.upsert_outage(window, DOWN_REGION, start, now + timedelta(hours=1), "network", False)  # the old file
    assert extended == [(now + timedelta(hours=2), "network, longer")]
    assert await repo.outages([DOWN_REGION], now) == []
    assert [r.getMessage() for r in caplog.records if "stays so" in r.getMessage()] == [
        f"region status {window} of {DOWN_REGION} was cancelled and stays so: publishing it again does not "
        "reopen it; announce the window again under a new status_id"]


def test_a_region_asked_for_must_be_an_area_code(capsys):
    from services.eligibility.status import main

    with pytest.raises(SystemExit):
        main(["--region", "4401"])  # a prefix found nothing and said "not down"
    assert "not a 6-digit area code" in capsys.readouterr().err


async def test_a_status_id_another_regions_window_holds_is_refused_and_changes_nothing(outages):
    # Windows were kept by status_id alone: a second region's window under the same id moved the
    # first region's away (settlements went on through its outage), or was stored already
    # cancelled (a review, session 48). The feed dead-letters the record with the reason.
    repo, written = outages
    window = unique("S")
    written.append(window)
    now = datetime.now(UTC)
    await repo.upsert_outage(window, DOWN_REGION, now - timedelta(minutes=5), now + timedelta(hours=1), "network", False)
    with pytest.raises(ValueError, match=f"status_id {window} is region {DOWN_REGION}'s window, not {LATER_REGION}'s"):
        await repo.upsert_outage(window, LATER_REGION, now, now + timedelta(hours=2), "upgrade", True)
    assert [(o.region, o.reason) for o in await repo.outages([DOWN_REGION, LATER_REGION], now)] == [
        (DOWN_REGION, "network")]

