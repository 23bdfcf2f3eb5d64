"""R7 on the real Postgres: filing's refdata.persons stage ends the long-term filings under a
person's old insurance when the insured region changes it, and publishes every ended filing
exactly as often as eligibility needs it (once, and again when a batch is handled again)."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

import orjson
import pytest

from yidi.contracts.filing import FilingEvent
from yidi.domain.codes import BUSINESS_TZ, FilingCategory, InsuranceType
from yidi.domain.filing import FilingAsk, new_filing
from yidi.platform.kafka import Incoming

from services.filing.persons import FilingPersonsHandler
from services.filing.repository import FilingRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration

REGION, FILED = "131000", "110000"


@pytest.fixture
async def filing_repo(settings):
    from yidi.platform.db import create_pool, migrate

    pool = await create_pool(settings.database_url, size=3)
    try:
        await migrate(pool, "filing", "services.filing.migrations")
        yield FilingRepository(pool)
    finally:
        await pool.close()


class Feed:
    """refdata.persons records of one person, at increasing offsets of one partition."""

    def __init__(self, psn_no: str) -> None:
        self.psn_no, self.offset = psn_no, 0

    def record(self, *, active: bool = True, insutype: str = "310", updated_at: str = "") -> Incoming:
        self.offset += 1
        value = {"psn_no": self.psn_no, "psn_name": "p", "insuplc_admdvs": REGION, "insutype": insutype,
                 "psn_type": "11", "active": active, "updated_at": updated_at}
        return Incoming("refdata.persons", 2, self.offset, self.psn_no.encode(), orjson.dumps(value),
                        int(time.time() * 1000))


async def file(repo: FilingRepository, psn_no: str, category: FilingCategory, insutype: str = "310",
               begin: date = date(2025, 1, 1)) -> str:
    filing = new_filing(FilingAsk(unique("F"), psn_no, InsuranceType(insutype), REGION, FILED, category, begin,
                                  None, True))
    async with repo.transaction() as conn:
        await repo.save(conn, filing, 1, begin, "add", unique("R"), "import")
    return filing.filing_id


async def status(repo: FilingRepository, filing_id: str) -> tuple[str, int]:
    async with repo.transaction() as conn:
        found = await repo.get(conn, filing_id)
    assert found is not None
    return found[0].status.value, found[0].version


def ended(out) -> list[FilingEvent]:
    return [FilingEvent.model_validate(orjson.loads(o.value)) for o in out]


async def test_a_stop_ends_the_long_term_filings_under_the_old_insurance_and_nothing_else(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    long_term = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED)
    temporary = await file(filing_repo, psn, FilingCategory.TEMPORARY_OTHER, begin=datetime.now(BUSINESS_TZ).date())
    other_fund = await file(filing_repo, psn, FilingCategory.LONG_TERM_RESIDENT, insutype="390")

    first = await handler([feed.record()])  # the first record seen of the person: nothing to compare with
    same = await handler([feed.record()])  # the same insurance again (a reload): no change
    stop = await handler([feed.record(active=False)])

    assert first == [] and same == []
    events = ended(stop)
    assert [(e.event, e.filing.filing_id, e.filing.status.value, e.result, e.reply_to) for e in events] == [
        ("ended", long_term, "cancelled", None, "")]
    today = datetime.now(BUSINESS_TZ).date()
    assert [(p.begndate, p.enddate) for p in events[0].filing.earlier] == [(date(2025, 1, 1), today - timedelta(days=1))]
    assert stop[0].topic == settings.topic("filing.events") and stop[0].key == psn.encode()
    assert await status(filing_repo, temporary) == ("active", 1)
    assert await status(filing_repo, other_fund) == ("active", 1)
    async with filing_repo.transaction() as conn:
        history = await filing_repo.history_in(conn, long_term)
    assert [(h["action"], h["decl_source"]) for h in history] == [("add", "import"), ("ended", "platform")]
    assert "insurance changed" in history[-1]["reason"] and "(stopped)" in history[-1]["reason"]


async def test_a_move_to_another_fund_keeps_a_filing_made_for_the_new_one_or_after_the_change(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    await handler([feed.record(insutype="390")])
    old = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, insutype="390")
    new = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED, insutype="310")
    # The region's record says the change took effect an hour ago: a filing saved since stays.
    an_hour_ago = (datetime.now(BUSINESS_TZ) - timedelta(hours=1)).isoformat()
    moved = await handler([feed.record(insutype="310", updated_at=an_hour_ago)])
    assert moved == []
    assert await status(filing_repo, old) == ("active", 1)
    # Saved before a change dated now: it ends, and the one under the new fund stays.
    back = await handler([feed.record(insutype="390", updated_at=datetime.now(BUSINESS_TZ).isoformat())])
    assert [e.filing.filing_id for e in ended(back)] == [new]
    assert await status(filing_repo, old) == ("active", 1)


async def test_an_older_record_changes_nothing(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED)
    now = datetime.now(BUSINESS_TZ)
    await handler([feed.record(updated_at=now.isoformat())])
    older = await handler([feed.record(active=False, updated_at=(now - timedelta(days=1)).isoformat())])
    assert older == [] and await status(filing_repo, filing_id) == ("active", 1)
    # Not even as the base of the next comparison: the same insurance, newer, is no change.
    assert await handler([feed.record(updated_at=(now + timedelta(seconds=1)).isoformat())]) == []


async def test_a_batch_handled_again_publishes_its_ended_filings_again_and_nothing_twice(filing_repo, settings):
    psn = unique("P")
    handler, feed = FilingPersonsHandler(settings, filing_repo), Feed(psn)
    filing_id = await file(filing_repo, psn, FilingCategory.RETIREE_RESETTLED)
    await handler([feed.record()])
    # Stopped and resumed in one batch: the stop ends the filing; the resume finds nothing more.
    batch = [feed.record(active=False), feed.record(active=True)]
    out = await handler(batch)
    # The Kafka transaction is lost after Postgres committed: the same records come again,
    # whole or in parts. The ended filing is published again with the record that ended it.
    again = await handler(batch)
    first_part, second_part = await handler(batch[:1]), await handler(batch[1:])
    assert [e.filing.filing_id for e in ended(out)] == [filing_id]
    assert [o.value for o in again] == [o.value for o in out] == [o.value for o in first_part]
    assert second_part == []
    assert await status(filing_repo, filing_id) == ("cancelled", 2)
    # A later record without a change publishes nothing.
    assert await handler([feed.record(active=True)]) == []


async def test_records_that_do_not_validate_are_left_to_eligibilitys_feed(filing_repo, settings):
    psn = unique("P")
    handler = FilingPersonsHandler(settings, filing_repo)
    bad = Incoming("refdata.persons", 0, 1, psn.encode(), b'{"psn_no": "x"}', int(time.time() * 1000))
    ahead = Feed(psn).record(updated_at=(datetime.now(BUSINESS_TZ) + timedelta(days=1)).isoformat())
    assert await handler([bad, ahead]) == []
    async with filing_repo.transaction() as conn:
        assert await filing_repo.insurances(conn, [psn]) == {}
