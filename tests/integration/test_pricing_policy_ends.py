"""Pricing on the real Postgres when a region's own policy ends (pooling moved up to the province):
from its enddate the province's policy prices the region's insured, stored and read back as
published."""

from __future__ import annotations

import json
from datetime import date

import orjson
import pytest

from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.platform.db import create_pool, migrate

from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository
from tests.integration.test_pricing_unreadable_reference import TREATING, work

pytestmark = pytest.mark.integration

# Province 86 and its counties: no other test prices there (the session's database is shared).
PROVINCE, ENDED, OWN = "860000", "861101", "862201"


async def test_from_its_enddate_a_regions_insured_are_priced_by_the_provinces_policy(settings):
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        repo = PricingRepository(pool)
        rule = lambda ratio: [{"med_types": ["11"], "deductible": "0.00", "ratio": ratio}]  # noqa: E731
        await repo.upsert_policy(PolicyRecord.model_validate({
            "insuplc_admdvs": PROVINCE, "insutype": "310", "version": "P1", "begndate": "2020-01-01", "rules": rule("0.50")}))
        # The requests are dated 2022-07-01: one county's policy ended the day before, the other's runs on.
        for region, end in ((ENDED, "2022-07-01"), (OWN, "2022-07-02")):
            await repo.upsert_policy(PolicyRecord.model_validate({
                "insuplc_admdvs": region, "insutype": "310", "version": "C1", "begndate": "2020-01-01",
                "enddate": end, "rules": rule("0.80")}))
        await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
            "mdtrtarea_admvs": TREATING, "hilist_code": "FINE", "hilist_name": "fine", "chrgitm_lv": "01",
            "begndate": "2020-01-01"}))
        out = await PricingHandler(settings, repo)([work(ENDED, "FINE", 1), work(OWN, "FINE", 2)])
        answers = [orjson.loads(o.value) for o in out if o.answered]
        assert [a["output"]["setlinfo"]["hifp_pay"] for a in answers] == ["50.00", "80.00"], answers
    finally:
        await pool.close()



async def test_an_unreadable_version_an_ended_one_replaced_refuses_nothing_and_one_that_ends_stops_refusing(settings):
    # A stored version this one cannot read decides a request only where policy_in_force would have
    # picked it. The county's old unreadable version, replaced by a readable one that has since
    # ended, refused every request of the county once the province's was picked; and an unreadable
    # version's own enddate was never read, so an ended one refused for ever.
    replaced, ends = "863301", "864401"
    pool = await create_pool(settings.database_url, size=2)
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        repo = PricingRepository(pool)
        rule = [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.80"}]
        await repo.upsert_policy(PolicyRecord.model_validate({
            "insuplc_admdvs": PROVINCE, "insutype": "310", "version": "P1", "begndate": "2020-01-01",
            "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": "0.50"}]}))
        await repo.upsert_policy(PolicyRecord.model_validate({
            "insuplc_admdvs": replaced, "insutype": "310", "version": "C1", "begndate": "2021-01-01",
            "enddate": "2022-01-01", "rules": rule}))
        for region, begins, end in ((replaced, "2019-01-01", None), (ends, "2021-01-01", "2022-01-01")):
            record = {"insuplc_admdvs": region, "insutype": "310", "version": "OLD", "begndate": begins,
                      "rules": [{"med_types": ["11"], "ratio": "1.70"}]} | ({"enddate": end} if end else {})
            await pool.execute(
                """INSERT INTO pricing.policies (insuplc_admdvs, insutype, begndate, version, record, rev)
                   VALUES ($1, '310', $2::date, 'OLD', $3::jsonb, nextval('pricing.ref_rev')) ON CONFLICT DO NOTHING""",
                region, date.fromisoformat(begins), json.dumps(record))
        await repo.upsert_catalogue_item(CatalogueRecord.model_validate({
            "mdtrtarea_admvs": TREATING, "hilist_code": "FINE", "hilist_name": "fine", "chrgitm_lv": "01",
            "begndate": "2020-01-01"}))
        out = await PricingHandler(settings, repo)([work(replaced, "FINE", 1), work(ends, "FINE", 2)])
        answers = [orjson.loads(o.value) for o in out if o.answered]
        assert [a["err_code"] for a in answers] == [None, None], answers  # dated 2022-07-01: the province's
        assert [a["output"]["setlinfo"]["hifp_pay"] for a in answers] == ["50.00", "50.00"]
    finally:
        await pool.close()
