"""A service that dies between a request and its answer: still exactly one answer, one ledger row.

Failpoints (``YIDI_CRASH_AT``) make a stage exit at the worst moments: right after its
Postgres transaction committed, and with its answers sent but its Kafka transaction open.
SIGKILL covers a death at no particular moment. These tests restart services: they run last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest

from services.pricing.handlers import fund_prefix
from tests.e2e.requests import we1

pytestmark = pytest.mark.e2e


async def _accumulated(settings, psn_no: str) -> dict[str, str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT counter, amount FROM pricing.accumulators WHERE psn_no = $1 AND year = 2022", psn_no)
        return {r["counter"]: str(r["amount"]) for r in rows}
    finally:
        await conn.close()


async def _settle_through_a_crash(system, gateway, service: str, point: str) -> tuple[dict, dict]:
    system.kill(service)
    system.start(service, {"YIDI_CRASH_AT": f"{service}:{point}"})
    await system.wait_ready(service)
    request = we1()
    fut = await gateway.send(request)
    assert await system.wait_exit(service, timeout=60) == 70, system.tail(service)
    system.start(service)
    await system.wait_ready(service)
    answer = await asyncio.wait_for(fut, 60)
    await asyncio.sleep(2.0)  # a duplicate answer would arrive by now
    return request, answer


@pytest.mark.parametrize("point", ["after-handler", "before-kafka-commit"])
async def test_clearing_dying_mid_settlement_answers_once_and_records_once(system, gateway, point):
    request, answer = await _settle_through_a_crash(system, gateway, "clearing", point)
    assert answer["infcode"] == 0 and answer["output"]["setlinfo"]["hifp_pay"] == "48.89"
    assert gateway.answer_counts[request["msgid"]] == 1
    assert len(await system.ledger(request["msgid"])) == 1


@pytest.mark.parametrize("point", ["after-handler", "before-kafka-commit"])
async def test_pricing_dying_mid_settlement_counts_the_accumulators_once(system, gateway, point):
    psn_no = we1()["input"]["data"]["psn_no"]
    before = await _accumulated(system.settings, psn_no)
    request, answer = await _settle_through_a_crash(system, gateway, "pricing", point)
    after = await _accumulated(system.settings, psn_no)
    assert answer["infcode"] == 0
    assert gateway.answer_counts[request["msgid"]] == 1
    assert len(await system.ledger(request["msgid"])) == 1
    paid = fund_prefix(request["insuplc_admdvs"], request["input"]["data"]["insutype"]) + "pooled_paid"
    assert Decimal(after[paid]) - Decimal(before.get(paid, "0")) == Decimal("48.89")


async def test_a_request_sent_while_clearing_is_killed_is_answered_once_it_is_back(system, gateway):
    system.kill("clearing")
    request = we1()
    fut = await gateway.send(request)
    await asyncio.sleep(1.0)
    assert not fut.done()
    system.start("clearing")
    await system.wait_ready("clearing")
    answer = await asyncio.wait_for(fut, 60)
    await asyncio.sleep(2.0)
    assert answer["infcode"] == 0
    assert gateway.answer_counts[request["msgid"]] == 1
    assert len(await system.ledger(request["msgid"])) == 1


async def _refusal_alerts(settings, pair: tuple[str, str], wait: float = 30.0) -> list[dict]:
    """The alerts on clearing.alerts that ``pair``'s prepayment refuses bills, once there is one."""
    from tests.e2e.test_clearing import _read

    deadline = time.monotonic() + wait
    while True:
        found = [a for a in await _read(settings, "clearing.alerts")
                 if (a["insuplc_admdvs"], a["mdtrtarea_admvs"]) == pair and a.get("refused_draw") is not None]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_under_the_refuse_policy_an_exhausted_prepayment_refuses_and_settles_nothing(system, gateway, clearing):
    from tests.e2e.test_clearing import fund
    from yidi.platform.topics import PREPAYMENT_STATUS
    from tests.e2e.world import World

    system.kill("pricing")
    system.start("pricing", {"YIDI_PREPAYMENT_POLICY": "refuse"})
    try:
        await system.wait_ready("pricing")
        world = World(system.settings)
        world.insured = world.insured[:4] + "00"  # insured at a city's code: its counties are home
        await world.build()
        person = await world.person()
        await fund(clearing, world, "200.00")
        await world.load(optional_feeds=(PREPAYMENT_STATUS,))  # pricing has applied the balance clearing published
        quote = world.request(person, [("T-A", "1", "500.00")]) | {"infno": "2206"}  # alone in its batch
        quoted = await gateway.call(quote)                                             # draws nothing
        first = await gateway.call(world.request(person, [("T-A", "1", "500.00")]))   # funds pay 120: 80 left
        second = world.request(person, [("T-A", "1", "800.00")])                      # would pay 280
        refused = await gateway.call(second)
        # Its pre-settlement is refused too (a review, session 46: it quoted what the funds pay).
        refused_quote = await gateway.call(world.request(person, [("T-A", "1", "800.00")]) | {"infno": "2206"})
        assert quoted["infcode"] == 0 and quoted["output"]["setlinfo"]["fund_pay_sumamt"] == "120.00", quoted
        assert first["infcode"] == 0
        assert refused["err_code"] == "PREPAYMENT_EXHAUSTED" and "exhausted" in refused["err_msg"]
        assert refused_quote["err_code"] == "PREPAYMENT_EXHAUSTED" and "nothing was quoted" in refused_quote["err_msg"]
        # 80.00 left is above the account's warning line (40.00): no balance alert names it. Pricing's
        # gauge does, and clearing, told by pricing, warns the insured region (once: the refused quote
        # and the refusals below are within the minute, and the region is warned already).
        assert system.metric("pricing", "yidi_prepayment_refused_timestamp_seconds", insured=world.insured,
                             treating=second["mdtrtarea_admvs"]) > time.time() - 120
        warned = await _refusal_alerts(system.settings, (world.insured, second["mdtrtarea_admvs"]))
        assert [(a["refused_draw"], a["balance"]) for a in warned] == [("280.00", "80.00")]
        # What was left as pricing saw it: its mirror of the balance may not have the first draw yet
        # (clearing's status after it still on its way), as the refusal's own answer said.
        assert warned[0]["refused_left"] in ("80.00", "200.00") and warned[0]["refused_left"] in refused["err_msg"]
        assert await system.ledger(second["msgid"]) == []
        # The draw is the fund and account payments: a class C bill the account would pay 100 of
        # draws 100 > 80 left; paid in cash, it draws nothing and settles.
        saver = await world.person(balance="100.00")
        by_account = await gateway.call(world.request(saver, [("T-C", "1", "100.00")], account=True))
        in_cash = await gateway.call(world.request(saver, [("T-C", "1", "100.00")]))
        assert by_account["err_code"] == "PREPAYMENT_EXHAUSTED"
        assert in_cash["infcode"] == 0 and in_cash["output"]["setlinfo"]["psn_cash_pay"] == "100.00"
        # Care in the insured region itself (R10) draws on no prepayment: no region funds one to
        # itself, and it was refused, every time, for an (A, A) account nobody funds. Here at a
        # facility of a county of the insured city (area codes nest), whose catalogue is the city's.
        home_facility, county = "H" + uuid.uuid4().hex[:11].upper(), world.insured[:4] + "07"
        await world.load(
            facilities=[{"fixmedins_code": home_facility, "fixmedins_name": "home hospital", "admdvs": county,
                         "level": 3, "med_types": ["11"]}],
            catalogue=[item | {"mdtrtarea_admvs": world.insured} for item in world.catalogue()])
        at_home = world.request(person, [("T-A", "1", "800.00")])
        at_home["mdtrtarea_admvs"], at_home["fixmedins_code"] = county, home_facility
        at_home["msgid"] = home_facility + at_home["msgid"][len(world.facility):]  # a msgid begins with its facility's code
        settled = await gateway.call(at_home)
        assert settled["infcode"] == 0, settled
        assert Decimal(settled["output"]["setlinfo"]["fund_pay_sumamt"]) > Decimal("80.00")  # more than is left
        assert len(await system.ledger(at_home["msgid"])) == 1
        assert len(await _refusal_alerts(system.settings, (world.insured, second["mdtrtarea_admvs"]))) == 1
    finally:
        system.kill("pricing")
        system.start("pricing")
        await system.wait_ready("pricing")
