"""Bad input through the running platform: each request gets one INVALID_INPUT answer, and the
stages go on settling everybody else's bills (tests/unit/test_bad_input.py has why each is bad).

Before session 5 every one of these stopped a stage: an exception that was neither a validation
error nor transient, so the stage exited, restarted, read the same batch and exited again, and no
hospital was answered until an operator skipped the offset.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import pytest

from tests.e2e.requests import we1
from tests.e2e.world import World, filing_request
from tests.integration.kafka_io import read_topic
from tests.unit.test_bad_input import BAD_REQUESTS, REFUSED_BY_PRICING, WE1, _wire

pytestmark = pytest.mark.e2e


def _with_new_msgid(request: dict) -> dict:
    r = copy.deepcopy(request)
    # WE1's facility's code first (CONTRACT.md), so that each request is refused for its own fault
    # (the one sent as another facility's, for its msgid).
    r["msgid"] = WE1["fixmedins_code"] + "BADINPUT" + uuid.uuid4().hex[:16].upper()
    return r


def _reconcile_out_of_range() -> dict:
    """A 3201 whose total is beyond any amount: it used to stop clearing's admin stage."""
    r = _with_new_msgid(WE1)
    r["infno"] = "3201"
    r["input"] = {"data": {"stmt_begndate": "2022-07-01", "stmt_enddate": "2022-07-01", "fixmedins_setl_cnt": 1,
                           "medfee_sumamt": "1E+30", "fund_pay_sumamt": "0.00", "acct_pay": "0.00"}}
    return r


async def test_bad_input_is_answered_invalid_input_once_each_and_settling_goes_on(gateway, system):
    bad = {name: _with_new_msgid(request) for name, request in (BAD_REQUESTS | REFUSED_BY_PRICING).items()}
    bad["3201 amount 1E+30"] = _reconcile_out_of_range()
    bad["2204 (not offered)"] = _with_new_msgid(WE1) | {"infno": "2204"}
    key = "13100000000000000001"
    # Those nesting past what orjson writes go as their bytes (tests/unit/test_bad_input.py's _wire).
    futures = {name: await (gateway.send_raw(_wire(request), correlation=request["msgid"], key=key)
                            if "<nested " in json.dumps(request) else gateway.send(request, key=key))
               for name, request in bad.items()}
    good = we1()  # sent after all of them, on the same person's partition
    good_answer = await gateway.send(good)

    answers = dict(zip(futures, await asyncio.wait_for(asyncio.gather(*futures.values()), 60), strict=True))
    settled = await asyncio.wait_for(good_answer, 30)

    expected = {name: "UNSUPPORTED" if name.startswith("2204") else "INVALID_INPUT" for name in bad}
    wrong = {name: (a["err_code"], a["err_msg"]) for name, a in answers.items() if a["err_code"] != expected[name]}
    assert wrong == {}
    assert settled["infcode"] == 0 and settled["output"]["setlinfo"]["fund_pay_sumamt"] == "48.89"
    await asyncio.sleep(1.0)  # time for a second answer to show up, if there were one
    assert {name: gateway.answer_counts[r["msgid"]] for name, r in bad.items()} == {name: 1 for name in bad}
    assert len(await system.ledger(good["msgid"])) == 1
    for request in bad.values():
        assert await system.ledger(request["msgid"]) == []


async def test_a_settlement_whose_reply_to_is_empty_or_null_is_settled_and_answered_on_the_shared_topic(
        gateway, system):
    # CONTRACT.md: reply_to defaults to settlement.results; gateways send "" (or null) for a field
    # they leave unused, and each such request was refused INVALID_INPUT (a review, session 46).
    for reply_to in ("", None):
        request = we1() | {"reply_to": reply_to}
        answer = await asyncio.wait_for(
            await gateway.send_raw(json.dumps(request).encode(), correlation=request["msgid"],
                                   key=request["input"]["data"]["psn_no"]), 30)
        assert answer["infcode"] == 0 and answer["output"]["setlinfo"]["fund_pay_sumamt"] == "48.89", answer
        assert len(await system.ledger(request["msgid"])) == 1


async def test_a_settled_request_sent_again_with_a_fast_clock_gets_its_stored_answer(gateway, system):
    """inf_time is not part of a request's payload hash: a hospital system that times out and
    resends a settled msgid, its clock now far ahead, gets the settlement it has, not a refusal
    beside a payment in the ledger (the refusal is pricing's, after the msgid check)."""
    first = we1()
    settled = await gateway.call(first)
    again = await gateway.call(first | {"inf_time": "2999-01-01 10:30:00"})
    assert settled["infcode"] == 0
    times = ("refmsg_time", "respond_time")  # the resend's, and not before it
    assert {k: v for k, v in again.items() if k not in times} == {k: v for k, v in settled.items() if k not in times}
    assert again["respond_time"] >= again["refmsg_time"] > settled["refmsg_time"]
    late = we1() | {"inf_time": "2999-01-01 10:30:00"}  # a new msgid with that clock is refused
    refused = await gateway.call(late)
    assert refused["err_code"] == "INVALID_INPUT" and "ahead of the platform's clock" in refused["err_msg"]
    assert len(await system.ledger(first["msgid"])) == 1 and await system.ledger(late["msgid"]) == []


async def test_malformed_filing_and_clearing_requests_are_refused_by_reqid_once_each(system, filings, clearing):
    """A filing or clearing request that does not validate used to be dead-lettered with no
    answer: its sender waited for ever (CONTRACT.md: every request gets exactly one response). One
    that is not UTF-8 is dead-lettered, and the requests after it are answered."""
    world = await World(system.settings).build()
    person = await world.person(category=None)
    bad_filings = [
        filing_request(world, person) | {"reqid": _reqid(), "category": "no_such_category"},
        filing_request(world, person) | {"reqid": _reqid(), "begndate": "2025-13-40"},
        # a forbidden reply_to: refused on the default filing.results, never into a platform topic
        filing_request(world, person) | {"reqid": _reqid(), "reply_to": "settlement.priced"},
        # the month closes' topic, which a hand-kept list of the platform's topics left out (session 48)
        filing_request(world, person) | {"reqid": _reqid(), "reply_to": "clearing.periods"},
        {"action": "change", "reqid": _reqid(), "psn_no": person},  # no filing_id
        # R7's six months overflowed the year 9999: the filing stage stopped, in a loop
        filing_request(world, person) | {"reqid": _reqid(), "begndate": "9999-09-01"},
    ]
    bad_clearing = [
        {"type": "fund", "reqid": _reqid(), "insuplc_admdvs": world.insured,
         "mdtrtarea_admvs": world.treating, "amount": "abc"},
        {"type": "no_such_request", "reqid": _reqid()},
        {"type": "run_month", "reqid": _reqid(), "setlym": "202513"},
    ]
    # Not UTF-8 (GBK, as some hospital systems write), its reqid no text: dead-lettered only. Until
    # 2026-12-05 it stopped its stage, in a loop, and every request behind it waited.
    for client, topic, body in ((filings, "filing.requests", filing_request(world, person) | {"reqid": "备案-1"}),
                                (clearing, "clearing.requests", {"type": "no_such_request", "reqid": "清算-1"})):
        await client._producer.send_and_wait(system.settings.topic(topic), key=b"gbk",
                                             value=json.dumps(body, ensure_ascii=False).encode("gbk"))
    refused = await asyncio.wait_for(asyncio.gather(
        *[await filings.send(r) for r in bad_filings], *[await clearing.send(r) for r in bad_clearing]), 60)
    filed = await filings.call(filing_request(world, person, category="temporary_other"))

    assert [(a["accepted"], "malformed" in a["reason"]) for a in refused[:len(bad_filings)]] == [(False, True)] * 6
    assert [(a["ok"], "does not validate" in a["reason"]) for a in refused[len(bad_filings):]] == [(False, True)] * 3
    assert filed["accepted"] and filed["filing"]["status"] == "active"  # the stage goes on
    await asyncio.sleep(1.0)  # time for a second answer to show up, if there were one
    assert [filings.answer_counts[r["reqid"]] for r in bad_filings] == [1] * 6
    assert [clearing.answer_counts[r["reqid"]] for r in bad_clearing] == [1] * 3


def _reqid() -> str:
    return "BAD" + uuid.uuid4().hex[:20].upper()


async def test_a_record_with_a_null_value_is_dead_lettered_and_every_stage_goes_on(gateway, system, filings, clearing):
    """A record with a null value (a producer's "delete") on a stage's topic raised TypeError in
    the stage's refusal path (a review, session 35): the service stopped, at every start, and on
    settlement.requests no settlement was answered until an operator moved the offset."""
    world = await World(system.settings).build()
    person = await world.person(category=None)
    settlement, filing = we1(), filing_request(world, person) | {"reqid": _reqid()}
    admin = {"type": "no_such_request", "reqid": _reqid()}
    key = f"null-{uuid.uuid4().hex[:8]}".encode()
    # Each on the partition of the request sent after it (its key), so that request waits behind it.
    keyed = {"settlement.requests": b"13100000000000000001", "filing.requests": person.encode(),
             "clearing.requests": admin["reqid"].encode(), "filing.events": key}
    for topic, record_key in keyed.items():
        await gateway._producer.send_and_wait(system.settings.topic(topic), key=record_key, value=None)

    settled = await gateway.call(settlement)
    filed = await filings.call(filing)
    refused = await clearing.call(admin)

    assert settled["infcode"] == 0 and settled["output"]["setlinfo"]["fund_pay_sumamt"] == "48.89"
    assert filed["accepted"] and filed["filing"]["status"] == "active"
    assert refused["ok"] is False and "does not validate" in refused["reason"]
    for topic, record_key in keyed.items():
        dead = await read_topic(system.settings.kafka_bootstrap, system.settings.topic(f"{topic}.dlq"))
        assert [r.value for r in dead if r.key == record_key and not r.value] == [b""], topic
    assert all(system.procs[s].poll() is None for s in ("filing", "eligibility", "pricing", "clearing"))
