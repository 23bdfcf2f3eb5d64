"""R4, R8 on the real Postgres: a person has one long-term filing under an insurance. A second
one (added, or a filing changed into one) is refused; it would also have stepped around the lock
R8 lets a region put on the first."""

from __future__ import annotations

import time

import orjson
import pytest

from yidi.platform.kafka import Incoming

from services.filing.handlers import FilingHandler
from tests.conftest import unique

pytestmark = pytest.mark.integration


def asker(handler: FilingHandler, psn: str, **defaults: str):
    """Filing requests of one person through the filing stage's handler: each one's result."""
    offsets = iter(range(1, 1000))

    async def ask(action: str = "add", **fields: str) -> dict:
        body = {"action": action, "reqid": unique("R"), "psn_no": psn, "insutype": "310", "insuplc_admdvs": "131000",
                "filed_admdvs": "110000", "category": "retiree_resettled", "begndate": "2026-01-01"} | defaults | fields
        if action == "cancel":
            body = {k: body[k] for k in ("action", "reqid", "psn_no", "filing_id")}
        out = await handler([Incoming("filing.requests", 0, next(offsets), psn.encode(), orjson.dumps(body),
                                      int(time.time() * 1000))])
        value = orjson.loads(out[-1].value)
        return value.get("result") or value  # an accepted request's event carries its result

    return ask


async def test_a_second_long_term_filing_is_refused_until_the_first_is_cancelled(filing_repo, settings):
    psn = unique("P")
    ask = asker(FilingHandler(settings, filing_repo), psn, decl_source="self_service")

    first = await ask()
    second = await ask(category="posted_worker", filed_admdvs="120000")
    other_fund = await ask(insutype="390")
    other_region = await ask(insuplc_admdvs="132000")  # insured in another region too: another insurance
    trip = await ask(category="temporary_other", filed_admdvs="120000")
    trip_made_long_term = await ask("change", filing_id=trip["filing"]["filing_id"], category="long_term_resident",
                                    filed_admdvs="120000")
    first_moved = await ask("change", filing_id=first["filing"]["filing_id"], filed_admdvs="120000")
    # Moved to the fund under which the person holds other_fund: a second there (a review, session
    # 48). The insured region does not change at all.
    first_to_other_fund = await ask("change", filing_id=first["filing"]["filing_id"], insutype="390")
    first_to_other_region = await ask("change", filing_id=first["filing"]["filing_id"], insuplc_admdvs="132000")
    await ask("cancel", filing_id=first["filing"]["filing_id"])
    after_cancel = await ask(category="posted_worker", filed_admdvs="120000")

    assert first["accepted"] and other_fund["accepted"] and other_region["accepted"] and trip["accepted"]
    for refused in (second, trip_made_long_term):
        assert not refused["accepted"]
        assert f"already has long-term filing {first['filing']['filing_id']} to region 110000" in refused["reason"]
    assert not first_to_other_fund["accepted"], first_to_other_fund
    assert f"already has long-term filing {other_fund['filing']['filing_id']}" in first_to_other_fund["reason"]
    assert not first_to_other_region["accepted"] and "does not change" in first_to_other_region["reason"]
    assert first_moved["accepted"], first_moved  # the filing itself may change
    assert after_cancel["accepted"], after_cancel


async def test_a_long_term_filing_waiting_for_approval_counts_and_two_held_from_before_may_still_change(
        filing_repo, settings):
    from datetime import date

    from yidi.domain.codes import FilingCategory, InsuranceType
    from yidi.domain.filing import FilingAsk, new_filing

    psn = unique("P")
    ask = asker(FilingHandler(settings, filing_repo), psn, decl_source="office")

    pending = await ask()
    second = await ask(filed_admdvs="120000")
    assert pending["filing"]["status"] == "pending" and not second["accepted"]
    assert f"already has long-term filing {pending['filing']['filing_id']}" in second["reason"]
    # Two long-term filings held from before the check: each may still change within long-term.
    held = new_filing(FilingAsk(unique("F"), psn, InsuranceType.EMPLOYEE, "131000", "120000",
                                FilingCategory.LONG_TERM_RESIDENT, date(2026, 1, 1), None, True))
    async with filing_repo.transaction() as conn:
        await filing_repo.save(conn, held, 1, date(2026, 1, 1), "add", unique("R"), "import")
    changed = await ask("change", filing_id=held.filing_id, category="posted_worker", filed_admdvs="120000",
                        decl_source="self_service")
    assert changed["accepted"], changed


async def test_a_category_named_after_a_kind_of_person_must_fit_the_person_filing_holds(filing_repo, settings):
    """R4: retiree_resettled for a retiree (12), posted_worker for an employee in service (11); a
    person filing has no record of yet may file either, and a filing held from before keeps its
    category through a change of region."""
    from services.filing.persons import FilingPersonsHandler

    persons = FilingPersonsHandler(settings, filing_repo)
    retiree, worker, unknown = unique("P"), unique("P"), unique("P")
    for offset, (psn, psn_type) in enumerate(((retiree, "12"), (worker, "11")), 1):
        value = {"psn_no": psn, "psn_name": "p", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": psn_type}
        await persons([Incoming("refdata.persons", 0, offset, psn.encode(), orjson.dumps(value), int(time.time() * 1000))])
    handler = FilingHandler(settings, filing_repo)

    retiree_as_worker = await asker(handler, retiree)(category="posted_worker")
    worker_as_retiree = await asker(handler, worker)(category="retiree_resettled")
    worker_ask = asker(handler, worker)
    worker_posted = await worker_ask(category="posted_worker")
    worker_moved = await worker_ask("change", filing_id=worker_posted["filing"]["filing_id"], category="posted_worker",
                                    filed_admdvs="120000")
    worker_made_retiree = await worker_ask("change", filing_id=worker_posted["filing"]["filing_id"],
                                           category="retiree_resettled")
    retiree_resettled = await asker(handler, retiree)(category="retiree_resettled")
    unknown_filed = await asker(handler, unknown)(category="retiree_resettled")

    for refused, fits in ((retiree_as_worker, "an employee in service"), (worker_as_retiree, "a retiree"),
                          (worker_made_retiree, "a retiree")):
        assert not refused["accepted"] and f"is for {fits} (R4)" in refused["reason"], refused
    assert worker_posted["accepted"] and worker_moved["accepted"] and retiree_resettled["accepted"]
    assert unknown_filed["accepted"]

    # Held from before the check: a worker filed as a resettled retiree may still move, but not
    # bring it back once cancelled.
    held = await asker(handler, unique("P"))(category="retiree_resettled")
    async with filing_repo.transaction() as conn:
        await conn.execute("UPDATE filing.filings SET psn_no = $1 WHERE filing_id = $2", worker, held["filing"]["filing_id"])
    await worker_ask("cancel", filing_id=worker_posted["filing"]["filing_id"])
    moved = await worker_ask("change", filing_id=held["filing"]["filing_id"], category="retiree_resettled",
                             filed_admdvs="120000")
    await worker_ask("cancel", filing_id=held["filing"]["filing_id"])
    revived = await worker_ask("change", filing_id=held["filing"]["filing_id"], category="retiree_resettled")
    assert moved["accepted"], moved
    assert not revived["accepted"] and "is for a retiree (R4)" in revived["reason"], revived

    # The type is the one last published: the worker retires.
    value = {"psn_no": worker, "psn_name": "p", "insuplc_admdvs": "131000", "insutype": "310", "psn_type": "12"}
    await persons([Incoming("refdata.persons", 0, 9, worker.encode(), orjson.dumps(value), int(time.time() * 1000))])
    retired = await worker_ask(category="retiree_resettled", filed_admdvs="130000")
    assert retired["accepted"], retired


async def test_r8s_lock_of_an_imported_filing_counts_from_its_begndate_not_the_import(filing_repo, settings):
    # An import is a filing made elsewhere: counted from the day the platform took it in, the lock
    # ran up to six months past R8's limit for every filing migrated in.
    from datetime import date

    locked = settings.model_copy(update={"filing_lock_months": {"131000": 6}})
    handler = FilingHandler(locked, filing_repo)
    today = date.today()
    long_ago, recent = date(today.year - 2, 1, 1), today.replace(day=1)
    outcomes = {}
    for name, source, begndate in (("imported long ago", "import", long_ago), ("imported this month", "import", recent),
                                   ("filed here", "self_service", long_ago)):
        psn = unique("P")
        ask = asker(handler, psn, decl_source=source, begndate=begndate.isoformat())
        filed = await ask()
        assert filed["accepted"], filed
        moved = await ask("change", filing_id=filed["filing"]["filing_id"], filed_admdvs="120000",
                          decl_source="self_service")
        outcomes[name] = moved["accepted"], moved.get("reason", "")
    assert outcomes["imported long ago"] == (True, "")
    # Still within six months of its filing: locked, as one filed here today is.
    for name in ("imported this month", "filed here"):
        accepted, reason = outcomes[name]
        assert not accepted and "locks a filing for 6 months" in reason, (name, reason)


async def test_r8s_lock_of_a_filing_brought_back_by_a_change_counts_from_that_day(filing_repo, settings):
    # A cancelled filing changed back into force is filed anew (its category checked again): its
    # lock counted from its first filing, so a cancel and a change let every later change through,
    # where an add that day would have been locked (a review, session 46).
    from datetime import date

    handler = FilingHandler(settings.model_copy(update={"filing_lock_months": {"131000": 6}}), filing_repo)
    long_ago = date(date.today().year - 2, 1, 1).isoformat()
    ask = asker(handler, unique("P"), decl_source="import", begndate=long_ago)
    filed = await ask()
    filing_id = filed["filing"]["filing_id"]
    cancelled = await ask("cancel", filing_id=filing_id)  # the lock ran out long ago
    back = await ask("change", filing_id=filing_id, filed_admdvs="120000", decl_source="self_service",
                     begndate=date.today().isoformat())
    moved_again = await ask("change", filing_id=filing_id, filed_admdvs="130000", decl_source="self_service",
                            begndate=date.today().isoformat())
    assert filed["accepted"] and cancelled["accepted"] and back["accepted"], (filed, cancelled, back)
    assert back["filing"]["status"] == "active"
    assert not moved_again["accepted"] and "locks a filing for 6 months" in moved_again["reason"], moved_again


async def test_a_second_long_term_filing_refused_in_a_batch_handled_again_is_refused_again(filing_repo, settings):
    # The batch [add a second long-term filing, cancel the first] handled again after its Postgres
    # commit (its Kafka transaction lost): the add was decided again, after the cancellation behind
    # it had been applied, and accepted (a review, session 37). It is answered as the first time.
    psn = unique("P")
    ask = asker(FilingHandler(settings, filing_repo), psn, decl_source="self_service")
    first = await ask()
    topic = unique("t.") + ".filing.requests"  # places of this test's own

    def record(offset: int, **body: str) -> Incoming:
        return Incoming(topic, 0, offset, psn.encode(), orjson.dumps({"reqid": unique("R"), "psn_no": psn} | body),
                        int(time.time() * 1000))

    batch = [record(1, action="add", insutype="310", insuplc_admdvs="131000", filed_admdvs="120000",
                    category="posted_worker", begndate="2026-01-01", decl_source="self_service"),
             record(2, action="cancel", filing_id=first["filing"]["filing_id"])]

    def results(out) -> list[tuple[bool, str]]:
        values = [orjson.loads(o.value) for o in out]
        return [((v.get("result") or v)["accepted"], (v.get("result") or v).get("reason") or "") for v in values]

    once = results(await FilingHandler(settings, filing_repo)(batch))
    again = results(await FilingHandler(settings, filing_repo)(batch))
    assert [accepted for accepted, _ in once] == [False, True]
    assert "already has long-term filing" in once[0][1]
    assert again == once
    # The same place and reqid with another request (its topic deleted and made again) is decided
    # anew: the first filing is cancelled now, so the add is accepted.
    body = orjson.loads(batch[0].value) | {"filed_admdvs": "130100"}
    other = Incoming(topic, 0, 1, psn.encode(), orjson.dumps(body), int(time.time() * 1000))
    assert [accepted for accepted, _ in results(await FilingHandler(settings, filing_repo)([other]))] == [True]


async def test_a_long_term_version_kept_in_force_by_a_change_for_a_later_day_counts_until_then(filing_repo, settings):
    # A long-term filing changed to a temporary trip from a later day stays long-term until then
    # (its earlier version); its own columns say temporary at once, and a second long-term filing
    # added meanwhile was accepted: two in force to two regions until that day (a review, session 48).
    from datetime import datetime, timedelta

    from yidi.domain.codes import BUSINESS_TZ

    today = datetime.now(BUSINESS_TZ).date()
    planned = today + timedelta(days=30)
    psn = unique("P")
    ask = asker(FilingHandler(settings, filing_repo), psn, decl_source="self_service")
    first = await ask()
    first_id = first["filing"]["filing_id"]
    trip = await ask("change", filing_id=first_id, category="temporary_other", filed_admdvs="120000",
                     begndate=planned.isoformat())
    meanwhile = await ask(category="long_term_resident", filed_admdvs="130100")
    other_fund = await ask(category="long_term_resident", filed_admdvs="130100", insutype="390")
    from_that_day = await ask(category="long_term_resident", filed_admdvs="130100", begndate=planned.isoformat())

    assert first["accepted"] and trip["accepted"], trip
    assert not meanwhile["accepted"], meanwhile
    until = (planned - timedelta(days=1)).isoformat()
    assert f"already has long-term filing {first_id} to region 110000 (in force until {until})" in meanwhile["reason"]
    assert other_fund["accepted"], other_fund  # another insurance
    assert from_that_day["accepted"], from_that_day  # begins once the long-term version has run out
    # That filing, changed within long-term: to another region from that day, yes; to an earlier
    # day, within the kept version's days, no (the review of the session's diff).
    later_id = from_that_day["filing"]["filing_id"]
    moved = await ask("change", filing_id=later_id, category="long_term_resident", filed_admdvs="130200",
                      begndate=planned.isoformat())
    earlier = await ask("change", filing_id=later_id, category="long_term_resident", filed_admdvs="130200",
                        begndate=today.isoformat())
    assert moved["accepted"], moved
    assert not earlier["accepted"] and f"{first_id} to region 110000 (in force until {until})" in earlier["reason"]
    # The first filing's trip planned again further off kept its long-term version in force into
    # that filing's days (the review of session 48's diff); planned again sooner, it meets nothing.
    further = await ask("change", filing_id=first_id, category="temporary_other", filed_admdvs="120000",
                        begndate=(planned + timedelta(days=10)).isoformat())
    sooner = await ask("change", filing_id=first_id, category="temporary_other", filed_admdvs="120000",
                       begndate=(planned - timedelta(days=5)).isoformat())
    assert not further["accepted"], further
    assert (f"long-term version to region 110000 in force until {(planned + timedelta(days=9)).isoformat()}, and the "
            f"person already has long-term filing {later_id}") in further["reason"]
    assert sooner["accepted"], sooner
