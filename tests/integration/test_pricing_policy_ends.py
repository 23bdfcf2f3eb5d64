"""Pricing on the real Postgres when a region's own policy ends (pooling moved up to the province):
from its enddate the province's policy prices the region's insured, stored and read back as
published."""

from __future__ import annotations

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
