"""Pricing on the real Postgres, a batch handled again after its Postgres commit (its Kafka
transaction lost: a rebalance while it was in hand, a broker away, a crash between the two
commits): every record is answered as the first attempt answered it. The requests that attempt
stored (settlements, cancellations) are replayed from pricing.requests; the refusals eligibility
made travel in the record itself; the ones pricing decided without storing (refusals,
pre-settlements' quotes) were decided again, against a state that already held
the batch's later settlements and cancellations (a review, session 37): a settlement refused
PREPAYMENT_EXHAUSTED or ALREADY_SETTLED settled, a quote counted the settlement after it."""

from __future__ import annotations

import copy
import itertools
from decimal import Decimal

import orjson
import pytest

from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository
from tests.conftest import unique
from tests.integration.test_pricing_unreadable_reference import TREATING, WE1
from yidi.contracts.envelope import RequestEnvelope
from yidi.contracts.internal import EligibleWork, PersonSnapshot
from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.domain.codes import FilingCategory
from yidi.platform.db import create_pool, migrate
from yidi.platform.kafka import Incoming

pytestmark = pytest.mark.integration

# Insured regions no other test settles in (the session's database is shared).
REFUSING, VISITS, QUOTES, KEPT, UNPRICED, UNLISTED = "871000", "872000", "873000", "874000", "875000", "876000"
# A treating district of a province no test loads a catalogue for, but this file's last test.
NO_CATALOGUE = "846101"  # province 84: no other test catalogues there (880000 has one: test_pricing_unreadable_reference)
# Each record its own place in settlement.eligible, as Kafka gives them (decided answers are kept by place).
PLACES = itertools.count(1)


def _eligible(settings, request: dict, offset: int, person: PersonSnapshot | None) -> Incoming:
    envelope = RequestEnvelope.model_validate(request)
    work = EligibleWork(request=envelope, request_hash=envelope.payload_hash(), request_ts_ms=0, person=person,
                        facility_level=3, basis="filing" if person else "", filing_id="F1" if person else "",
                        filing_category=FilingCategory.RETIREE_RESETTLED if person else None)
    return Incoming(settings.topic("settlement.eligible"), 0, offset, b"k", work.model_dump_json().encode(), 0)


def bill(settings, insured: str, code: str, offset: int, *, psn_no: str, visit: str | None = None,
         infno: str = "2207", treating: str = TREATING) -> Incoming:
    raw = copy.deepcopy(WE1)  # dated 2022-07-01
    raw.update(infno=infno, msgid=raw["fixmedins_code"] + unique("M"), insuplc_admdvs=insured, mdtrtarea_admvs=treating)
    raw["input"]["data"].update(psn_no=psn_no, mdtrt_id=visit or unique("V"), medfee_sumamt="1000.00", med_type="11",
                                feedetail=[{"feedetl_sn": "1", "hilist_code": code, "hilist_name": code, "cnt": "1",
                                            "pric": "1000.00", "det_item_fee_sumamt": "1000.00"}])
    person = PersonSnapshot(psn_no=psn_no, psn_name="Wang", psn_type="12", insutype="310", insuplc_admdvs=insured)
    return _eligible(settings, raw, offset, person)


def cancellation(settings, insured: str, offset: int, *, psn_no: str, visit: str, setl_id: str) -> Incoming:
    raw = copy.deepcopy(WE1)
    raw.update(infno="2208", msgid=raw["fixmedins_code"] + unique("C"), insuplc_admdvs=insured, mdtrtarea_admvs=TREATING)
    raw["input"]["data"] = {"psn_no": psn_no, "mdtrt_id": visit, "setl_id": setl_id}
    return _eligible(settings, raw, offset, None)


def outcomes(settings, out) -> list[str]:
    """Each record's outcome in order: a refusal's code, a quote's fund payment, or what pricing
    passed on to clearing (a settlement's fund payment, a cancellation)."""
    said = []
    for o in out:
        value = orjson.loads(o.value)
        if o.answered is not None:
            said.append(value.get("err_code") or "quote " + value["output"]["setlinfo"]["fund_pay_sumamt"])
        elif o.topic == settings.topic("settlement.priced") and "notice" in value:
            said.append("notice " + value["draw"])  # a refusal told to clearing
        elif o.topic == settings.topic("settlement.priced"):
            said.append(f"{value['kind']} " + (value["facts"]["fund_pay_sumamt"] if value["facts"] else value["target_setl_id"]))
    return said


async def _priced_world(repo: PricingRepository, insured: str, code: str, deductible: str) -> None:
    await repo.upsert_policy(PolicyRecord.model_validate({
        "insuplc_admdvs": insured, "insutype": "310", "version": "T1", "begndate": "2020-01-01",
        "rules": [{"med_types": ["11"], "deductible": deductible, "ratio": "0.80"}]}))
    await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
        "mdtrtarea_admvs": TREATING, "hilist_code": code, "hilist_name": code, "chrgitm_lv": "01",
        "begndate": "2020-01-01"}))


@pytest.fixture
async def repo(settings):
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        yield PricingRepository(pool)
    finally:
        await pool.close()


async def test_a_settlement_refused_for_the_prepayment_is_refused_again_not_settled(settings, repo):
    # Under `refuse`, 1,000.00 left for the pair: the first settlement draws 800, the second is refused.
    code = unique("DRUG")
    await _priced_world(repo, REFUSING, code, "0.00")
    await repo.upsert_prepayment(REFUSING, TREATING, Decimal("1000.00"), 1)
    refusing = settings.model_copy(update={"prepayment_policy": "refuse"})
    batch = [bill(refusing, REFUSING, code, next(PLACES), psn_no=unique("P")) for _ in range(2)]
    first = outcomes(refusing, await PricingHandler(refusing, repo)(batch))
    again = outcomes(refusing, await PricingHandler(refusing, repo)(batch))  # a new owner of the partition
    assert first == ["settle 800.00", "PREPAYMENT_EXHAUSTED", "notice 800.00"]  # and clearing told of it
    # Was: the second settled, 1,600.00 drawn on 1,000.00. Answered as decided, without a notice
    # again: the account's next refusal on this instance tells clearing.
    assert again == first[:2]


async def test_a_settlement_refused_as_already_settled_is_refused_again_after_the_cancellation_behind_it(settings, repo):
    code, psn_no, visit = unique("DRUG"), unique("P"), unique("V")
    await _priced_world(repo, VISITS, code, "0.00")
    handler = PricingHandler(settings, repo)
    first_bill = bill(settings, VISITS, code, next(PLACES), psn_no=psn_no, visit=visit)
    (settled,) = [orjson.loads(o.value) for o in await handler([first_bill])]
    setl_id = settled["facts"]["setl_id"]
    batch = [bill(settings, VISITS, code, next(PLACES), psn_no=psn_no, visit=visit),  # the visit again, under a new msgid
             cancellation(settings, VISITS, next(PLACES), psn_no=psn_no, visit=visit, setl_id=setl_id)]
    first = outcomes(settings, await handler(batch))
    again = outcomes(settings, await PricingHandler(settings, repo)(batch))
    assert first == ["ALREADY_SETTLED", f"cancel {setl_id}"]
    assert again == first  # was: the visit settled, the cancellation behind it taken as if it came first


async def test_a_quote_before_a_settlement_of_its_batch_is_quoted_again_as_it_was(settings, repo):
    code, psn_no = unique("DRUG"), unique("P")
    await _priced_world(repo, QUOTES, code, "500.00")
    batch = [bill(settings, QUOTES, code, next(PLACES), psn_no=psn_no, infno="2206"),
             bill(settings, QUOTES, code, next(PLACES), psn_no=psn_no)]
    first = outcomes(settings, await PricingHandler(settings, repo)(batch))
    again = outcomes(settings, await PricingHandler(settings, repo)(batch))
    assert first == ["quote 400.00", "settle 400.00"]  # (1,000 − 500) × 0.80: the deductible still to pay
    assert again == first  # was: quoted 800.00, the deductible taken by the settlement behind it
    # A resend (the same request at a later place) is decided anew, on what is stored now.
    resent = Incoming(batch[0].topic, batch[0].partition, next(PLACES), batch[0].key, batch[0].value, 0)
    assert outcomes(settings, await PricingHandler(settings, repo)([resent])) == ["quote 800.00"]
    # A place answered for another msgid (the topic deleted and made again, its offsets from 0 anew)
    # decides nothing for this one.
    other = bill(settings, QUOTES, code, batch[0].offset, psn_no=psn_no, infno="2206")
    assert outcomes(settings, await PricingHandler(settings, repo)([other])) == ["quote 800.00"]


async def test_refusals_are_kept_quotes_only_with_a_stored_request_and_all_go_after_two_weeks(settings, repo):
    # A refusal of a settlement is kept always (decided again after a group's offsets were reset,
    # it might settle a bill the facility took cash for); a quote only when its batch stores a
    # request (a batch storing none wrote nothing its second attempt reads; a quote settles
    # nothing). Dropped after 14 days in bounded statements of their own (diff reviews, session 37).
    from yidi.platform.db import forget_in_chunks

    code, psn_no = unique("DRUG"), unique("P")
    await _priced_world(repo, KEPT, code, "0.00")
    alone = bill(settings, KEPT, code, next(PLACES), psn_no=psn_no, infno="2206")
    refused = bill(settings, UNPRICED, code, next(PLACES), psn_no=psn_no)  # no policy there: NO_POLICY
    assert outcomes(settings, await PricingHandler(settings, repo)([alone])) == ["quote 800.00"]
    assert outcomes(settings, await PricingHandler(settings, repo)([refused])) == ["NO_POLICY"]
    quote = bill(settings, KEPT, code, next(PLACES), psn_no=psn_no, infno="2206")
    await PricingHandler(settings, repo)([quote, bill(settings, KEPT, code, next(PLACES), psn_no=psn_no)])

    async def kept(record: Incoming) -> int:
        return await repo._pool.fetchval("SELECT count(*) FROM pricing.decided WHERE (topic, part, off) = ($1, $2, $3)",
                                         record.topic, record.partition, record.offset)

    assert (await kept(alone), await kept(refused), await kept(quote)) == (0, 1, 1)
    async with repo.transaction() as conn:
        await conn.execute("UPDATE pricing.decided SET decided_at = now() - interval '15 days'")
        await conn.execute("""INSERT INTO pricing.decided (topic, part, off, msgid, request_hash, answer, decided_at)
                              SELECT 'old', 0, n, 'M', 'h', '{}', now() - interval '15 days'
                              FROM generate_series(1, 25) AS n""")
    # Ten at a time, in one pass until none is left.
    await forget_in_chunks("test", repo, lambda conn: repo.forget_decided(conn, limit=10), limit=10)
    assert await repo._pool.fetchval("SELECT count(*) FROM pricing.decided WHERE decided_at < now() - interval '14 days'") == 0


async def test_a_place_answered_for_another_payload_of_the_same_msgid_decides_nothing(settings, repo):
    # A topic deleted and made again numbers its records from 0 anew: the same place may hold another
    # bill under the same msgid. Its quote is not the other's, and it takes the place over, so a
    # second attempt of it answers its own (diff reviews, session 37).
    code, psn_no = unique("DRUG"), unique("P")
    await _priced_world(repo, KEPT, code, "0.00")
    quote = bill(settings, KEPT, code, next(PLACES), psn_no=psn_no, infno="2206")
    await PricingHandler(settings, repo)([quote, bill(settings, KEPT, code, next(PLACES), psn_no=psn_no)])
    other = orjson.loads(quote.value)
    other["request"]["input"]["data"]["feedetail"][0].update(cnt="2", det_item_fee_sumamt="2000.00")
    other["request"]["input"]["data"]["medfee_sumamt"] = "2000.00"
    request = RequestEnvelope.model_validate(other["request"])
    other["request_hash"] = request.payload_hash()
    again = Incoming(quote.topic, quote.partition, quote.offset, quote.key, orjson.dumps(other), 0)
    settle = bill(settings, KEPT, code, next(PLACES), psn_no=unique("P"))
    assert outcomes(settings, await PricingHandler(settings, repo)([again, settle])) == ["quote 1600.00", "settle 800.00"]
    assert outcomes(settings, await PricingHandler(settings, repo)([again, settle])) == ["quote 1600.00", "settle 800.00"]


async def test_a_bill_in_a_region_with_no_catalogue_at_all_is_refused_until_one_is_loaded(settings, repo):
    # Every line "not in the catalogue", the patient charged the whole bill by a settlement that
    # succeeded: reference data missing, refused as a policy missing is (a review, session 49).
    # Asked again once the province's catalogue arrives, by the same handler (a region without one
    # is not remembered as such).
    code, psn_no = unique("DRUG"), unique("P")
    await repo.upsert_policy(PolicyRecord.model_validate({
        "insuplc_admdvs": UNLISTED, "insutype": "310", "version": "T1", "begndate": "2020-01-01",
        "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}))
    handler = PricingHandler(settings, repo)
    for infno in ("2206", "2207"):
        refused = bill(settings, UNLISTED, code, next(PLACES), psn_no=psn_no, infno=infno, treating=NO_CATALOGUE)
        [out] = await handler([refused])
        answer = orjson.loads(out.value)
        assert answer["err_code"] == "NO_POLICY", answer
        assert f"Treating region {NO_CATALOGUE} has no catalogue loaded" in answer["err_msg"]
    await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
        "mdtrtarea_admvs": "840000", "hilist_code": code, "hilist_name": code, "chrgitm_lv": "01",
        "begndate": "2020-01-01"}))
    priced = bill(settings, UNLISTED, code, next(PLACES), psn_no=psn_no, treating=NO_CATALOGUE)
    assert outcomes(settings, await handler([priced])) == ["settle 800.00"]
    # A region of a province with one: priced, a line it lacks self-paid, as before.
    other = bill(settings, UNLISTED, unique("UNLISTED"), next(PLACES), psn_no=psn_no, treating="846102")
    assert outcomes(settings, await handler([other])) == ["settle 0.00"]
