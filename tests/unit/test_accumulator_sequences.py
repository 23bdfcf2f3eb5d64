"""Over any sequence of settlements and cancellations, caps and quotas are never exceeded
(hypothesis, pure domain: a cancellation gives back its settlement's counters here as pricing
does; that pricing gives back exactly what a settlement took is tested through its handler,
tests/unit/test_pricing_handler.py)."""

from collections import Counter
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from yidi.domain.codes import FundType, InsuranceType, MedType, PersonType
from yidi.domain.policy import Layer
from yidi.domain.pricing import OUTPATIENT_QUOTA, POOLED_PAID, layer_base_counter, layer_paid_counter, price

from tests.unit.factories import bill, catalogue, item, policy, rule, terms

CAP, QUOTA, LAYER_CAP = D("3000.00"), D("800.00"), D("500.00")
POLICY = policy(
    rule(MedType.GENERAL_OUTPATIENT, deductible="200.00", ratio="0.60", deductible_bucket="op"),
    rule(MedType.INPATIENT, deductible="500.00", ratio="0.85", deductible_bucket="ip"),
    annual_cap=CAP, outpatient_quota=QUOTA,
    layers=(Layer(FundType.EMPLOYEE_LARGE_AMOUNT, D("1000.00"), D("0.80"), LAYER_CAP),),
)
CATALOGUE = catalogue(item("A1"))

steps = st.lists(
    st.one_of(
        st.tuples(st.just("settle"), st.sampled_from([MedType.GENERAL_OUTPATIENT, MedType.INPATIENT]),
                  st.decimals(min_value=D("1.00"), max_value=D("6000.00"), places=2)),
        st.tuples(st.just("cancel"), st.integers(0, 30), st.just(D(0))),
    ),
    min_size=1, max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_caps_and_quotas_hold_over_settlements_and_cancellations(sequence):
    usage: Counter = Counter()
    standing: list[dict] = []
    for kind, a, amount in sequence:
        if kind == "settle":
            p = price(bill(("A1", "1", str(amount))), CATALOGUE, POLICY, terms(a), dict(usage))
            usage.update(p.usage_delta)
            standing.append(dict(p.usage_delta))
        elif standing:
            delta = standing.pop(a % len(standing))
            usage.subtract(delta)
        assert usage[POOLED_PAID] <= CAP
        assert usage[OUTPATIENT_QUOTA] <= QUOTA
        assert usage[layer_paid_counter(FundType.EMPLOYEE_LARGE_AMOUNT)] <= LAYER_CAP
        assert all(v >= 0 for v in usage.values())


# A further layer with a threshold (R18, step 6): the serious-illness insurance of residents pays
# 60 % of what the pooled fund leaves in scope above 15,000 a year.
THRESHOLD, LAYER_RATIO = D("15000.00"), D("0.60")
SERIOUS = policy(
    rule(MedType.INPATIENT, ratio="0.60"), insutype=InsuranceType.RESIDENT,
    layers=(Layer(FundType.RESIDENT_SERIOUS_ILLNESS, THRESHOLD, LAYER_RATIO),),
)
RESIDENT = terms(MedType.INPATIENT, insutype=InsuranceType.RESIDENT, person=PersonType.RESIDENT, category=None)


def _stay(visit: str, amount: str, usage: Counter):
    p = price(bill(("A1", "1", amount), visit=visit), CATALOGUE, SERIOUS, RESIDENT, dict(usage))
    usage.update(p.usage_delta)
    return p


def test_a_cancelled_stay_settled_anew_does_not_cross_the_layer_threshold_twice():
    # Two stays of 25,000 leave 10,000 each in scope after the pooled fund: 20,000 in the year,
    # 5,000 above the threshold, 3,000 for the layer. Cancelling the first stay and settling it
    # anew (a corrected bill) used to pay another 3,000: the counter gave back its whole base.
    usage: Counter = Counter()
    first, second = _stay("STAY-1", "25000.00", usage), _stay("STAY-2", "25000.00", usage)
    assert (first.hifmi_pay, second.hifmi_pay) == (D("0.00"), D("3000.00"))
    usage.subtract(first.usage_delta)
    again = _stay("STAY-1", "25000.00", usage)
    assert second.hifmi_pay + again.hifmi_pay == D("3000.00")


def test_a_layer_counter_written_before_reads_as_the_threshold_used_up():
    # Counters kept the year's whole base before: beyond the threshold it counts as all of it used.
    usage: Counter = Counter({layer_base_counter(FundType.RESIDENT_SERIOUS_ILLNESS): D("18000.00")})
    assert _stay("STAY-3", "25000.00", usage).hifmi_pay == D("6000.00")  # all 10,000 above: × 0.60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("settle"), st.decimals(min_value=D("1.00"), max_value=D("40000.00"), places=2)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
), min_size=1, max_size=25))
def test_bills_cancelled_and_settled_anew_cross_the_layer_threshold_once(sequence):
    """Settle and cancel in any order, then settle every cancelled bill anew (corrected bills): the
    layer pays the ratio of the year's base above its threshold, as without the cancellations (one
    fen of rounding a settlement). A cancellation does not re-price the settlements after it: until
    its bill is settled anew, they keep what they were paid."""
    usage: Counter = Counter()
    standing: list = []
    cancelled: list[str] = []
    for n, (kind, value) in enumerate(sequence):
        if kind == "settle":
            standing.append((str(value), _stay(f"STAY-{n}", str(value), usage)))
        elif standing:
            amount, p = standing.pop(value % len(standing))
            usage.subtract(p.usage_delta)
            cancelled.append(amount)
    for n, amount in enumerate(cancelled):
        standing.append((amount, _stay(f"AGAIN-{n}", amount, usage)))
    base = sum((p.inscp_scp_amt - p.hifp_pay for _, p in standing), D(0))
    paid = sum((p.hifmi_pay for _, p in standing), D(0))
    assert paid <= max(D(0), base - THRESHOLD) * LAYER_RATIO + D("0.01") * len(standing)
