"""R19: what is down now, and when it comes back, from eligibility's mirror in the real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from yidi.platform.db import create_pool, migrate

from services.eligibility.repository import EligibilityRepository
from services.eligibility.status import current
from tests.conftest import unique

pytestmark = pytest.mark.integration


async def test_region_status_names_what_is_down_now_and_when_it_resumes(settings):
    pool = await create_pool(settings.database_url, size=1)
    try:
        await migrate(pool, "eligibility", "services.eligibility.migrations")
        repo = EligibilityRepository(pool)
        now = datetime.now(UTC)
        down, later = unique("S"), unique("S")
        await repo.upsert_outage(down, "131000", now - timedelta(minutes=5), now + timedelta(hours=1), "network", False)
        await repo.upsert_outage(later, "310000", now + timedelta(hours=2), now + timedelta(hours=3), "upgrade", False)
    finally:
        await pool.close()
    status = await current(settings, now)
    assert [(d["admdvs"], d["reason"]) for d in status["down_now"] if d["status_id"] == down] == [("131000", "network")]
    assert [d["until"] for d in status["down_now"] if d["status_id"] == down] == [(now + timedelta(hours=1)).isoformat()]
    assert [d["admdvs"] for d in status["planned"] if d["status_id"] == later] == ["310000"]
