"""Policy and catalogue versions by their own time (updated_at, pricing migration 009), on the real
Postgres: a record older than the one held is ignored and counted stale, whatever the order they
arrive in, so that reloading an earlier file no longer undoes a correction (session 50)."""

from __future__ import annotations

import orjson
import pytest

from yidi.contracts.refdata import CatalogueRecord, PolicyRecord
from yidi.platform.db import create_pool, migrate

from services.pricing.handlers import PricingHandler
from services.pricing.repository import PricingRepository
from tests.conftest import unique
from tests.integration.test_pricing_unreadable_reference import TREATING, work

pytestmark = pytest.mark.integration

INSURED = "990000"  # a region no other test settles for (the session's database is shared)


def policy(ratio: str, updated_at: str = "") -> PolicyRecord:
    return PolicyRecord.model_validate({
        "insuplc_admdvs": INSURED, "insutype": "310", "version": f"R{ratio}", "begndate": "2020-01-01",
        "rules": [{"med_types": ["11"], "deductible": "0.00", "ratio": ratio}], "updated_at": updated_at})


def item(code: str, ceiling: str, updated_at: str = "") -> CatalogueRecord:
    return CatalogueRecord.model_validate({
        "mdtrtarea_admvs": TREATING, "hilist_code": code, "hilist_name": code, "chrgitm_lv": "01",
        "pric_uplmt_amt": ceiling, "begndate": "2020-01-01", "updated_at": updated_at})


async def test_a_version_older_than_the_one_held_is_ignored_whatever_the_order(settings):
    pool = await create_pool(settings.database_url, size=2)
    code = unique("TIMED")
    try:
        await migrate(pool, "pricing", "services.pricing.migrations")
        repo = PricingRepository(pool)

        async def hifp_pay() -> str:
            out = await PricingHandler(settings, repo)([work(INSURED, code, 1)])
            (answer,) = [orjson.loads(o.value) for o in out if o.answered]
            return answer["output"]["setlinfo"]["hifp_pay"]

        # The corrected version (May) arrives, then the earlier file's (April): the correction stays.
        assert await repo.upsert_policy(policy("0.90", "2026-05-01T10:00:00+08:00")) == 0
        assert await repo.upsert_catalogue_item(item(code, "100.00", "2026-05-01T10:00:00+08:00")) == 0
        assert await repo.upsert_policy(policy("0.10", "2026-04-30 23:00:00")) == 1  # China time: older
        assert await repo.upsert_catalogue_item(item(code, "50.00", "2026-04-30T15:00:00Z")) == 1
        assert await hifp_pay() == "90.00"  # 100.00 within its ceiling, at 0.90
        # The same record again applies (idempotent); one without a time applies in arrival order
        # and the time held stays, so the April file is still older.
        assert await repo.upsert_policy(policy("0.90", "2026-05-01T10:00:00+08:00")) == 0
        assert await repo.upsert_policy(policy("0.80")) == 0
        assert await repo.upsert_policy(policy("0.10", "2026-04-30 23:00:00")) == 1
        assert await hifp_pay() == "80.00"
        async with pool.acquire() as conn:
            held = await conn.fetchval("SELECT source_time FROM pricing.policies WHERE insuplc_admdvs = $1", INSURED)
            stored = await conn.fetchval("SELECT record FROM pricing.policies WHERE insuplc_admdvs = $1", INSURED)
        assert held.isoformat() == "2026-05-01T02:00:00+00:00"
        assert "updated_at" not in orjson.loads(stored)  # the record as an older pricing reads it
        # A later one (June) replaces it; so does a later catalogue item's version.
        assert await repo.upsert_policy(policy("0.70", "2026-06-01T00:00:00+08:00")) == 0
        assert await repo.upsert_catalogue_item(item(code, "60.00", "2026-06-01T00:00:00+08:00")) == 0
        assert await hifp_pay() == "42.00"  # 60.00 within the new ceiling, at 0.70
    finally:
        await pool.close()


def test_a_version_dated_ahead_of_the_platforms_clock_is_refused_and_one_not_a_time_does_not_validate():
    from datetime import datetime

    from pydantic import ValidationError

    from yidi.domain.codes import BUSINESS_TZ

    now = datetime(2026, 5, 1, 12, 0, tzinfo=BUSINESS_TZ)
    assert policy("0.50", "2026-05-01T12:10:00+08:00").ahead_of(now, 900) is None  # within the 15 minutes
    why = policy("0.50", "2026-05-01T12:00:00Z").ahead_of(now, 900)  # 'Z' on China time: 8 hours ahead
    assert why is not None and "480 minutes ahead" in why and "this policy version" in why
    assert item("X", "1.00", "2999-01-01").ahead_of(now, 900) is not None
    with pytest.raises(ValidationError, match="updated_at is not an ISO 8601 time"):
        item("X", "1.00", "yesterday")
