"""Filing and eligibility on the real stack: every filing rule a cashier meets, and a Redis
cache that is never wrong, even when the real Redis server is stopped mid-run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from yidi.client.gateway import GatewayClient

from tests.e2e.test_settlement_path import _dead_letters
from tests.e2e.world import World, china_now, filing_request
from tests.integration.waiting import until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def world(system) -> World:
    return await World(system.settings).build()


async def file(filings, world, psn_no, action="add", **fields) -> dict:
    return await filings.call(filing_request(world, psn_no, action, **fields))


async def test_r2_a_settlement_with_another_persons_identity_card_is_refused(world, gateway):
    person = await world.person(certno="97010219700101002X")

    def with_card(number: str) -> dict:
        request = world.request(person, [("T-A", "1", "50.00")])
        request["input"]["data"] |= {"mdtrt_cert_type": "02", "mdtrt_cert_no": number}
        return request

    other = await gateway.call(with_card("970102198001010033"))
    assert (other["infcode"], other["err_code"]) == (-1, "NOT_INSURED") and "(R2)" in other["err_msg"]
    # A benefit check (2001) with that card foresees the refusal; with the person's own, eligible.
    check = with_card("970102198001010033") | {"infno": "2001"}
    foreseen = (await gateway.call(check))["output"]
    assert (foreseen["eligible"], foreseen["reason_code"]) == ("0", "NOT_INSURED") and "(R2)" in foreseen["reason"]
    assert (await gateway.call(with_card("97010219700101002x") | {"infno": "2001"}))["output"]["eligible"] == "1"
    own = await gateway.call(with_card("97010219700101002x"))
    assert own["infcode"] == 0, own
    # Without mdtrt_cert_type the number is no card's said to be (the field's default is 02).
    untyped = world.request(person, [("T-A", "1", "50.00")])
    untyped["input"]["data"]["mdtrt_cert_no"] = "EV00000042"
    assert (await gateway.call(untyped))["infcode"] == 0


async def test_r6_a_person_admitted_without_filing_files_and_then_settles_directly(world, gateway, filings):
    person = await world.person(category=None)
    stay = world.request(person, [("T-A", "1", "2000.00")], infno="2304", med_type="21")
    refused = await gateway.call(stay)
    filed = await file(filings, world, person, category="temporary_other")
    settled = await gateway.call(world.request(person, [("T-A", "1", "2000.00")], infno="2304", med_type="21"))
    assert refused["err_code"] == "NOT_FILED" and "R6" in refused["err_msg"]
    assert "facility's clock" not in refused["err_msg"]  # dated now
    assert filed["accepted"] and filed["filing"]["status"] == "active"
    assert settled["infcode"] == 0


async def test_r9_a_filing_to_the_treating_province_or_city_covers_its_regions_and_no_other(world, gateway, filings):
    # Area codes nest: a person filed to the treating region's province (or city) was refused
    # NOT_FILED at its facilities, which sit in a region of it.
    treating = world.treating
    province, city = treating[:2] + "0000", treating[:4] + "00"
    other_city = treating[:2] + ("01" if treating[2:4] != "01" else "02") + "00"
    answers = {}
    for name, filed in (("province", province), ("city", city), ("other city", other_city)):
        person = await world.person(category=None)
        made = await file(filings, world, person, filed_admdvs=filed)
        assert made["accepted"], made
        answers[name] = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    assert answers["province"]["infcode"] == 0, answers["province"]
    assert answers["city"]["infcode"] == 0, answers["city"]
    assert answers["other city"]["err_code"] == "NOT_FILED", answers["other city"]


async def test_a_cancelled_filing_refuses_the_very_next_settlement(world, gateway, filings):
    person = await world.person(category=None)
    filed = await file(filings, world, person)
    assert (await gateway.call(world.request(person, [("T-A", "1", "100.00")])))["infcode"] == 0
    cancelled = await file(filings, world, person, "cancel", filing_id=filed["filing"]["filing_id"])
    next_one = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    assert cancelled["accepted"] and cancelled["filing"]["status"] == "cancelled"
    assert next_one["err_code"] == "NOT_FILED"


async def test_r7_a_change_for_a_later_day_and_a_cancellation_leave_stays_begun_under_the_filing_covered(
        world, gateway, filings):
    # Moving to another region from a later day left the person filed nowhere until then, and
    # the discharge of a stay begun under the old version was refused NOT_FILED.
    person = await world.person(category=None)
    filed = await file(filings, world, person, begndate="2020-01-01")
    filing_id = filed["filing"]["filing_id"]
    later = (china_now() + timedelta(days=20)).strftime("%Y-%m-%d")
    moved = await file(filings, world, person, "change", filing_id=filing_id, filed_admdvs="990001", begndate=later)

    def stay() -> dict:
        discharge = world.request(person, [("T-A", "1", "1000.00")], infno="2304", med_type="21")
        discharge["input"]["data"]["begntime"] = (china_now() - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
        return discharge

    today = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    during_stay = await gateway.call(stay())
    cancelled = await file(filings, world, person, "cancel", filing_id=filing_id)
    after_cancel = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    stay_after_cancel = await gateway.call(stay())
    assert moved["accepted"] and cancelled["accepted"]
    assert [p["filed_admdvs"] for p in cancelled["filing"]["earlier"]] == [world.treating]
    assert today["infcode"] == 0 and during_stay["infcode"] == 0, (today, during_stay)
    assert after_cancel["err_code"] == "NOT_FILED"  # in force until yesterday: not for care from today
    assert stay_after_cancel["infcode"] == 0, stay_after_cancel  # admitted while it was


async def test_r7_a_stay_admitted_before_a_cancellation_made_later_that_day_stays_covered(world, gateway, filings):
    # A cancellation takes effect at once; the version it ends was in force until then. Counted
    # from midnight instead, it left a stay admitted that morning filed nowhere: its discharge was
    # refused NOT_FILED.
    person = await world.person(category=None)
    filed = await file(filings, world, person, begndate="2020-01-01")

    def discharge(admitted: datetime) -> dict:
        stay = world.request(person, [("T-A", "1", "1000.00")], infno="2304", med_type="21")
        stay["input"]["data"]["begntime"] = admitted.strftime("%Y-%m-%d %H:%M:%S")
        return stay

    # a minute ago, and today (just after midnight, yesterday would be covered by its day alone)
    before = max(china_now() - timedelta(minutes=1), china_now().replace(hour=0, minute=0, second=1, microsecond=0))
    cancelled = await file(filings, world, person, "cancel", filing_id=filed["filing"]["filing_id"])
    covered = await gateway.call(discharge(before))
    after = await gateway.call(discharge(china_now() + timedelta(seconds=2)))  # admitted after it (whole seconds)
    assert cancelled["accepted"] and cancelled["filing"]["earlier"][0]["ended_at"], cancelled
    assert covered["infcode"] == 0, covered
    assert after["err_code"] == "NOT_FILED", after


async def test_r7_a_temporary_filing_past_its_six_months_no_longer_counts(world, gateway, filings):
    person = await world.person(category=None)
    old = await file(filings, world, person, category="temporary_other", begndate="2025-01-01", enddate="2025-03-01")
    assert old["filing"]["enddate"] == "2025-07-01"  # at least six months (R7)
    assert "2025-03-01 became 2025-07-01" in old["note"] and "R7" in old["note"]  # and says so
    expired = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    assert expired["err_code"] == "NOT_FILED" and "facility's clock" not in expired["err_msg"]
    # Dated within the filing, but years before the platform's clock: a clock years slow, perhaps.
    slow = await gateway.call(world.request(person, [("T-A", "1", "100.00")], when="2025-02-01 10:00:00"))
    assert slow["infcode"] == 0
    older = await gateway.call(world.request(person, [("T-A", "1", "100.00")], when="2019-03-01 10:00:00"))
    assert older["err_code"] == "NOT_FILED" and "2019-03-01 10:00:00" in older["err_msg"]
    assert "set the facility's clock" in older["err_msg"]


async def test_r7_a_long_term_filing_keeps_no_end_date_and_says_so(world, filings):
    # The end date the person asked for was dropped without a word.
    person = await world.person(category=None, psn_type="12")  # a retiree (R4)
    filed = await file(filings, world, person, category="retiree_resettled", enddate="2030-01-01")
    assert filed["accepted"] and filed["filing"]["enddate"] is None
    assert "2030-01-01 was not kept" in filed["note"] and "long-term" in filed["note"]
    plain = await file(filings, world, await world.person(category=None, psn_type="12"), category="retiree_resettled")
    assert plain["accepted"] and plain["note"] == ""  # as asked: nothing to say


async def test_r7_an_insurance_change_ends_a_long_term_filing_and_a_new_filing_settles_again(
        system, world, gateway, filings):
    """A long-term filing is valid until it is changed or the person's insurance status changes
    (R7): a stop and a resume left it in force, and the person settled on it as before."""
    person = await world.person(category=None)
    filed = await file(filings, world, person, category="long_term_resident", begndate="2020-01-01")
    filing_id = filed["filing"]["filing_id"]
    ended_before = system.metric("filing", "yidi_filings_ended_total", change="stopped")
    settled = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    await world.person(psn_no=person, category=None, active=False)  # the insured region stops the insurance
    stopped = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    await world.person(psn_no=person, category=None)  # and resumes it
    resumed = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    history = await file(filings, world, person, "history", filing_id=filing_id)
    refiled = await file(filings, world, person, category="long_term_resident",
                         begndate=china_now().strftime("%Y-%m-%d"))
    again = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))

    assert settled["infcode"] == 0 and stopped["err_code"] == "NOT_INSURED"
    assert resumed["err_code"] == "NOT_FILED", resumed
    assert [(h["action"], h["filing"]["status"]) for h in history["history"]] == [
        ("add", "active"), ("ended", "cancelled")]
    assert "(stopped)" in history["history"][-1]["reason"]
    assert refiled["accepted"] and again["infcode"] == 0, again
    assert system.metric("filing", "yidi_filings_ended_total", change="stopped") == ended_before + 1


@pytest.mark.parametrize("change", ["stopped", "moved"])
async def test_a_stay_admitted_while_insured_settles_under_that_insurance_after_it_changed(
        world, gateway, filings, change):
    """A stay is judged by the insurance held at admission: filing keeps the long-term filing the
    change ended in force for a stay admitted before it (R6, R7), and eligibility refused the
    discharge NOT_INSURED all the same. The personal account pays as the region states it when the
    insurance only stopped; after a move its balance went with the transfer, and it pays nothing.
    Care after the change is refused."""
    person = await world.person(category=None, balance="5000.00")
    await file(filings, world, person, category="long_term_resident", begndate="2020-01-01")

    def discharge(admitted: datetime) -> dict:
        stay = world.request(person, [("T-A", "1", "1000.00")], infno="2304", med_type="21", account=True)
        stay["input"]["data"]["begntime"] = admitted.strftime("%Y-%m-%d %H:%M:%S")
        return stay

    while_insured = await gateway.call(discharge(china_now() - timedelta(days=3)))
    if change == "stopped":
        await world.person(psn_no=person, category=None, balance="5000.00", active=False)
    else:
        await world.person(psn_no=person, category=None, balance="5000.00", insuplc_admdvs="990002")
    admitted_before = await gateway.call(discharge(china_now() - timedelta(days=3)))
    admitted_after = await gateway.call(discharge(china_now() + timedelta(seconds=2)))
    outpatient = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))

    assert while_insured["infcode"] == 0, while_insured
    assert Decimal(while_insured["output"]["setlinfo"]["acct_pay"]) > 0
    assert admitted_before["infcode"] == 0, admitted_before
    info = admitted_before["output"]["setlinfo"]
    assert Decimal(info["fund_pay_sumamt"]) > 0
    assert (Decimal(info["acct_pay"]) > 0) is (change == "stopped"), info
    assert admitted_after["err_code"] == "NOT_INSURED", admitted_after
    assert outpatient["err_code"] == "NOT_INSURED", outpatient


async def test_r6_a_stay_filed_for_after_admission_settles_though_an_insurance_change_ended_the_filing(
        world, gateway, filings):
    """Admitted unfiled, filed during the stay (R6), then the insurance stopped, which ended the
    filing (R7) before the discharge: the stay, settled under the insurance held at admission, was
    refused NOT_FILED (a review, session 46)."""
    person = await world.person(category=None)
    admitted = china_now() - timedelta(days=3)
    filed = await file(filings, world, person, category="long_term_resident",
                       begndate=(admitted + timedelta(days=1)).strftime("%Y-%m-%d"))
    await world.person(psn_no=person, category=None, active=False)
    stay = world.request(person, [("T-A", "1", "1000.00")], infno="2304", med_type="21")
    stay["input"]["data"]["begntime"] = admitted.strftime("%Y-%m-%d %H:%M:%S")
    discharged = await gateway.call(stay)
    assert filed["accepted"], filed
    assert discharged["infcode"] == 0, discharged


async def test_r4_a_category_named_after_a_kind_of_person_is_for_that_person(world, filings):
    """A retiree resettled elsewhere is a retiree, a worker posted elsewhere an employee in service
    (R4): an employee in service was filed as a resettled retiree."""
    employee = await world.person(category=None, psn_type="11")
    as_retiree = await file(filings, world, employee, category="retiree_resettled")
    as_worker = await file(filings, world, employee, category="posted_worker")
    assert not as_retiree["accepted"] and "is for a retiree (R4)" in as_retiree["reason"], as_retiree
    assert as_worker["accepted"], as_worker


async def test_r8_a_change_inside_the_regions_lock_is_refused(system, filings):
    locked = World(system.settings)
    # Insured in a county of province 93, which locks for six months in the test services'
    # settings: the province's lock holds for the regions inside it.
    locked.insured = "93" + locked.insured[2:]
    await locked.build(locked.policy())
    person = await locked.person(category=None)
    filed = await file(filings, locked, person)
    change = await file(filings, locked, person, "change", filing_id=filed["filing"]["filing_id"], category="posted_worker")
    assert filed["accepted"] and not change["accepted"]
    assert "locks a filing for 6 months" in change["reason"]


async def test_r21_an_office_filing_pending_past_two_working_days_shows_until_it_is_approved(system, world, filings):

    def overdue() -> float:
        return system.metric("filing", "yidi_filing_office_overdue", insured=world.insured)

    person = await world.person(category=None)
    request = filing_request(world, person, decl_source="office")
    asked = datetime.now(UTC) - timedelta(days=10)  # asked ten days ago, published only now
    answer = await filings.send_raw(orjson.dumps(request), correlation=request["reqid"], key=person,
                                    timestamp_ms=int(asked.timestamp() * 1000))
    pending = await asyncio.wait_for(answer, 15)
    assert pending["accepted"] and pending["filing"]["status"] == "pending", pending
    await until(lambda: overdue() >= 1, timeout=10, poll=0.1)
    oldest = system.metric("filing", "yidi_filing_office_overdue_oldest_timestamp_seconds", insured=world.insured)
    assert asked.timestamp() - 0.002 <= oldest <= asked.timestamp() + 0.001  # (a series not there reads 0)
    approved = await file(filings, world, person, "approve", filing_id=pending["filing"]["filing_id"],
                          decl_source="office")
    assert approved["filing"]["status"] == "active"
    await until(lambda: overdue() == 0, timeout=10, poll=0.1)  # the region's series taken out


async def test_r21_an_office_filing_waits_for_approval_and_keeps_its_history(world, gateway, filings):
    person = await world.person(category=None)
    pending = await file(filings, world, person, decl_source="office")
    before = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    filing_id = pending["filing"]["filing_id"]
    approved = await file(filings, world, person, "approve", filing_id=filing_id, opter="clerk 7", decl_source="office")
    after = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    history = await file(filings, world, person, "history", filing_id=filing_id)
    assert pending["filing"]["status"] == "pending" and before["err_code"] == "NOT_FILED"
    assert approved["filing"]["status"] == "active" and after["infcode"] == 0
    assert [(h["version"], h["action"], h["filing"]["status"]) for h in history["history"]] == [
        (1, "add", "pending"), (2, "approve", "active")
    ]
    assert history["history"][1]["opter"] == "clerk 7"
    # another person cannot read it, nor move it to another insured region
    stranger = await world.person(category=None)
    peek = await file(filings, world, stranger, "history", filing_id=filing_id)
    moved = await file(filings, world, person, "change", filing_id=filing_id, insuplc_admdvs="370100")
    assert not peek["accepted"] and peek["history"] == [] and "no filing" in peek["reason"]
    assert not moved["accepted"] and "does not change" in moved["reason"]


async def test_r19_an_outage_window_refuses_then_releases(world, gateway):
    person = await world.person()
    now = datetime.now(UTC)
    ends = now + timedelta(seconds=4)
    await world.load(region_status=[{"status_id": "S" + person, "admdvs": world.insured,
                                     "starts_at": (now - timedelta(seconds=1)).isoformat(), "ends_at": ends.isoformat(),
                                     "reason": "network maintenance"}])
    during = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    after = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    assert during["err_code"] == "REGION_UNAVAILABLE" and "network maintenance" in during["err_msg"]
    assert after["infcode"] == 0


async def test_r19_an_outage_of_the_insured_province_stops_its_regions(system, gateway):
    # Area codes nest: the province's platform in maintenance (published once, under 890000)
    # stops the settlements of a person insured in a county of it. No other world is in 89.
    hebei = World(system.settings)
    hebei.insured = "89" + hebei.insured[2:]
    await hebei.build()
    person = await hebei.person()
    now = datetime.now(UTC)
    ends = now + timedelta(seconds=8)  # the load and the first answer well inside it
    await hebei.load(region_status=[{"status_id": "S" + person, "admdvs": "890000",
                                     "starts_at": (now - timedelta(seconds=1)).isoformat(), "ends_at": ends.isoformat(),
                                     "reason": "maintenance of the provincial platform"}])
    during = await gateway.call(hebei.request(person, [("T-A", "1", "100.00")]))
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    after = await gateway.call(hebei.request(person, [("T-A", "1", "100.00")]))
    assert during["err_code"] == "REGION_UNAVAILABLE" and "provincial platform" in during["err_msg"], during
    assert after["infcode"] == 0, after


async def test_benefit_check_and_person_info_answer_from_the_same_data(world, gateway):
    person = await world.person()
    base = world.request(person, [("T-A", "1", "1.00")])
    check = base | {"infno": "2001"}
    info = base | {"infno": "1101", "msgid": base["msgid"][:-1] + "Z"}
    check_answer, info_answer = await gateway.call(check), await gateway.call(info)
    assert check_answer["output"]["eligible"] == "1" and check_answer["output"]["basis"] == "filed"
    assert info_answer["output"]["baseinfo"]["psn_no"] == person
    assert len(info_answer["output"]["filings"]) == 1
    # A person's identity, balance and filings go to networked facilities of the region only.
    stranger = await gateway.call(info | {"msgid": "H99999999999" + base["msgid"][12:-1] + "Y", "fixmedins_code": "H99999999999"})
    assert stranger["err_code"] == "UNKNOWN_FACILITY" and not stranger.get("output")
    # A benefit check from it fails the same way (it answered infcode 0, "eligible": "0").
    unknown = await gateway.call(check | {"msgid": "H99999999999" + base["msgid"][12:-1] + "X", "fixmedins_code": "H99999999999"})
    assert (unknown["infcode"], unknown["err_code"]) == (-1, "UNKNOWN_FACILITY") and not unknown.get("output")


async def test_a_facility_withdrawn_through_the_feed_is_refused_for_every_request(system, gateway):
    # Its designation withdrawn (published again with med_types []): through the real feed,
    # eligibility's table and its per-instance copy, its 1101, 2001 and settlements are all refused
    # UNKNOWN_FACILITY (the test review, session 49: only a patched repository had shown it).
    world = await World(system.settings).build()  # its own: the module's world keeps its facility
    person = await world.person()
    assert (await gateway.call(world.request(person, [("T-A", "1", "10.00")])))["infcode"] == 0
    await world.load(facilities=[{"fixmedins_code": world.facility, "fixmedins_name": "test hospital",
                                  "admdvs": world.treating, "level": 3, "med_types": []}])
    base = world.request(person, [("T-A", "1", "10.00")])
    for infno, suffix in (("1101", "W"), ("2001", "V"), ("2207", "U")):
        answer = await gateway.call(base | {"infno": infno, "msgid": base["msgid"][:-1] + suffix})
        assert (answer["infcode"], answer["err_code"]) == (-1, "UNKNOWN_FACILITY"), (infno, answer)
        assert not answer.get("output")


async def test_with_redis_stopped_answers_stay_right_and_the_cache_recovers(system, world, gateway, filings, local_stack):
    person = await world.person(category=None)
    filed = await file(filings, world, person)
    warm = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))  # cached now
    fallbacks = system.metric("eligibility", "yidi_eligibility_cache_total", result="fallback")
    local_stack("stop", "redis")
    try:
        during = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
        await file(filings, world, person, "cancel", filing_id=filed["filing"]["filing_id"])
        refused = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    finally:
        local_stack("start", "redis")
    await asyncio.sleep(1.5)  # the breaker tries Redis again
    after = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    assert warm["infcode"] == 0 and during["infcode"] == 0, (warm, during)
    assert refused["err_code"] == "NOT_FILED" and after["err_code"] == "NOT_FILED"
    assert system.metric("eligibility", "yidi_eligibility_cache_total", result="fallback") > fallbacks

    # The cache recovers: answered from Redis again, not through the fallback (the test review,
    # session 49: Postgres answers NOT_FILED too, so the answers alone did not show it).
    def lookups(result: str) -> float:
        return system.metric("eligibility", "yidi_eligibility_cache_total", result=result)

    async def cached() -> bool:
        before = lookups("hit"), lookups("fallback")
        answer = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
        assert answer["err_code"] == "NOT_FILED"
        return lookups("hit") > before[0] and lookups("fallback") == before[1]

    await until(cached, timeout=20, poll=0.5)


async def test_an_entry_another_instance_marked_stale_is_dropped_and_never_served(system, world, gateway, filings):
    """An instance that could neither write a change to Redis nor delete the old entry marks it
    stale in Postgres; the running eligibility drops it within about a second. Kept in that
    instance's memory only, it was served by the others until the TTL (300 s)."""
    import asyncpg
    import redis.asyncio as aioredis


    person = await world.person(category=None)
    filed = await file(filings, world, person)
    assert (await gateway.call(world.request(person, [("T-A", "1", "100.00")])))["infcode"] == 0  # cached now
    key = f"{system.settings.namespace}yidi:elig:{person}"
    redis = aioredis.from_url(system.settings.redis_url)
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        filed_entry = await redis.get(key)
        await file(filings, world, person, "cancel", filing_id=filed["filing"]["filing_id"])
        # As an instance cut off from Redis leaves it: the entry from before the cancellation, marked.
        await redis.set(key, filed_entry, ex=300)
        await conn.execute("INSERT INTO eligibility.cache_stale (psn_no, marked_at) VALUES ($1, clock_timestamp())",
                           person)

        async def dropped() -> bool:
            return await redis.get(key) != filed_entry and not await conn.fetchval(
                "SELECT count(*) FROM eligibility.cache_stale WHERE psn_no = $1", person)

        await until(dropped, timeout=10, poll=0.1)
        # forgotten as of the cancellation: a read-through of the filing from before it is refused
        version = int(filed_entry.partition(b"|")[0])
        assert int(await redis.get(f"{system.settings.namespace}yidi:elig-gone:{person}")) > version
        refused = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
        assert refused["err_code"] == "NOT_FILED", refused
    finally:
        await conn.close()
        await redis.aclose()


async def test_a_filing_reqid_used_again_for_another_request_is_refused(world, filings):
    person = await world.person(category=None)
    request = filing_request(world, person)
    first = await filings.call(request)
    again = await filings.call(request)
    other = await filings.call(request | {"category": "posted_worker"})
    assert first["accepted"] and again["accepted"] and again["filing"] == first["filing"]
    assert not other["accepted"] and "already used" in other["reason"]


async def test_a_filing_request_sent_again_to_another_reply_topic_is_answered_there(system, world, filings):
    # The request's hash leaves reply_to out: the same request from a sender that moved to another
    # topic is the same request, and its answer (the stored one) goes where this copy asks.
    person = await world.person(category=None)
    request = filing_request(world, person)
    first = await filings.call(request)
    async with GatewayClient(system.settings.kafka_bootstrap, namespace=system.settings.namespace,
                             request_topic="filing.requests", reply_to="gw.filing.moved", correlate_by="reqid") as moved:
        again = await moved.call(request | {"reply_to": "gw.filing.moved"})
    assert first["accepted"] and again["accepted"] and again["filing"] == first["filing"]
    await asyncio.sleep(0.5)  # an answer on the first topic would have come with the second one
    assert filings.answer_counts[request["reqid"]] == 1


async def test_a_feed_batch_applies_its_good_records_in_order_and_dead_letters_the_bad_one(system, world, gateway):
    """refdata.persons is applied a batch at a time: a record that does not validate goes to the
    dead-letter topic alone; of two records of one person in the batch, the later one wins."""
    from aiokafka import AIOKafkaProducer

    from yidi.platform.lag import wait_caught_up
    from yidi.refdata.loader import consumers_to_wait_for

    person = await world.person()  # filed, insured in world.insured
    other = "T" + uuid.uuid4().hex[:19].upper()
    record = {"psn_no": person, "psn_name": "first name", "insuplc_admdvs": world.insured, "insutype": "310",
              "psn_type": "11", "acct_balc": "0.00", "acct_version": "v1"}
    bad = b'{"psn_no": "' + other.encode() + b'", "insutype": "not a type"}'
    producer = AIOKafkaProducer(bootstrap_servers=system.settings.kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        topic = system.settings.topic("refdata.persons")
        for value in (orjson.dumps(record), bad, orjson.dumps(record | {"psn_name": "second name"}),
                      orjson.dumps(record | {"psn_no": other, "psn_name": "other person"})):
            await producer.send(topic, value, key=orjson.loads(value)["psn_no"].encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    await wait_caught_up(system.settings.kafka_bootstrap, consumers_to_wait_for(system.settings.namespace), timeout=60)

    base = world.request(person, [("T-A", "1", "1.00")])
    info = await gateway.call(base | {"infno": "1101"})
    assert info["output"]["baseinfo"]["psn_name"] == "second name"
    other_info = await gateway.call(world.request(other, [("T-A", "1", "1.00")]) | {"infno": "1101"})
    assert other_info["output"]["baseinfo"]["psn_name"] == "other person"
    dead = await _dead_letters(system.settings, "refdata.persons")
    assert any(value == bad and b"insutype" in headers["yidi-dlq-reason"] for value, headers in dead)


async def test_a_person_record_older_than_the_one_held_is_ignored_and_counted_stale(system, world, gateway):
    """A region reloading an earlier file: by updated_at, the record held stays, whatever the order."""
    from aiokafka import AIOKafkaProducer

    from yidi.platform.lag import wait_caught_up
    from yidi.refdata.loader import consumers_to_wait_for

    person = await world.person()
    record = {"psn_no": person, "psn_name": "newer name", "insuplc_admdvs": world.insured, "insutype": "310",
              "psn_type": "11", "acct_balc": "0.00", "acct_version": "v1", "updated_at": "2026-05-01T10:00:00+08:00"}
    stale_before = system.metric("eligibility", "yidi_refdata_records_total", feed="refdata.persons", outcome="stale")
    producer = AIOKafkaProducer(bootstrap_servers=system.settings.kafka_bootstrap)
    await producer.start()
    try:
        topic = system.settings.topic("refdata.persons")
        await producer.send_and_wait(topic, orjson.dumps(record), key=person.encode())
        await wait_caught_up(system.settings.kafka_bootstrap, consumers_to_wait_for(system.settings.namespace), timeout=60)
        older = record | {"psn_name": "older name", "updated_at": "2026-04-30 23:00:00"}
        await producer.send_and_wait(topic, orjson.dumps(older), key=person.encode())
        # Dated in the future it would hold the person for good (every later record "older"): refused.
        future = record | {"psn_name": "future name", "updated_at": "2999-01-01T00:00:00+08:00"}
        await producer.send_and_wait(topic, orjson.dumps(future), key=person.encode())
    finally:
        await producer.stop()
    await wait_caught_up(system.settings.kafka_bootstrap, consumers_to_wait_for(system.settings.namespace), timeout=60)

    info = await gateway.call(world.request(person, [("T-A", "1", "1.00")]) | {"infno": "1101"})
    assert info["output"]["baseinfo"]["psn_name"] == "newer name"
    assert system.metric("eligibility", "yidi_refdata_records_total", feed="refdata.persons", outcome="stale") == stale_before + 1
    dead = await _dead_letters(system.settings, "refdata.persons")
    assert any(person.encode() in value and b"future name" in value
               and b"ahead of the platform's clock" in headers["yidi-dlq-reason"] for value, headers in dead)
