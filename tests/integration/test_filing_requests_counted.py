"""Filing requests counted by action and outcome once their batch committed
(``yidi_filing_requests_total``), on the real Postgres."""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import REGISTRY

from yidi.platform.kafka import Incoming

from services.filing.handlers import FilingHandler
from tests.conftest import unique

pytestmark = pytest.mark.integration


def _count(action: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("yidi_filing_requests_total", {"action": action, "outcome": outcome}) or 0.0


def _dead_letters() -> float:
    return REGISTRY.get_sample_value("yidi_dead_letters_total", {"topic": "filing.requests"}) or 0.0


async def test_each_filing_request_is_counted_by_action_and_outcome_once_committed(filing_repo, settings):
    handler = FilingHandler(settings, filing_repo)
    psn = unique("P")

    async def committed(body: dict | bytes, *, commit: bool = True) -> None:
        value = body if isinstance(body, bytes) else orjson.dumps(body)
        out = await handler([Incoming("filing.requests", 0, 1, psn.encode(), value, int(time.time() * 1000))])
        assert out
        for o in out:
            if commit and o.on_commit is not None:  # what the stage runs once its transaction committed
                o.on_commit()

    keys = [(a, o) for a in ("add", "history", "unknown") for o in ("accepted", "refused", "stored", "invalid")]
    before = {key: _count(*key) for key in keys}
    dead_before = _dead_letters()
    add = {"action": "add", "reqid": unique("R"), "psn_no": psn, "insutype": "310", "insuplc_admdvs": "131000",
           "filed_admdvs": "110000", "category": "retiree_resettled", "begndate": "2026-01-01",
           "decl_source": "self_service"}
    await committed(add)
    await committed(add)  # the same reqid again: what it published then
    await committed(add | {"filed_admdvs": "120000"})  # the reqid reused for another request
    await committed(add | {"reqid": unique("R"), "filed_admdvs": "120000"})  # a second long-term filing (R4)
    await committed(add | {"reqid": unique("R"), "begndate": "not a date"})  # does not validate
    await committed(orjson.dumps({"action": "teleport", "reqid": unique("R"), "psn_no": psn}))
    await committed(add | {"reqid": unique("R"), "insutype": "390"}, commit=False)  # its batch never committed
    await committed(add | {"reqid": unique("R"), "begndate": "nor this"}, commit=False)  # nor this dead letter's
    assert {key: _count(*key) - n for key, n in before.items() if _count(*key) - n} == {
        ("add", "accepted"): 1, ("add", "stored"): 1, ("add", "refused"): 2, ("add", "invalid"): 1,
        ("unknown", "invalid"): 1,
    }
    assert _dead_letters() - dead_before == 2  # the two invalid ones committed
