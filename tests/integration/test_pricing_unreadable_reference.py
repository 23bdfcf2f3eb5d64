"""Pricing on the real Postgres with a stored policy or catalogue item this version cannot read
(stored by an earlier version, before a check was added): the requests that need it are answered
INTERNAL_ERROR and dead-lettered, the rest of the batch is priced. The read raised, and stopped
pricing for every region until the row was fixed."""

from __future__ import annotations

import copy
import json
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
BROKEN_POLICY, BROKEN_ITEM, FINE = "993000", "994000", "996000"
TREATING = "997000"


def work(insured: str, code: str, offset: int) -> Incoming:
    raw = copy.deepcopy(WE1)
    raw.update(infno="2206", msgid=unique("M"), insuplc_admdvs=insured, mdtrtarea_admvs=TREATING)
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
        for region in (BROKEN_ITEM, FINE):
            await repo.upsert_policy(PolicyRecord.model_validate({
                "insuplc_admdvs": region, "insutype": "310", "version": "T1", "begndate": "2020-01-01",
                "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]}))
        await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
            "mdtrtarea_admvs": TREATING, "hilist_code": "FINE", "hilist_name": "fine", "chrgitm_lv": "01",
            "begndate": "2020-01-01"}))
        # Rows an earlier version stored that this one refuses.
        await pool.execute(
            """INSERT INTO pricing.policies (insuplc_admdvs, insutype, begndate, version, record, rev)
               VALUES ($1, '310', '2020-01-01', 'OLD', $2::jsonb, nextval('pricing.ref_rev'))
               ON CONFLICT DO NOTHING""",
            BROKEN_POLICY, json.dumps({"insuplc_admdvs": BROKEN_POLICY, "insutype": "310", "version": "OLD",
                                       "begndate": "2020-01-01", "rules": [{"med_types": ["11"], "ratio": "1.70"}]}))
        await pool.execute(
            """INSERT INTO pricing.catalogue (mdtrtarea_admvs, hilist_code, begndate, record, rev)
               VALUES ($1, 'BROKEN', '2020-01-01', $2::jsonb, nextval('pricing.ref_rev'))
               ON CONFLICT DO NOTHING""",
            TREATING, json.dumps({"mdtrtarea_admvs": TREATING, "hilist_code": "BROKEN", "hilist_name": "b",
                                  "chrgitm_lv": "07", "begndate": "2020-01-01"}))

        handler = PricingHandler(settings, repo)
        out = await handler([work(BROKEN_POLICY, "FINE", 1), work(BROKEN_ITEM, "BROKEN", 2), work(FINE, "FINE", 3),
                             work(BROKEN_ITEM, "FINE", 4)])
        answers = [orjson.loads(o.value) for o in out if o.answered]
        dead = [o for o in out if o.topic.endswith(".dlq")]
        assert [a["err_code"] for a in answers] == ["INTERNAL_ERROR", "INTERNAL_ERROR", None, None], answers
        assert [a["output"]["setlinfo"]["hifp_pay"] for a in answers[2:]] == ["80.00", "80.00"]
        assert len(dead) == 2 and all(b"cannot read" in dict(d.headers)["yidi-dlq-reason"] for d in dead)
        assert sum("cannot be read by this version" in r.getMessage() for r in caplog.records) == 2
        await handler([work(BROKEN_POLICY, "FINE", 5)])
        assert sum("cannot be read by this version" in r.getMessage() for r in caplog.records) == 2  # logged once
    finally:
        await pool.close()
