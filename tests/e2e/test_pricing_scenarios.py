"""Pricing on the real stack: accumulators across settlements, caps, quotas, trips, accounts.

World (tests/e2e/world.py): outpatient deductible 300, ratio 0.60; annual cap 5,000;
outpatient quota 400; temporary trips: ratio −0.20 (R11) and 10% first self-pay (R12);
emergency ratio 0.70, no deductible; class B drug with 10% share and a 40.00 ceiling.
"""

from __future__ import annotations

import pytest

from tests.e2e.requests import cancel_of
from tests.e2e.world import World, china_now

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def world(system) -> World:
    return await World(system.settings).build()


def info(answer: dict) -> dict:
    assert answer["infcode"] == 0, answer
    return answer["output"]["setlinfo"]


async def test_the_deductible_is_crossed_over_two_settlements(world, gateway):
    person = await world.person()
    first = info(await gateway.call(world.request(person, [("T-A", "1", "200.00")])))
    second = info(await gateway.call(world.request(person, [("T-A", "1", "200.00")])))
    assert (first["act_pay_dedc"], first["hifp_pay"]) == ("200.00", "0.00")
    assert (second["act_pay_dedc"], second["hifp_pay"]) == ("100.00", "60.00")


async def test_the_outpatient_quota_is_reached_and_not_exceeded(world, gateway):
    person = await world.person()
    first = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))   # (800-300)×0.6 = 300
    second = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))  # 480, quota left 100
    assert (first["hifp_pay"], second["hifp_pay"]) == ("300.00", "100.00")
    assert "R13" in (await gateway.call(world.request(person, [("T-A", "1", "50.00")])))["output"]["setldetail"][0]["setl_proc_info"]


async def test_r13_the_quota_used_at_home_this_year_comes_off_the_quota_here(world, gateway):
    # The person record carries 350 of the 400 quota used at home this year (R13: shared with care
    # at home); last year's use does not count.
    year = china_now().year
    person = await world.person(home_quota_used="350.00", home_quota_year=year)
    last_year = await world.person(home_quota_used="350.00", home_quota_year=year - 1)
    here = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))  # (800-300)×0.6 = 300
    other = info(await gateway.call(world.request(last_year, [("T-A", "1", "800.00")])))
    assert (here["hifp_pay"], other["hifp_pay"]) == ("50.00", "300.00")


async def test_the_deductible_and_cap_used_at_home_this_year_count_here(world, gateway):
    # The person record states what the insurance paid at home this year: 250 of the outpatient
    # deductible (bucket "op", 300) and 4,500 of the annual cap (5,000). The year's deductible and cap
    # are the person's wherever the care; last year's use does not count this year.
    year = china_now().year
    home = {"deductible_paid": {"op": "250.00"}, "pooled_paid": "4500.00"}
    person = await world.person(home_usage=[home | {"year": year}, {"year": year - 1, "pooled_paid": "5000.00"}])
    last_year = await world.person(home_usage=[home | {"year": year - 1}])
    outpatient = info(await gateway.call(world.request(person, [("T-A", "1", "400.00")])))
    other = info(await gateway.call(world.request(last_year, [("T-A", "1", "400.00")])))
    assert (outpatient["act_pay_dedc"], outpatient["hifp_pay"]) == ("50.00", "210.00")  # (400 − 50) × 0.60
    assert (other["act_pay_dedc"], other["hifp_pay"]) == ("300.00", "60.00")  # (400 − 300) × 0.60
    # The stay's deductible is per stay (500); the cap has 5,000 − 4,500 − 210 = 290 left.
    stay = info(await gateway.call(world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")))
    assert (stay["act_pay_dedc"], stay["hifp_pay"]) == ("500.00", "290.00")


async def test_5206_states_the_year_so_far_through_the_platform_and_at_home(world, gateway):
    # A cashier asks what is left this year: 250 of the outpatient deductible (300) and 4,500 of the
    # cap (5,000) were paid at home; a 400 bill settled here took the 50 left and paid 210.
    year = china_now().year
    person = await world.person(home_usage=[{"year": year, "deductible_paid": {"op": "250.00"}, "pooled_paid": "4500.00"}],
                                balance="100.00")
    info(await gateway.call(world.request(person, [("T-A", "1", "400.00")], account=True)))

    def query(**data: str) -> dict:
        request = world.request(person, [])
        request["infno"], request["input"] = "5206", {"data": {"psn_no": person} | data}
        return request

    answer = await gateway.call(query())
    assert answer["infcode"] == 0, answer
    assert answer["output"]["cuminfo"]["year"] == year
    lines = {(x["cum_type_code"], x["bucket"]): (x["limit"], x["used"], x["used_at_home"], x["left"])
             for x in answer["output"]["cumoutput"]}
    assert lines == {
        ("deductible", "er"): ("0.00", "0.00", "0.00", "0.00"),
        ("deductible", "op"): ("300.00", "300.00", "250.00", "0.00"),
        ("pooled_cap", ""): ("5000.00", "4710.00", "4500.00", "290.00"),
        ("outpatient_quota", ""): ("400.00", "210.00", "0.00", "190.00"),
        ("account", ""): ("100.00", "100.00", "0.00", "0.00"),  # the person's part, 190, paid from it first
    }, lines
    other = await gateway.call(query(insutype="390"))
    assert other["err_code"] == "NOT_INSURED", other
    # Last year asked (cum_ym): a bill settled then (backdated) counts there, this year's does not;
    # no account line (the balance is today's).
    last = world.request(person, [("T-A", "1", "500.00")], when=f"{year - 1}-12-10 09:00:00")
    assert info(await gateway.call(last))["hifp_pay"] == "120.00"  # (500 − 300) × 0.60, last year's deductible
    earlier = await gateway.call(query(cum_ym=f"{year - 1}12"))
    assert earlier["output"]["cuminfo"]["year"] == year - 1, earlier
    assert {x["cum_type_code"]: x["used"] for x in earlier["output"]["cumoutput"] if x["bucket"] != "er"} == {
        "deductible": "300.00", "pooled_cap": "120.00", "outpatient_quota": "120.00"}


async def test_the_annual_cap_is_reached_by_inpatient_stays(world, gateway):
    person = await world.person()
    first = info(await gateway.call(world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")))
    second = info(await gateway.call(world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")))
    assert first["hifp_pay"] == "4000.00"  # (5500 − 500) × 0.80
    assert second["hifp_pay"] == "1000.00"  # cap 5000 − 4000


async def test_a_stay_discharged_last_year_and_settled_now_counts_in_last_years_cap(world, gateway):
    # A stay's year was the settlement's: one discharged on 31 December and settled after midnight
    # (or cancelled and settled again in January) took the new year's deductible and cap (a
    # review, session 37). It is priced as of the day its care ended.
    person = await world.person()
    year = china_now().year

    def stay() -> dict:
        return world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")

    now = info(await gateway.call(stay()))
    last_year = stay()  # settled on 2 January (a request dated back is taken), two days after the discharge
    last_year["inf_time"] = f"{year}-01-02 09:00:00"
    last_year["input"]["data"].update(begntime=f"{year - 1}-12-20 09:00:00", endtime=f"{year - 1}-12-31 22:00:00")
    across = info(await gateway.call(last_year))
    again = info(await gateway.call(stay()))
    assert now["hifp_pay"] == "4000.00"  # (5500 − 500) × 0.80
    assert across["hifp_pay"] == "4000.00"  # last year's cap, untouched (it was: 1000.00, what this year's left)
    assert across["setl_id"].startswith(f"S{year}0102")  # its id is of the day it was settled
    assert again["hifp_pay"] == "1000.00"  # this year's cap 5000 − 4000


async def test_a_person_number_padded_with_spaces_still_counts_against_the_persons_cap(world, gateway):
    # A gateway with fixed-width (CHAR) columns pads codes; the contract strips them, and pricing
    # must read the same person's accumulators (it read none: a second cap).
    person = await world.person()
    first = info(await gateway.call(world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")))
    padded = world.request(person, [("T-A", "1", "5500.00")], infno="2304", med_type="21")
    padded["input"]["data"]["psn_no"] = f"{person}   "
    second = info(await gateway.call(padded))
    assert (first["hifp_pay"], second["hifp_pay"]) == ("4000.00", "1000.00")  # cap 5000, once
    assert second["psn_no"] == person


async def test_a_temporary_trip_pays_the_first_self_pay_at_a_reduced_ratio(world, gateway):
    person = await world.person(category="temporary_other")
    settled = info(await gateway.call(world.request(person, [("T-A", "1", "1300.00")])))
    # first self-pay 130 (R12); scope 1170; deductible 300; ratio 0.60 − 0.20 = 0.40 → 348.00
    assert (settled["preselfpay_amt"], settled["inscp_scp_amt"], settled["pool_prop_selfpay"], settled["hifp_pay"]) == (
        "130.00", "1170.00", "0.40", "348.00"
    )


async def test_r17_a_temporary_filing_inside_a_waiving_province_settles_no_worse_than_none(system, gateway):
    # Province 96 waives filing inside it (the test services' settings name 960000): a person
    # insured in a county of one city of it, treated in another city. A person who filed anyway
    # must not lose R11's 20 points that a person who did not file keeps.
    waiving = World(system.settings)
    city = int(waiving.insured[2:4])
    waiving.insured, waiving.treating = "96" + waiving.insured[2:], f"96{city % 99 + 1:02d}" + waiving.treating[4:]
    await waiving.build()
    filed = await waiving.person(category="temporary_other")
    unfiled = await waiving.person(category=None)
    with_filing = info(await gateway.call(waiving.request(filed, [("T-A", "1", "800.00")])))
    without = info(await gateway.call(waiving.request(unfiled, [("T-A", "1", "800.00")])))
    # first self-pay 80 (R12, both); scope 720; deductible 300; ratio 0.60, not 0.40 → 252.00
    for settled in (with_filing, without):
        assert (settled["preselfpay_amt"], settled["pool_prop_selfpay"], settled["hifp_pay"]) == ("80.00", "0.60", "252.00")


async def test_r1_a_person_whose_insurance_changes_in_the_year_starts_the_new_funds_deductible_and_quota(world, gateway):
    # The year's counters are the fund's: a resident who becomes an employee has paid no employee
    # deductible (the employee fund had taken the resident fund's 300 as its own, and its quota).
    await world.load(policies=[world.policy("390")])
    person = await world.person(insutype="390")
    resident = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")], insutype="390")))
    await world.person(psn_no=person, insutype="310")
    employee = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))
    again = info(await gateway.call(world.request(person, [("T-A", "1", "800.00")])))
    assert (resident["act_pay_dedc"], resident["hifp_pay"]) == ("300.00", "300.00")  # (800 − 300) × 0.60
    assert (employee["act_pay_dedc"], employee["hifp_pay"]) == ("300.00", "300.00")
    assert (again["act_pay_dedc"], again["hifp_pay"]) == ("0.00", "100.00")  # the employee quota's 400 reached


async def test_emergency_without_a_filing_settles_at_the_home_ratio(world, gateway):
    person = await world.person(category=None)
    refused = await gateway.call(world.request(person, [("T-A", "1", "100.00")]))
    emergency = info(await gateway.call(world.request(person, [("T-A", "1", "100.00")], med_type="13")))
    assert refused["err_code"] == "NOT_FILED"
    assert (emergency["pool_prop_selfpay"], emergency["hifp_pay"]) == ("0.70", "70.00")


async def test_class_c_and_over_ceiling_items_in_one_bill(world, gateway):
    person = await world.person()
    answer = await gateway.call(world.request(person, [("T-A", "1", "400.00"), ("T-B", "2", "50.00"), ("T-C", "1", "30.00")]))
    settled = info(answer)
    # T-B: 2 × (50 − 40) = 20 over the ceiling; 10% of 80 = 8 first self-pay; 72 in scope
    assert (settled["fulamt_ownpay_amt"], settled["overlmt_selfpay"], settled["preselfpay_amt"], settled["inscp_scp_amt"]) == (
        "30.00", "20.00", "8.00", "472.00"
    )
    items = {f["hilist_code"]: f for f in answer["output"]["feedetail"]}
    assert items["T-C"]["chrgitm_lv"] == "03" and items["T-B"]["overlmt_selfpay"] == "20.00"


async def test_the_individual_account_pays_part_of_the_persons_share(world, gateway):
    person = await world.person(balance="50.00")
    first = info(await gateway.call(world.request(person, [("T-A", "1", "400.00")], account=True)))
    second = info(await gateway.call(world.request(person, [("T-A", "1", "100.00")], account=True)))
    # person part 400 − 60 = 340: the account pays its 50, cash 290; then nothing is left in it
    assert (first["acct_pay"], first["psn_cash_pay"], first["balc"]) == ("50.00", "290.00", "0.00")
    assert (second["acct_pay"], second["balc"]) == ("0.00", "0.00")


async def test_pre_settlement_changes_nothing(world, gateway):
    person = await world.person()
    pre = info(await gateway.call(world.request(person, [("T-A", "1", "200.00")], infno="2206")))
    settled = info(await gateway.call(world.request(person, [("T-A", "1", "200.00")])))
    assert pre["act_pay_dedc"] == settled["act_pay_dedc"] == "200.00"


async def test_cancellation_restores_the_accumulators(world, gateway):
    person = await world.person()
    request = world.request(person, [("T-A", "1", "500.00")])
    first = info(await gateway.call(request))
    cancelled = await gateway.call(cancel_of(request, first["setl_id"]))
    again = info(await gateway.call(world.request(person, [("T-A", "1", "500.00")])))
    assert cancelled["infcode"] == 0
    assert (again["act_pay_dedc"], again["hifp_pay"]) == (first["act_pay_dedc"], first["hifp_pay"]) == ("300.00", "120.00")


async def test_the_employee_large_amount_subsidy_pays_on_the_cost_past_the_pooled_cap(system, gateway):
    world = World(system.settings)
    await world.build(world.policy(layers=[{"fund_type": "330100", "threshold": "0.00", "ratio": "0.85",
                                            "annual_cap": "400000.00", "base": "above_pooled_cap"}]))
    person = await world.person()
    stay = info(await gateway.call(world.request(person, [("T-A", "1", "10500.00")], infno="2304", med_type="21")))
    # (10,500 − 500) × 0.80 = 8,000 > the cap 5,000, which covers 6,250: 3,750 past it × 0.85
    assert (stay["hifp_pay"], stay["hifob_pay"], stay["fund_pay_sumamt"]) == ("5000.00", "3187.50", "8187.50")


async def test_r18_the_civil_servant_subsidy_pays_for_a_person_whose_record_holds_the_qualification(system, gateway):
    # The qualification travels from the person record through eligibility to the layer.
    world = World(system.settings)
    await world.build(world.policy(layers=[{"fund_type": "320100", "threshold": "0.00", "ratio": "0.50",
                                            "requires": "civil_servant"}]))
    civil = await world.person(qualifications=["civil_servant"])
    plain = await world.person()
    paid = info(await gateway.call(world.request(civil, [("T-A", "1", "800.00")])))  # pooled (800-300)×0.6 = 300
    not_paid = info(await gateway.call(world.request(plain, [("T-A", "1", "800.00")])))
    # The subsidy: 0.50 of what the pooled fund left inside the scope (800 − 300 = 500).
    assert (paid["hifp_pay"], paid["cvlserv_pay"]) == ("300.00", "250.00")
    assert (not_paid["hifp_pay"], not_paid["cvlserv_pay"]) == ("300.00", "0.00")


async def test_r1_a_province_publishes_its_catalogue_and_policy_once_and_a_citys_own_entry_stands(system, gateway):
    # Area codes nest. A province's catalogue published under its code served no facility of its
    # regions: every item was "not in the catalogue" and the patient paid the whole bill; a policy
    # published for the province answered NO_POLICY to its cities' insured. Province 92 treats,
    # 91 insures; no other test uses them.
    nested = World(system.settings)
    nested.insured, nested.treating = "91" + nested.insured[2:], "92" + nested.treating[2:]
    city = nested.treating[:4] + "00"
    base = {"begndate": "2020-01-01"}
    await nested.load(
        facilities=[{"fixmedins_code": nested.facility, "fixmedins_name": "county hospital", "admdvs": nested.treating,
                     "level": 3, "med_types": ["11", "21"]}],
        # The county's own policy ended (its pooling moved up): the province's prices its insured.
        policies=[nested.policy() | {"insuplc_admdvs": "910000"},
                  nested.policy(version="OWN", begndate="2020-01-01", enddate="2021-01-01",
                                rules=[{"med_types": ["11"], "deductible": "0.00", "ratio": "0.90"}])],
        catalogue=[
            base | {"mdtrtarea_admvs": "920000", "hilist_code": "T-A", "hilist_name": "class A service", "chrgitm_lv": "01"},
            base | {"mdtrtarea_admvs": "920000", "hilist_code": "T-X", "hilist_name": "class A here", "chrgitm_lv": "01"},
            # The city lists T-X as class C: its entry stands over the province's.
            base | {"mdtrtarea_admvs": city, "hilist_code": "T-X", "hilist_name": "class C in the city", "chrgitm_lv": "03"},
        ],
    )
    person = await nested.person()
    answer = await gateway.call(nested.request(person, [("T-A", "1", "400.00"), ("T-X", "1", "30.00")]))
    settled = info(answer)
    # T-A in scope from the province's catalogue; T-X self-paid as the city's class C.
    # 400 in scope, deductible 300, 0.60 of 100 → 60.00 from the province's policy (the county's
    # ended one would pay 0.90 of 400).
    assert (settled["inscp_scp_amt"], settled["fulamt_ownpay_amt"], settled["hifp_pay"]) == ("400.00", "30.00", "60.00")
    items = {f["hilist_code"]: f for f in answer["output"]["feedetail"]}
    assert items["T-A"]["chrgitm_lv"] == "01" and items["T-X"]["chrgitm_lv"] == "03"


async def test_a_policy_version_older_than_the_one_held_is_ignored_and_one_dated_ahead_refused(system, world, gateway):
    # A region reloading an earlier file undid a correction published since (the policy records had
    # no time of their own). From session 50 they carry updated_at, as a person's record does.
    from tests.e2e.test_settlement_path import _dead_letters

    def stale() -> float:
        return system.metric("pricing", "yidi_refdata_records_total", feed="refdata.policies", outcome="stale") or 0.0

    rules = lambda ratio: [{"med_types": ["11"], "deductible": "0.00", "ratio": ratio}]  # noqa: E731
    before = stale()
    await world.load(policies=[world.policy(version="MAY", rules=rules("0.90"), outpatient_quota=None,
                                            updated_at="2026-05-01T10:00:00+08:00")])
    await world.load(policies=[world.policy(version="APRIL", rules=rules("0.10"), outpatient_quota=None,
                                            updated_at="2026-04-30 23:00:00"),
                               world.policy(version="FUTURE", rules=rules("0.20"), outpatient_quota=None,
                                            updated_at="2999-01-01T00:00:00+08:00")])
    person = await world.person()
    settled = info(await gateway.call(world.request(person, [("T-A", "1", "100.00")])))
    assert settled["hifp_pay"] == "90.00", settled
    assert stale() == before + 1
    dead = await _dead_letters(system.settings, "refdata.policies")
    assert any(b'"FUTURE"' in value and world.insured.encode() in value
               and b"ahead of the platform's clock" in headers["yidi-dlq-reason"] for value, headers in dead)
