"""Over any sequence of settlements and cancellations, caps and quotas are never exceeded and
cancelling gives back exactly what a settlement took (hypothesis, pure domain)."""

from collections import Counter
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from yidi.domain.codes import FundType, MedType
from yidi.domain.policy import Layer
from yidi.domain.pricing import OUTPATIENT_QUOTA, POOLED_PAID, layer_paid_counter, price

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
def test_caps_and_quotas_hold_and_cancellations_give_back_exactly(sequence):
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
    remaining = Counter()
    for delta in standing:
        remaining.update(delta)
    assert {k: v for k, v in usage.items() if v} == {k: v for k, v in remaining.items() if v}
