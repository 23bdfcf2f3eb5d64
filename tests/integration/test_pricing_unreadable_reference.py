"""Pricing on the real Postgres with a stored policy or catalogue item this version cannot read
(stored by an earlier version, before a check was added): the requests that need it are answered
INTERNAL_ERROR and dead-lettered, the rest of the batch is priced. The read raised, and stopped
pricing for every region until the row was fixed."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import orjson
import pytest

from yidi.contracts.envelope import RequestEnvelope
from yidi.contracts.internal import EligibleWork, PersonSnapshot
from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.domain.codes import FilingCategory
from yidi.platform.db import create_pool, migrate
from yidi.platform.kafka import Incoming

from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository
from tests.conftest import unique

pytestmark = pytest.mark.integration

WE1 = json.loads((Path(__file__).resolve().parents[3] / "shared" / "examples" / "we1" / "request.json").read_text())
# Regions no other test settles in (the session's database is shared).
BROKEN_POLICY, BROKEN_ITEM, FINE, OLD_BROKEN = "993000", "994000", "996000", "998000"
TREATING = "997000"


def work(insured: str, code: str, offset: int, infno: str = "2206") -> Incoming:
    raw = copy.deepcopy(WE1)  # dated 2022-07-01
    raw.update(infno=infno, msgid=raw["fixmedins_code"] + unique("M"), insuplc_admdvs=insured, mdtrtarea_admvs=TREATING)
    raw["input"]["data"]["mdtrt_id"] = unique("V")
    raw["input"]["data"]["feedetail"] = [{"feedetl_sn": "1", "hilist_code": code, "hilist_name": code, "cnt": "1",
                                          "pric": "100.00", "det_item_fee_sumamt": "100.00"}]
    raw["input"]["data"].update(medfee_sumamt="100.00", med_type="11")
    request = RequestEnvelope.model_validate(raw)
    person = PersonSnapshot(psn_no=raw["input"]["data"]["psn_no"], psn_name="Wang", psn_type="12", insutype="310",
                            insuplc_admdvs=insured)
    eligible = EligibleWork(request=request, request_hash=request.payload_hash(), request_ts_ms=0, person=person,
                            facility_level=3, basis="filing", filing_id="F1",
                            filing_category=FilingCategory.RETIREE_RESETTLED)
    return Incoming("t.settlement.eligible", 0, offset, b"k", eligible.model_dump_json().encode(), 0)


async def test_a_stored_reference_this_version_cannot_read_refuses_only_the_requests_that_need_it(settings, caplog):
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        repo = PricingRepository(pool)
        for region in (BROKEN_POLICY, BROKEN_ITEM, FINE, OLD_BROKEN):
            await repo.upsert_policy(PolicyRecord.model_validate({
                "insuplc_admdvs": region, "insutype": "310", "version": "T1", "begndate": "2020-01-01",
                "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}))
        for code in ("FINE", "EXPIRED"):
            await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
                "mdtrtarea_admvs": TREATING, "hilist_code": code, "hilist_name": code, "chrgitm_lv": "01",
                "begndate": "2020-01-01"}))
        # Versions an earlier version stored that this one refuses: in force on 2022-07-01 (a
        # policy from 2021, an item from 2020, open), or not (a policy from 2019 and an item of
        # 2019, both replaced by readable ones from 2020).
        for region, begins in ((BROKEN_POLICY, "2021-01-01"), (OLD_BROKEN, "2019-01-01")):
            await pool.execute(
                """INSERT INTO pricing.policies (insuplc_admdvs, insutype, begndate, version, record, rev)
                   VALUES ($1, '310', $2::date, 'OLD', $3::jsonb, nextval('pricing.ref_rev'))
                   ON CONFLICT DO NOTHING""",
                region, date.fromisoformat(begins), json.dumps({"insuplc_admdvs": region, "insutype": "310", "version": "OLD",
                                            "begndate": begins, "rules": [{"med_types": ["11"], "ratio": "1.70"}]}))
        for code, begins, ends in (("BROKEN", "2020-01-01", None), ("EXPIRED", "2019-01-01", "2020-01-01")):
            await pool.execute(
                """INSERT INTO pricing.catalogue (mdtrtarea_admvs, hilist_code, begndate, enddate, record, rev)
                   VALUES ($1, $2, $3::date, $4::date, $5::jsonb, nextval('pricing.ref_rev'))
                   ON CONFLICT DO NOTHING""",
                TREATING, code, date.fromisoformat(begins), ends and date.fromisoformat(ends), json.dumps({"mdtrtarea_admvs": TREATING, "hilist_code": code,
                                                         "hilist_name": "b", "chrgitm_lv": "07", "begndate": begins}))

        handler = PricingHandler(settings, repo)
        refused_settlement = work(BROKEN_ITEM, "BROKEN", 2, infno="2207")
        out = await handler([work(BROKEN_POLICY, "FINE", 1), refused_settlement, work(FINE, "FINE", 3),
                             work(BROKEN_ITEM, "FINE", 4), work(OLD_BROKEN, "FINE", 5), work(FINE, "EXPIRED", 6)])
        answers = [orjson.loads(o.value) for o in out if o.answered]
        dead = [o for o in out if o.topic.endswith(".dlq")]
        assert [a["err_code"] for a in answers] == ["INTERNAL_ERROR", "INTERNAL_ERROR", None, None, None, None], answers
        assert [a["output"]["setlinfo"]["hifp_pay"] for a in answers[2:]] == ["80.00"] * 4
        assert len(dead) == 2 and all(b"cannot read" in dict(d.headers)["yidi-dlq-reason"] for d in dead)
        assert not [o for o in out if o.topic.endswith("settlement.priced")]  # the refused settlement: nothing recorded
        msgid = orjson.loads(refused_settlement.value)["request"]["msgid"]
        assert await pool.fetchval("SELECT count(*) FROM pricing.requests WHERE msgid = $1", msgid) == 0
        logged = sum("cannot be read by this version" in r.getMessage() for r in caplog.records)
        again = await handler([work(BROKEN_POLICY, "FINE", 7)])
        assert [orjson.loads(o.value)["err_code"] for o in again if o.answered] == ["INTERNAL_ERROR"]
        assert logged == 4  # each unreadable version once ...
        assert sum("cannot be read by this version" in r.getMessage() for r in caplog.records) == logged  # ... not again
    finally:
        await pool.close()


async def test_an_unreadable_version_of_a_city_or_province_refuses_only_where_it_would_decide(settings, caplog):
    # Area codes nest: a county's item or policy may come from its city or province. An unreadable
    # version there decides a request only where no more specific region has a readable one.
    treating_province, treating_city, treating = "880000", "881100", "881101"
    # Province 85: a province's policy stored here prices every region under it, in this session's
    # database (test_pricing_handled_again expects region 875000 to have none).
    insured_province, broken_city, insured_broken, insured_fine = "850000", "851100", "851101", "852201"
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        repo = PricingRepository(pool)
        await repo.upsert_policy(PolicyRecord.model_validate({
            "insuplc_admdvs": insured_province, "insutype": "310", "version": "T1", "begndate": "2020-01-01",
            "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}))
        for region, code in ((treating_province, "FINE"), (treating_city, "CITY_OVER"), (treating_province, "CITY_BROKEN")):
            await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
                "mdtrtarea_admvs": region, "hilist_code": code, "hilist_name": code, "chrgitm_lv": "01",
                "begndate": "2020-01-01"}))
        await pool.execute(
            """INSERT INTO pricing.policies (insuplc_admdvs, insutype, begndate, version, record, rev)
               VALUES ($1, '310', '2021-01-01', 'OLD', $2::jsonb, nextval('pricing.ref_rev')) ON CONFLICT DO NOTHING""",
            broken_city, json.dumps({"insuplc_admdvs": broken_city, "insutype": "310", "version": "OLD",
                                     "begndate": "2021-01-01", "rules": [{"med_types": ["11"], "ratio": "1.70"}]}))
        for region, code in ((treating_province, "PROV_BROKEN"), (treating_province, "CITY_OVER"),
                             (treating_city, "CITY_BROKEN")):
            await pool.execute(
                """INSERT INTO pricing.catalogue (mdtrtarea_admvs, hilist_code, begndate, enddate, record, rev)
                   VALUES ($1, $2, '2020-06-01', NULL, $3::jsonb, nextval('pricing.ref_rev')) ON CONFLICT DO NOTHING""",
                region, code, json.dumps({"mdtrtarea_admvs": region, "hilist_code": code, "hilist_name": "b",
                                          "chrgitm_lv": "07", "begndate": "2020-06-01"}))

        def nested(insured: str, code: str, offset: int) -> Incoming:
            record = work(insured, code, offset)
            body = orjson.loads(record.value)
            body["request"]["mdtrtarea_admvs"] = treating
            return Incoming(record.topic, 0, offset, b"k", orjson.dumps(body), 0)

        out = await PricingHandler(settings, repo)([
            nested(insured_fine, "FINE", 1),          # the province's readable item and policy
            nested(insured_fine, "PROV_BROKEN", 2),   # only the province has it, unreadable
            nested(insured_fine, "CITY_OVER", 3),     # the city's readable entry stands over the province's
            nested(insured_fine, "CITY_BROKEN", 4),   # the city's unreadable one would stand
            nested(insured_broken, "FINE", 5),        # the insured city's unreadable policy would stand
        ])
        answers = [orjson.loads(o.value) for o in out if o.answered]
        assert [a["err_code"] for a in answers] == [None, "INTERNAL_ERROR", None, "INTERNAL_ERROR", "INTERNAL_ERROR"], answers
        assert [answers[i]["output"]["setlinfo"]["hifp_pay"] for i in (0, 2)] == ["80.00", "80.00"]
    finally:
        await pool.close()
