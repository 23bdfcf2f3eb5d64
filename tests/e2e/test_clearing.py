"""Clearing on the real stack: prepayment drawn and given back, warnings, a month cleared and
confirmed while settlements keep flowing, and reconciliation with facilities (3201, 3202)."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson
import pytest

from tests.e2e.requests import cancel_of, fresh
from tests.e2e.world import World
from tests.integration.kafka_io import read_topic
from tests.integration.waiting import until

pytestmark = pytest.mark.e2e


def reqid() -> str:
    return "C" + uuid.uuid4().hex


async def ask(clearing, type_: str, **fields) -> dict:
    result = await clearing.call({"type": type_, "reqid": reqid(), **fields})
    return result


async def run_month(clearing, month: str) -> dict:
    """``run_month`` as an operator runs it: when earlier months holding settlements hold it back
    (months are cleared in order; other tests of the session settle in earlier months too, WE1 in
    2022-07), those are run first, as the refusal names them. The tests of this module run months
    in the order they are written: a month before one cleared already has nothing left to clear."""
    result = await ask(clearing, "run_month", setlym=month)
    earlier = re.match(r"months? ([\d, ]+) holds? settlements or undoings not cleared yet", result["reason"])
    if earlier is not None:
        for first in earlier[1].split(", "):
            assert (await ask(clearing, "run_month", setlym=first))["ok"]
        result = await ask(clearing, "run_month", setlym=month)
    assert result["ok"], f"run_month {month}: {result['reason']}"
    return result


async def fund(clearing, world: World, amount: str, **extra) -> dict:
    return await ask(clearing, "fund", insuplc_admdvs=world.insured, mdtrtarea_admvs=world.treating, amount=amount, **extra)


async def balance(clearing, world: World) -> dict:
    return (await ask(clearing, "query_prepayment", insuplc_admdvs=world.insured, mdtrtarea_admvs=world.treating))["data"]


def paid(answer: dict) -> Decimal:
    assert answer["infcode"] == 0, answer
    return Decimal(answer["output"]["setlinfo"]["fund_pay_sumamt"])


@pytest.fixture
async def world(system) -> World:
    return await World(system.settings).build()


async def test_settlements_draw_the_prepayment_and_cancellation_and_reversal_give_it_back(world, gateway, clearing):
    person = await world.person()
    await fund(clearing, world, "1000.00")
    first = world.request(person, [("T-A", "1", "800.00")])
    drawn = paid(await gateway.call(first))
    assert drawn == Decimal("300.00") and (await balance(clearing, world))["balance"] == "700.00"
    setl_id = (await clearing.call({"type": "query_settlement", "reqid": reqid(), "msgid": first["msgid"]}))["data"]["settlement"]["setl_id"]
    await gateway.call(cancel_of(first, setl_id))
    assert (await balance(clearing, world))["balance"] == "1000.00"
    second = world.request(person, [("T-A", "1", "800.00")])
    assert paid(await gateway.call(second)) == Decimal("300.00")  # the deductible was given back too
    # Both keys: the settlement both name, or none (the first's row answered for two: session 49).
    both = {"type": "query_settlement", "setl_id": setl_id}
    named = await clearing.call(both | {"reqid": reqid(), "msgid": first["msgid"]})
    assert named["data"]["settlement"]["msgid"] == first["msgid"], named
    mixed = await clearing.call(both | {"reqid": reqid(), "msgid": second["msgid"]})
    assert (mixed["ok"], mixed["reason"]) == (False, "no such settlement"), mixed
    nothing = await clearing.call({"type": "query_settlement", "reqid": reqid()})
    assert nothing["ok"] is False and "setl_id or its msgid" in nothing["reason"], nothing
    reversal = fresh(second) | {"infno": "2601", "input": {"data": {"psn_no": person, "omsgid": second["msgid"], "oinfno": "2207"}}}
    reversed_ = await gateway.call(reversal)
    assert reversed_["infcode"] == 0 and reversed_["output"]["setlinfo"]["state"] == "reversed"
    assert (await balance(clearing, world))["balance"] == "1000.00"
    again = paid(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))
    assert again == Decimal("300.00")  # reversal restored the accumulators as well


async def test_a_withdrawal_takes_back_at_most_the_balance_and_settlements_then_draw_on_what_is_left(
        world, gateway, clearing):
    # R3: an insured region takes back part of its prepayment (session 50: there was no way to).
    person = await world.person()
    await fund(clearing, world, "1000.00")
    assert paid(await gateway.call(world.request(person, [("T-A", "1", "800.00")]))) == Decimal("300.00")
    pair = {"insuplc_admdvs": world.insured, "mdtrtarea_admvs": world.treating}
    too_much = await ask(clearing, "withdraw", amount="700.01", **pair)
    assert not too_much["ok"] and "at most 700.00 can be withdrawn" in too_much["reason"], too_much
    taken = await ask(clearing, "withdraw", amount="650.00", **pair)
    assert taken["ok"] and (taken["data"]["funded"], taken["data"]["balance"]) == ("350.00", "50.00"), taken
    drawn = paid(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))  # more than the 50.00 left
    account = await balance(clearing, world)
    assert drawn > Decimal("50.00") and account["funded"] == "350.00", (drawn, account)
    assert Decimal(account["shortfall"]) == drawn - Decimal("50.00"), (drawn, account)


async def test_a_prepayment_running_low_and_then_out_is_warned_once_each_and_a_shortfall_is_recorded(
        system, world, gateway, clearing):
    person = await world.person()
    await fund(clearing, world, "200.00", warn_share="0.50")
    paid(await gateway.call(world.request(person, [("T-A", "1", "500.00")])))  # draws 120: 80 left < 100
    paid(await gateway.call(world.request(person, [("T-A", "1", "500.00")])))  # draws 280 (quota left): −200
    account = await balance(clearing, world)
    assert (account["balance"], account["shortfall"]) == ("-200.00", "200.00")
    alerts = await _read(system.settings, "clearing.alerts")
    mine = [a for a in alerts if a["insuplc_admdvs"] == world.insured]
    assert [a["shortfall"] for a in mine] == ["0.00", "200.00"], mine
    assert "below 50% of what was advanced" in mine[0]["message"] and "has run out" in mine[1]["message"]
    # Ops see the same on /metrics: the balance, and the level of the warnings it calls for.
    account = {"insured": world.insured, "treating": world.treating}

    def balance_is(value: float) -> bool:
        return system.metric("clearing", "yidi_prepayment_balance_yuan", **account) == value

    await until(lambda: balance_is(-200.0), timeout=20, poll=0.2)
    assert system.metric("clearing", "yidi_prepayment_alert_level", **account) == 2.0
    await fund(clearing, world, "1000.00")  # 800 left of 1,200 advanced: above the 50 % warning
    await until(lambda: balance_is(800.0), timeout=20, poll=0.2)
    assert system.metric("clearing", "yidi_prepayment_alert_level", **account) == 0.0


async def test_a_month_is_cleared_confirmed_by_both_sides_and_the_prepayment_topped_up(world, gateway, clearing):
    person = await world.person()
    await fund(clearing, world, "5000.00")
    requests = [world.request(person, [("T-A", "1", "1000.00")], when=f"2025-03-1{i} 09:00:00") for i in range(3)]
    answers = [await gateway.call(r) for r in requests]
    await gateway.call(cancel_of(requests[2], answers[2]["output"]["setlinfo"]["setl_id"]) | {"inf_time": "2025-03-20 09:00:00"})
    standing = paid(answers[0]) + paid(answers[1])
    run = await run_month(clearing, "202503")
    mine = [s for s in run["data"]["statements"] if s["insuplc_admdvs"] == world.insured]
    assert len(mine) == 1
    statement = mine[0]
    assert (statement["settlements"], statement["undone"], Decimal(statement["fund_pay_sumamt"])) == (3, 1, standing)
    assert any(n["payer"] == world.insured and Decimal(n["amount"]) == standing for n in run["data"]["net_positions"])
    again = await ask(clearing, "run_month", setlym="202503")
    assert not again["ok"] and "cleared already" in again["reason"]
    # Before confirming, the region lists what the statement clears (session 50).
    listed = await ask(clearing, "query_statement", statement_id=statement["statement_id"])
    assert listed["ok"] and listed["data"]["entries_total"] == 4 and "next_offset" not in listed["data"], listed
    assert sorted((e["cleared_as"], e["msgid"]) for e in listed["data"]["entries"]) == sorted(
        [("settlement", r["msgid"]) for r in requests] + [("undoing", requests[2]["msgid"])])
    assert sum(Decimal(e["clr_sumamt"]) for e in listed["data"]["entries"]) == Decimal(statement["clr_sumamt"])
    half = await ask(clearing, "confirm", statement_id=statement["statement_id"], side="insured")
    full = await ask(clearing, "confirm", statement_id=statement["statement_id"], side="treating")
    assert (half["data"]["state"], full["data"]["state"]) == ("issued", "settled")
    account = await balance(clearing, world)
    assert Decimal(account["cleared"]) == standing and account["balance"] == "5000.00"


async def test_account_payments_are_drawn_given_back_and_cleared_with_the_funds_payments(world, gateway, clearing):
    """The treating region paid the hospital the account's share too (R16, seed 002): the insured
    region owes it, so it is drawn, given back and cleared like the funds' share."""
    person = await world.person(balance="200.00")
    await fund(clearing, world, "5000.00")
    first = world.request(person, [("T-A", "1", "800.00")], account=True, when="2025-04-10 09:00:00")
    info = (await gateway.call(first))["output"]["setlinfo"]
    assert Decimal(info["acct_pay"]) == Decimal("200.00")
    owed_first = Decimal(info["fund_pay_sumamt"]) + Decimal("200.00")
    assert Decimal((await balance(clearing, world))["balance"]) == Decimal("5000.00") - owed_first
    await gateway.call(cancel_of(first, info["setl_id"]) | {"inf_time": "2025-04-12 09:00:00"})
    assert (await balance(clearing, world))["balance"] == "5000.00"
    again = await gateway.call(world.request(person, [("T-A", "1", "600.00")], account=True, when="2025-04-15 09:00:00"))
    info = again["output"]["setlinfo"]
    assert Decimal(info["acct_pay"]) == Decimal("200.00")  # the cancellation gave the account back as well
    owed = Decimal(info["fund_pay_sumamt"]) + Decimal("200.00")

    run = await run_month(clearing, "202504")
    (statement,) = [s for s in run["data"]["statements"] if s["insuplc_admdvs"] == world.insured]
    assert (statement["settlements"], statement["undone"], Decimal(statement["acct_pay"])) == (2, 1, Decimal("200.00"))
    assert Decimal(statement["clr_sumamt"]) == owed
    (net,) = [n for n in run["data"]["net_positions"] if world.insured in (n["region_a"], n["region_b"])]
    assert (net["payer"], Decimal(net["amount"])) == (world.insured, owed)
    await ask(clearing, "confirm", statement_id=statement["statement_id"], side="insured")
    await ask(clearing, "confirm", statement_id=statement["statement_id"], side="treating")
    account = await balance(clearing, world)
    assert (Decimal(account["cleared"]), account["balance"]) == (owed, "5000.00")


async def test_a_settlement_from_before_account_clearing_is_given_back_and_cleared_at_what_it_drew(system, world, gateway, clearing):
    """Clearing migration 007: a ledger row from before it has drawn NULL (it drew its fund payment
    only). Cancelled or cleared after the upgrade, it moves that, not fund + account."""
    old, new = await world.person(balance="200.00"), await world.person(balance="200.00")
    await fund(clearing, world, "5000.00")
    answers = {}
    for person in (old, new):
        request = world.request(person, [("T-A", "1", "800.00")], account=True, when="2025-05-10 09:00:00")
        answers[person] = (request, (await gateway.call(request))["output"]["setlinfo"])
    (old_request, old_info), (_, new_info) = answers[old], answers[new]
    conn = await asyncpg.connect(system.settings.database_url)
    try:  # as a row written before the migration, whose settlement drew its fund payment only
        await conn.execute("UPDATE clearing.ledger SET drawn = NULL WHERE setl_id = $1", old_info["setl_id"])
    finally:
        await conn.close()
    owed_new = Decimal(new_info["fund_pay_sumamt"]) + Decimal(new_info["acct_pay"])
    run = await run_month(clearing, "202505")
    (statement,) = [s for s in run["data"]["statements"] if s["insuplc_admdvs"] == world.insured]
    assert Decimal(statement["clr_sumamt"]) == Decimal(old_info["fund_pay_sumamt"]) + owed_new
    before = Decimal((await balance(clearing, world))["balance"])
    await gateway.call(cancel_of(old_request, old_info["setl_id"]) | {"inf_time": "2025-06-01 09:00:00"})
    assert Decimal((await balance(clearing, world))["balance"]) == before + Decimal(old_info["fund_pay_sumamt"])


async def test_clearing_a_month_re_arms_the_prepayment_warning(system, world, gateway, clearing):
    """Funding used to be the only thing that re-armed the warning: after the first month's
    clearing restored the balance, every later dip went unreported."""
    person = await world.person()
    await fund(clearing, world, "1000.00", warn_share="0.50")
    first = paid(await gateway.call(world.request(person, [("T-A", "1", "1500.00")], infno="2304", med_type="21",
                                                  when="2025-06-10 09:00:00")))  # draws 800: 200 left < 500
    run = await run_month(clearing, "202506")
    (statement,) = [s for s in run["data"]["statements"] if s["insuplc_admdvs"] == world.insured]
    await ask(clearing, "confirm", statement_id=statement["statement_id"], side="insured")
    await ask(clearing, "confirm", statement_id=statement["statement_id"], side="treating")
    assert (await balance(clearing, world))["balance"] == "1000.00" and first == Decimal("800.00")
    paid(await gateway.call(world.request(person, [("T-A", "1", "1500.00")], infno="2304", med_type="21",
                                          when="2025-06-20 09:00:00")))  # lands in the month after
    alerts = [a for a in await _read(system.settings, "clearing.alerts") if a["insuplc_admdvs"] == world.insured]
    assert len(alerts) == 2, alerts


async def test_a_cancellation_dated_before_its_settlements_month_lands_in_that_month_or_later(world, gateway, clearing):
    """A facility clock years slow dated a cancellation in a month no one would clear, while the
    settlement was cleared in its own: the insured region paid for a cancelled settlement."""
    person = await world.person()
    await fund(clearing, world, "1000.00")
    settle = world.request(person, [("T-A", "1", "800.00")], when="2025-08-12 10:00:00")
    paid(await gateway.call(settle))
    query = {"type": "query_settlement", "msgid": settle["msgid"]}
    setl_id = (await clearing.call(query | {"reqid": reqid()}))["data"]["settlement"]["setl_id"]
    cancel = cancel_of(settle, setl_id)
    cancel["inf_time"] = "2020-01-01 10:00:00"
    assert (await gateway.call(cancel))["infcode"] == 0
    stored = (await clearing.call(query | {"reqid": reqid()}))["data"]["settlement"]
    # Its own period: 202508, or a later one when another test has cleared 202508 already.
    assert stored["state"] == "cancelled" and stored["undo_period"] == stored["clr_period"] >= "202508", stored


async def test_clearing_a_month_while_settlements_flow_counts_each_one_exactly_once(world, gateway, clearing):
    people = [await world.person() for _ in range(4)]
    await fund(clearing, world, "100000.00")
    requests = [world.request(people[i % 4], [("T-A", "1", f"{400 + i}.00")], when="2025-07-20 10:00:00") for i in range(40)]
    answers = [await gateway.call(requests[0])]
    # Months are cleared in order: 2025-07 holds settlements (this one at least), so 2025-08 waits.
    early = await ask(clearing, "run_month", setlym="202508")
    assert not early["ok"] and "settlements or undoings not cleared yet: run" in early["reason"], early
    assert early["reason"].endswith("before 202508 (months are cleared in order, so that none is left behind)")
    futures = [await gateway.send(r) for r in requests[1:20]]
    run = asyncio.create_task(run_month(clearing, "202507"))
    futures += [await gateway.send(r) for r in requests[20:]]
    answers += await asyncio.wait_for(asyncio.gather(*futures), 60)
    first = await run
    second = await run_month(clearing, "202508")
    mine = [s for r in (first, second) for s in r["data"]["statements"] if s["insuplc_admdvs"] == world.insured]
    assert sum(s["settlements"] for s in mine) == 40
    assert sum(Decimal(s["fund_pay_sumamt"]) for s in mine) == sum(paid(a) for a in answers)


async def test_reconciliation_of_a_facilitys_day_matches_or_lists_the_differences(world, gateway):
    person = await world.person()
    day = "2025-08-08"
    answers = [await gateway.call(world.request(person, [("T-A", "1", amount)], when=f"{day} 11:00:00"))
               for amount in ("500.00", "700.00")]
    infos = [a["output"]["setlinfo"] for a in answers]
    totals = {
        "stmt_begndate": day, "stmt_enddate": day, "fixmedins_setl_cnt": 2,
        "medfee_sumamt": str(sum(Decimal(i["medfee_sumamt"]) for i in infos)),
        "fund_pay_sumamt": str(sum(Decimal(i["fund_pay_sumamt"]) for i in infos)),
        "acct_pay": "0.00",
    }
    base = world.request(person, [("T-A", "1", "1.00")])
    match = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals}})
    wrong = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals | {"fund_pay_sumamt": "1.00"}}})
    assert match["output"]["stmt_rslt"] == "0"
    assert wrong["output"]["stmt_rslt"] == "1"
    assert [d["field"] for d in wrong["output"]["differences"]] == ["fund_pay_sumamt"]
    (gap,) = wrong["output"]["differences"]
    assert gap["facility"] == "1.00" and gap["platform"] == totals["fund_pay_sumamt"]
    assert all(re.fullmatch(r"-?\d+\.\d{2}", gap[k]) for k in ("facility", "platform", "gap")), gap
    # A day the platform has nothing for: its zero amounts are written as amounts too.
    empty = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals | {
        "stmt_begndate": "2025-08-09", "stmt_enddate": "2025-08-09"}}})
    by_field = {d["field"]: d for d in empty["output"]["differences"]}
    assert by_field["medfee_sumamt"]["platform"] == "0.00" and by_field["fixmedins_setl_cnt"]["platform"] == "0"
    bad = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals | {"acct_pay": "1.234"}}})
    # Refused where every malformed request is, and dead-lettered (eligibility, from session 36).
    assert bad["err_code"] == "INVALID_INPUT" and "malformed: input.data: acct_pay: " in bad["err_msg"], bad["err_msg"]
    details = {"stmt_begndate": day, "stmt_enddate": day, "details": [
        {"setl_id": infos[0]["setl_id"], "medfee_sumamt": infos[0]["medfee_sumamt"],
         "fund_pay_sumamt": infos[0]["fund_pay_sumamt"], "acct_pay": "0.00"},
        {"setl_id": "S20250808NOTONPLATFORM0", "medfee_sumamt": "9.00", "fund_pay_sumamt": "0.00", "acct_pay": "0.00"},
    ]}
    detail = await gateway.call(fresh(base) | {"infno": "3202", "input": {"data": details}})
    problems = {d["setl_id"]: d["problem"] for d in detail["output"]["differences"]}
    assert problems == {infos[1]["setl_id"]: "missing_at_facility", "S20250808NOTONPLATFORM0": "missing_on_platform"}
    # What the facility finds the settlement by in its own records: its msgid, person, visit and
    # day (a settlement whose answer the gateway never got has a setl_id it never saw: session 49).
    missing = next(d for d in detail["output"]["differences"] if d["problem"] == "missing_at_facility")
    asked = answers[1]["msgid"]
    assert (missing["msgid"], missing["psn_no"], missing["platform_setl_date"]) == (asked, person, day), missing
    assert missing["mdtrt_id"] == infos[1]["mdtrt_id"] and "undone_msgid" not in missing
    # A settlement cancelled since: what undid it, and when.
    cancel = cancel_of(world.request(person, [("T-A", "1", "500.00")], visit=infos[0]["mdtrt_id"]), infos[0]["setl_id"])
    assert (await gateway.call(cancel))["infcode"] == 0
    detail = await gateway.call(fresh(base) | {"infno": "3202", "input": {"data": details}})
    undone = next(d for d in detail["output"]["differences"] if d["setl_id"] == infos[0]["setl_id"])
    assert (undone["problem"], undone["undone_msgid"]) == ("cancelled_on_platform", cancel["msgid"]), undone
    assert datetime.fromisoformat(undone["undone_at"]).tzinfo is not None, undone
    # The facility dates the second a day later (its clock at midnight): its 3201 of the next day is
    # off by it, and its 3202 of that day says where the platform has it.
    next_day = {"stmt_begndate": "2025-08-09", "stmt_enddate": "2025-08-09", "details": [
        {"setl_id": infos[1]["setl_id"], "medfee_sumamt": infos[1]["medfee_sumamt"],
         "fund_pay_sumamt": infos[1]["fund_pay_sumamt"], "acct_pay": "0.00"}]}
    detail = await gateway.call(fresh(base) | {"infno": "3202", "input": {"data": next_day}})
    (moved,) = detail["output"]["differences"]
    assert (moved["setl_id"], moved["problem"], moved["platform_setl_date"]) == (
        infos[1]["setl_id"], "dated_outside_period", day)


async def test_reconciliation_of_totals_by_insurance_type(world, gateway):
    """A 3201 naming an insurance type counts that type's settlements only; without one, all of them."""
    await world.load(policies=[world.policy("390")])
    employee, resident = await world.person(), await world.person(insutype="390")
    day = "2025-08-12"
    settled = [await gateway.call(world.request(psn, [("T-A", "1", amount)], insutype=insutype, when=f"{day} 09:00:00"))
               for psn, insutype, amount in ((employee, "310", "500.00"), (employee, "310", "800.00"),
                                             (resident, "390", "600.00"))]
    infos = [a["output"]["setlinfo"] for a in settled]
    assert [i["insutype"] for i in infos] == ["310", "310", "390"]

    def totals(of: list[dict], **extra: str) -> dict:
        return {"stmt_begndate": day, "stmt_enddate": day, "fixmedins_setl_cnt": len(of),
                "medfee_sumamt": str(sum(Decimal(i["medfee_sumamt"]) for i in of)),
                "fund_pay_sumamt": str(sum(Decimal(i["fund_pay_sumamt"]) for i in of)), "acct_pay": "0.00"} | extra

    base = world.request(employee, [("T-A", "1", "1.00")])
    for of, insutype in ((infos[:2], "310"), (infos[2:], "390"), (infos, ""), (infos, None)):
        data = totals(of) if insutype is None else totals(of, insutype=insutype)
        answer = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": data}})
        assert answer["output"]["stmt_rslt"] == "0", (insutype, answer["output"])
    mixed = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals(infos, insutype="310")}})
    assert mixed["output"]["stmt_rslt_dscr"] == ("totals (insutype 310) differ: fixmedins_setl_cnt, medfee_sumamt, "
                                                 "fund_pay_sumamt")
    assert mixed["output"]["platform"]["fixmedins_setl_cnt"] == 2
    unknown = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals(infos, insutype="999")}})
    assert unknown["err_code"] == "INVALID_INPUT" and "malformed: input.data: insutype: " in unknown["err_msg"]


async def test_reconciliation_of_totals_by_clearing_type_and_agency(world, gateway):
    """A 3201 naming a clearing type or a settling agency (the national 3201's clr_type and
    setl_optins) counts the settlements whose answers carried them; they were ignored, and a
    facility reconciling outpatient and inpatient apart was told its totals differ."""
    employee = await world.person()
    day = "2025-08-13"
    settled = [await gateway.call(world.request(employee, [("T-A", "1", amount)], when=f"{day} 09:00:00"))
               for amount in ("500.00", "800.00")]
    infos = [a["output"]["setlinfo"] for a in settled]
    assert [(i["clr_type"], i["clr_optins"]) for i in infos] == [("11", world.insured)] * 2

    def totals(of: list[dict], **extra: str) -> dict:
        return {"stmt_begndate": day, "stmt_enddate": day, "fixmedins_setl_cnt": len(of),
                "medfee_sumamt": str(sum((Decimal(i["medfee_sumamt"]) for i in of), Decimal("0.00"))),
                "fund_pay_sumamt": str(sum((Decimal(i["fund_pay_sumamt"]) for i in of), Decimal("0.00"))),
                "acct_pay": "0.00"} | extra

    base = world.request(employee, [("T-A", "1", "1.00")])
    for of, extra in ((infos, {"clr_type": "11"}), ([], {"clr_type": "21"}), (infos, {"clr_type": ""}),
                      (infos, {"setl_optins": world.insured}), ([], {"setl_optins": "999999"}),
                      (infos, {"clr_type": "11", "setl_optins": world.insured, "insutype": "310"})):
        answer = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals(of, **extra)}})
        assert answer["output"]["stmt_rslt"] == "0", (extra, answer["output"])
    inpatient = await gateway.call(fresh(base) | {"infno": "3201", "input": {"data": totals(infos, clr_type="21")}})
    assert inpatient["output"]["stmt_rslt_dscr"] == ("totals (clr_type 21) differ: fixmedins_setl_cnt, medfee_sumamt, "
                                                     "fund_pay_sumamt")
    assert inpatient["output"]["platform"]["fixmedins_setl_cnt"] == 0


async def _read(settings, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in await read_topic(settings.kafka_bootstrap, settings.topic(topic))]


async def test_a_request_id_used_again_for_another_request_is_refused(world, clearing):
    first = {"type": "fund", "reqid": reqid(), "insuplc_admdvs": world.insured, "mdtrtarea_admvs": world.treating,
             "amount": "10.00"}
    assert (await clearing.call(first))["ok"]
    again = await clearing.call(first)
    other = await clearing.call(first | {"amount": "99.00"})
    assert again["ok"] and again["data"]["funded"] == "10.00"
    assert not other["ok"] and "already used" in other["reason"]
    assert (await balance(clearing, world))["funded"] == "10.00"
