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
    await ask("cancel", filing_id=first["filing"]["filing_id"])
    after_cancel = await ask(category="posted_worker", filed_admdvs="120000")

    assert first["accepted"] and other_fund["accepted"] and other_region["accepted"] and trip["accepted"]
    for refused in (second, trip_made_long_term):
        assert not refused["accepted"]
        assert f"already has long-term filing {first['filing']['filing_id']} to region 110000" in refused["reason"]
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
