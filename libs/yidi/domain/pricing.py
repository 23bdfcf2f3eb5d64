"""Pricing a bill: the treating region's catalogue, then the insured region's policy (R1).

``price`` follows the calculation order of DOMAIN.md step by step and returns every amount of
the national settlement output, one explanation per fund, and the change it makes to the
person's accumulators. It commits nothing: the caller persists ``usage_delta`` (settlement) or
throws it away (pre-settlement, 2206/2303).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import date
from decimal import Decimal

from yidi.domain.catalogue import Catalogue
from yidi.domain.codes import (
    FUND_NAMES,
    ChargeClass,
    FilingCategory,
    FundType,
    InsuranceType,
    MedType,
    PersonType,
    pooled_fund_for,
)
from yidi.domain.money import ZERO, fmt, fmt_ratio, spread, to_fen
from yidi.domain.policy import BenefitPolicy, CalculationOrder, DeductibleScope, LayerBase, PolicyError
from yidi.domain.values import value

# Accumulator counters, per person and year (the service keys them by person and year).
POOLED_PAID = "pooled_paid"
OUTPATIENT_QUOTA = "outpatient_quota"
ACCOUNT_DRAWN = "account_drawn"


def deductible_counter(bucket: str, scope: DeductibleScope, visit_id: str, facility: str = "") -> str:
    """The accumulator a deductible counts in: the person's year, or one stay. A stay is named by its
    facility and the facility's visit id: each facility numbers its own visits, so two hospitals'
    stays may share an ``mdtrt_id``, and one must not find the other's deductible paid."""
    if scope is DeductibleScope.STAY:
        return f"deductible:{bucket}:stay:{facility}:{visit_id}" if facility else f"deductible:{bucket}:stay:{visit_id}"
    return f"deductible:{bucket}"


def layer_base_counter(fund: FundType) -> str:
    return f"layer:{fund.value}:base"


def layer_paid_counter(fund: FundType) -> str:
    return f"layer:{fund.value}:paid"


@value
class BillLine:
    seq: str
    code: str
    name: str
    count: Decimal
    price: Decimal
    amount: Decimal


@value
class Bill:
    visit_id: str
    on: date
    lines: tuple[BillLine, ...]
    # The facility whose visit this is (``visit_id`` is the facility's own number).
    facility: str = ""

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


@value
class Terms:
    """Who is settling, where, and on what terms (established by eligibility)."""

    med_type: MedType
    insutype: InsuranceType
    person_type: PersonType
    facility_level: int
    # None: no filing applies (emergency rescue counted as filed, R5, or care at home).
    filing_category: FilingCategory | None
    use_account: bool = False
    # R17: a temporary trip inside the province whose filing the province waived. It is still a
    # temporary trip, so the first self-pay (R12, seed 002 §6: 省内跨市、跨省) applies: its filing's,
    # or without one as for ``temporary_other``; the R11 reduction, stated for trips across
    # provinces, does not, with a filing or without.
    waived_filing: bool = False
    account_balance: Decimal = ZERO
    qualifications: frozenset[str] = frozenset()
    disease_code: str = ""


@value
class PricedItem:
    seq: str
    code: str
    charge_class: ChargeClass | None
    selfpay_prop: Decimal
    price_ceiling: Decimal | None
    fulamt_ownpay_amt: Decimal
    overlmt_selfpay: Decimal
    preselfpay_amt: Decimal
    inscp_scp_amt: Decimal
    note: str


@value
class FundPayment:
    fund_type: FundType
    base: Decimal
    limit_left: Decimal | None
    amount: Decimal
    explanation: str

    @property
    def name(self) -> str:
        return FUND_NAMES[self.fund_type]


@value
class Pricing:
    items: tuple[PricedItem, ...]
    medfee_sumamt: Decimal
    fulamt_ownpay_amt: Decimal
    overlmt_selfpay: Decimal
    preselfpay_amt: Decimal
    inscp_scp_amt: Decimal
    act_pay_dedc: Decimal
    ratio: Decimal
    funds: tuple[FundPayment, ...]
    psn_part_amt: Decimal
    acct_pay: Decimal
    psn_cash_pay: Decimal
    account_balance_after: Decimal
    usage_delta: Mapping[str, Decimal] = field(default_factory=dict)
    hosp_part_amt: Decimal = ZERO

    def paid_by(self, *fund_types: FundType) -> Decimal:
        return sum((f.amount for f in self.funds if f.fund_type in fund_types), ZERO)

    @property
    def fund_pay_sumamt(self) -> Decimal:
        return sum((f.amount for f in self.funds), ZERO)

    @property
    def hifp_pay(self) -> Decimal:
        return self.paid_by(FundType.EMPLOYEE_POOLED, FundType.RESIDENT_POOLED)

    @property
    def hifmi_pay(self) -> Decimal:
        return self.paid_by(FundType.RESIDENT_SERIOUS_ILLNESS)

    @property
    def hifob_pay(self) -> Decimal:
        return self.paid_by(FundType.EMPLOYEE_LARGE_AMOUNT)

    @property
    def cvlserv_pay(self) -> Decimal:
        return self.paid_by(FundType.CIVIL_SERVANT)

    @property
    def maf_pay(self) -> Decimal:
        return self.paid_by(FundType.MEDICAL_ASSISTANCE)


def _filed_as(filed: FilingCategory | None, category: FilingCategory | None) -> str:
    """The note when a filing's category was read in the insured region's scheme (R4)."""
    return f" (filed as {filed.value}; the insured region's scheme, R4)" if filed and filed is not category else ""


def price_items(bill: Bill, catalogue: Catalogue) -> tuple[PricedItem, ...]:
    """Step 1 (R1): split each item by the treating region's catalogue, rounded item by item."""
    priced = []
    for line in bill.lines:
        entry = catalogue.get(line.code)
        if entry is None:
            priced.append(
                PricedItem(
                    line.seq, line.code, None, ZERO, None, line.amount, ZERO, ZERO, ZERO,
                    f"not in the catalogue of treating region {catalogue.region}: fully self-paid",
                )
            )
            continue
        if entry.charge_class is ChargeClass.C:
            priced.append(
                PricedItem(
                    line.seq, line.code, entry.charge_class, ZERO, entry.price_ceiling,
                    line.amount, ZERO, ZERO, ZERO, "class C: fully self-paid",
                )
            )
            continue
        over = ZERO
        if entry.price_ceiling is not None and line.price > entry.price_ceiling:
            over = min(line.amount, to_fen((line.price - entry.price_ceiling) * line.count))
        remaining = line.amount - over
        pre = to_fen(remaining * entry.selfpay_prop)
        inscp = remaining - pre
        notes = []
        if over:
            notes.append(f"price above the ceiling {fmt(entry.price_ceiling or ZERO)}: {fmt(over)} self-paid")
        if pre:
            notes.append(f"class B first self-pay {fmt_ratio(entry.selfpay_prop)}: {fmt(pre)}")
        priced.append(
            PricedItem(
                line.seq, line.code, entry.charge_class, entry.selfpay_prop, entry.price_ceiling,
                ZERO, over, pre, inscp,
                "; ".join(notes) or f"class {entry.charge_class.name}: within scope",
            )
        )
    return tuple(priced)


def _at_home(home: Mapping[str, Decimal], counter: str, before: str = "; ", after: str = "") -> str:
    """What of a counter the insurance paid at home this year, for the explanation."""
    amount = home.get(counter)
    return f"{before}{fmt(amount)} of it paid at home{after}" if amount else ""


def price(
    bill: Bill,
    catalogue: Catalogue,
    policy: BenefitPolicy,
    terms: Terms,
    usage: Mapping[str, Decimal],
    home: Mapping[str, Decimal] | None = None,
) -> Pricing:
    """Price one bill with the default calculation order of DOMAIN.md (steps 1–8). ``usage`` is the
    person's year, what the insurance paid at home included; ``home``, that part of it (for the
    explanation only)."""
    home = home or {}
    items = price_items(bill, catalogue)
    medfee = bill.total
    fulamt = sum((i.fulamt_ownpay_amt for i in items), ZERO)
    overlmt = sum((i.overlmt_selfpay for i in items), ZERO)
    preselfpay = sum((i.preselfpay_amt for i in items), ZERO)
    inscp = sum((i.inscp_scp_amt for i in items), ZERO)
    delta: dict[str, Decimal] = {}
    policy_name = f"policy {policy.region}/{policy.insutype.value} version {policy.version}"

    # Steps 2 and 3: first self-pay for temporary trips the policy marks (R12), and the
    # deductible left for this kind of care, in the order the policy names.
    rule = policy.rule_for(terms.med_type, terms.person_type, terms.facility_level, terms.disease_code)
    dedc_key = deductible_counter(rule.deductible_key, rule.deductible_scope, bill.visit_id, bill.facility)
    dedc_left = max(ZERO, rule.deductible - usage.get(dedc_key, ZERO))
    # A trip whose filing was waived (R17) is a temporary trip not referred: temporary_other, or
    # temporary in a province with the two groups only.
    waived_as = policy.in_scheme(FilingCategory.TEMPORARY_OTHER)
    # The filing's category as the insured region's scheme names it (R4).
    category = policy.in_scheme(terms.filing_category)
    first_category = category or (waived_as if terms.waived_filing else None)
    first_share = policy.first_selfpay_for(first_category)
    if terms.waived_filing and category:
        # A filed trip inside a province that waives filing pays no more than one without a filing.
        first_share = min(first_share, policy.first_selfpay_for(waived_as))
    if policy.order is CalculationOrder.DEDUCTIBLE_FIRST:
        dedc = min(dedc_left, inscp)
        first_selfpay = to_fen((inscp - dedc) * first_share)
    else:
        first_selfpay = to_fen(inscp * first_share)
        dedc = min(dedc_left, inscp - first_selfpay)
    preselfpay += first_selfpay
    inscp -= first_selfpay
    if first_selfpay:
        # Item by item too, so that the item columns still add up to the totals (step 1).
        # (built field by field: ``dataclasses.replace`` costs several times the constructor)
        items = tuple(
            PricedItem(seq=i.seq, code=i.code, charge_class=i.charge_class, selfpay_prop=i.selfpay_prop,
                       price_ceiling=i.price_ceiling, fulamt_ownpay_amt=i.fulamt_ownpay_amt,
                       overlmt_selfpay=i.overlmt_selfpay, preselfpay_amt=i.preselfpay_amt + part,
                       inscp_scp_amt=i.inscp_scp_amt - part, note=f"{i.note}; first self-pay {fmt(part)} (R12)")
            if part else i
            for i, part in zip(items, spread(first_selfpay, [i.inscp_scp_amt for i in items]), strict=True)
        )
    if dedc:
        delta[dedc_key] = dedc

    # Step 4: ratio, lowered for the filing category (R11; not inside a province that waives
    # filing, R17), never below 0.
    reduction = ZERO if terms.waived_filing else policy.reduction_for(category)
    ratio = max(Decimal(0), rule.ratio - reduction)
    pooled = to_fen((inscp - dedc) * ratio)
    steps = [f"within scope {fmt(inscp)}"]
    if first_selfpay:
        steps.append(
            f"after first self-pay {fmt_ratio(first_share)} for {first_category.value if first_category else ''}"
            f"{_filed_as(terms.filing_category, category)}"
            f"{' (filing waived, R17)' if terms.waived_filing and not terms.filing_category else ''} "
            f"({fmt(first_selfpay)}, R12)"
        )
    steps.append(f"less deductible {fmt(dedc)} of {fmt(rule.deductible)} ({rule.deductible_scope.value}"
                 f"{_at_home(home, dedc_key)})")
    ratio_text = f"ratio {fmt_ratio(rule.ratio)}"
    if reduction:
        ratio_text += (f" lowered by {fmt_ratio(reduction)} for {category.value if category else ''}"
                       f"{_filed_as(terms.filing_category, category)} (R11)")
    steps.append(f"× {ratio_text} = {fmt(pooled)}")
    if policy.order is not CalculationOrder.DEFAULT:
        steps.append(f"order: {policy.order.value}")

    # Step 5: annual cap of the pooled fund, and the general-outpatient quota (R13).
    limit_left: Decimal | None = None
    # The within-scope cost past the point where the pooled fund reached its annual cap: what a
    # layer with base ABOVE_POOLED_CAP pays on (the capped payment covers cap_left / ratio of it).
    over_cap = ZERO
    quota_left = (max(ZERO, policy.outpatient_quota - usage.get(OUTPATIENT_QUOTA, ZERO))
                  if policy.outpatient_quota is not None and terms.med_type in policy.quota_med_types else None)
    if policy.annual_cap is not None:
        cap_left = max(ZERO, policy.annual_cap - usage.get(POOLED_PAID, ZERO))
        limit_left = cap_left
        eligible = inscp - dedc
        if not cap_left:
            over_cap = eligible  # the cap was reached before this bill: all of it is past it
        elif pooled > cap_left and (quota_left is None or quota_left >= cap_left):
            # The cap, not the quota (R13), stops the pooled fund: what is past the point where it
            # did is past the cap. Stopped by the quota first, the fund has not reached its cap.
            over_cap = eligible - min(eligible, to_fen(cap_left / ratio))
        if pooled > cap_left:  # so ratio > 0
            steps.append(f"capped at what is left of the annual cap {fmt(policy.annual_cap)}"
                         f"{_at_home(home, POOLED_PAID, ' (', ')')}: {fmt(cap_left)}")
            pooled = cap_left
    if quota_left is not None:
        limit_left = quota_left if limit_left is None else min(limit_left, quota_left)
        if pooled > quota_left:
            steps.append(
                f"capped at what is left of the outpatient quota {fmt(policy.outpatient_quota)}: {fmt(quota_left)} (R13)"
            )
            pooled = quota_left
        if pooled:
            delta[OUTPATIENT_QUOTA] = pooled
    if pooled:
        delta[POOLED_PAID] = pooled
    pooled_fund = pooled_fund_for(terms.insutype)
    funds = [
        FundPayment(
            pooled_fund, inscp, limit_left, pooled,
            "; ".join(steps) + f"; {policy_name}, rule for med_type {terms.med_type.value} (R1, R20)",
        )
    ]

    # Step 6 (R18): further layers on what the pooled fund left inside the scope.
    rest = inscp - pooled
    for layer in policy.layers:
        if not layer.pays_for(terms.med_type, terms.qualifications):
            continue
        base_key, paid_key = layer_base_counter(layer.fund_type), layer_paid_counter(layer.fund_type)
        # The counter keeps how much of the year's threshold the person's settlements have used up
        # (as the deductible's does), so that a cancellation gives back exactly that: counting their
        # whole base instead let a settlement paid only because an earlier one had crossed the
        # threshold keep its payment when that one was cancelled, and the threshold was crossed
        # again when it was settled anew. A counter written before (the year's whole base) reads the
        # same: what it holds beyond the threshold counts as the threshold used up.
        used = min(usage.get(base_key, ZERO), layer.threshold)
        if layer.base is LayerBase.ABOVE_POOLED_CAP:
            base = min(over_cap, rest)
            base_text = f"within-scope cost past the pooled fund's annual cap {fmt(base)}"
        else:
            base = rest
            base_text = f"left within scope {fmt(rest)}"
        consumed = min(base, layer.threshold - used)
        above = base - consumed
        pay = to_fen(above * layer.ratio)
        cap_left = None
        text = (
            f"{base_text}; of the threshold {fmt(layer.threshold)} this year {fmt(used)} was used before"
            f"{_at_home(home, base_key, ' (', ')')} and "
            f"{fmt(consumed)} now; above it {fmt(above)} × ratio {fmt_ratio(layer.ratio)} = {fmt(pay)}"
        )
        if layer.annual_cap is not None:
            cap_left = max(ZERO, layer.annual_cap - usage.get(paid_key, ZERO))
            if pay > cap_left:
                text += (f"; capped at what is left of the annual cap {fmt(layer.annual_cap)}"
                         f"{_at_home(home, paid_key, ' (', ')')}: {fmt(cap_left)}")
                pay = cap_left
        if consumed:
            delta[base_key] = consumed
        if pay:
            delta[paid_key] = pay
            funds.append(FundPayment(layer.fund_type, base, cap_left, pay, text + f"; {policy_name} (R18)"))
        rest -= pay

    # Step 7 (R16): the person's part, the individual account first when allowed.
    fund_sum = sum((f.amount for f in funds), ZERO)
    psn_part = medfee - fund_sum
    acct = ZERO
    if terms.use_account and policy.account_payable:
        acct = min(max(ZERO, terms.account_balance), psn_part)
    if acct:
        delta[ACCOUNT_DRAWN] = acct
    return Pricing(
        items=items,
        medfee_sumamt=medfee,
        fulamt_ownpay_amt=fulamt,
        overlmt_selfpay=overlmt,
        preselfpay_amt=preselfpay,
        inscp_scp_amt=inscp,
        act_pay_dedc=dedc,
        ratio=ratio,
        funds=tuple(funds),
        psn_part_amt=psn_part,
        acct_pay=acct,
        psn_cash_pay=psn_part - acct,
        account_balance_after=terms.account_balance - acct,
        usage_delta=delta,
    )


# --- A person's year so far (5206) ----------------------------------------------------------------


@value
class YearLine:
    """One accumulator of a person's year against its policy's limit (``limit`` None: none that
    applies to every visit; ``left`` then None too)."""

    kind: str  # deductible, pooled_cap, outpatient_quota, layer_threshold, layer_cap, account
    bucket: str
    fund: str
    limit: Decimal | None
    used: Decimal
    used_at_home: Decimal

    @property
    def left(self) -> Decimal | None:
        return None if self.limit is None else max(ZERO, self.limit - self.used)


def year_so_far(policy: BenefitPolicy, person_type: PersonType, qualifications: frozenset[str],
                usage: Mapping[str, Decimal], home: Mapping[str, Decimal],
                balance: Decimal | None, drawn: Decimal, facility_level: int = 0) -> list[YearLine]:
    """What the person's year has used of each limit of ``policy`` (DOMAIN.md steps 3, 5, 6, 7):
    ``usage`` is the year's counters as ``price`` reads them (what the insurance paid at home
    included), ``home`` that part of them. A year's deductible is listed by bucket, of the rules
    ``price`` would apply to this person (``rule_for``: the most specific) at ``facility_level`` (0:
    at any level), a stay's deductible being the stay's; its limit is theirs when they agree. The
    account (``balance`` None: left out) is what was drawn since the region last stated it."""
    def line(kind: str, counter: str, limit: Decimal | None, bucket: str = "", fund: str = "",
             cap: Decimal | None = None) -> YearLine:
        used = usage.get(counter, ZERO)
        if cap is not None:
            used = min(used, cap)
        return YearLine(kind, bucket, fund, limit, used, min(used, home.get(counter, ZERO)))

    lines: list[YearLine] = []
    buckets: dict[str, set[Decimal]] = {}
    levels = (facility_level,) if facility_level else (1, 2, 3)
    diseases = ("", *sorted({d for rule in policy.rules for d in rule.diseases}))
    for med_type in sorted({m for rule in policy.rules for m in rule.med_types}):
        for level in levels:
            for disease in diseases:
                try:
                    rule = policy.rule_for(med_type, person_type, level, disease)
                except PolicyError:
                    continue  # no benefit for such a visit
                if rule.deductible_scope is DeductibleScope.YEAR:
                    buckets.setdefault(rule.deductible_key, set()).add(rule.deductible)
    prefix = "deductible:"
    per_stay = {rule.deductible_key for rule in policy.rules if rule.deductible_scope is DeductibleScope.STAY}
    for counter in usage:  # a bucket of an earlier version of the policy, used this year
        bucket = counter[len(prefix):]
        if counter.startswith(prefix) and ":stay:" not in counter and (bucket in buckets or bucket not in per_stay):
            buckets.setdefault(bucket, set())
    for bucket, amounts in sorted(buckets.items()):
        limit = next(iter(amounts)) if len(amounts) == 1 else None
        lines.append(line("deductible", deductible_counter(bucket, DeductibleScope.YEAR, ""), limit, bucket=bucket))
    if policy.annual_cap is not None:
        lines.append(line("pooled_cap", POOLED_PAID, policy.annual_cap))
    if policy.outpatient_quota is not None:
        lines.append(line("outpatient_quota", OUTPATIENT_QUOTA, policy.outpatient_quota))
    for layer in policy.layers:
        if layer.requires and layer.requires not in qualifications:
            continue
        fund = layer.fund_type.value
        lines.append(line("layer_threshold", layer_base_counter(layer.fund_type), layer.threshold, fund=fund,
                          cap=layer.threshold))
        if layer.annual_cap is not None:
            lines.append(line("layer_cap", layer_paid_counter(layer.fund_type), layer.annual_cap, fund=fund))
    if balance is not None and policy.account_payable:
        lines.append(YearLine("account", "", "", max(ZERO, balance), drawn, ZERO))
    return lines
