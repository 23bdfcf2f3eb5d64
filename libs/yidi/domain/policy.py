"""The insured region's benefit policy (R1): deductibles, ratios, caps, quotas, reductions, layers.

A policy is versioned by effective date. Every number differs between regions; the order of
the calculation does not (DOMAIN.md), except where a policy option says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

from yidi.domain.codes import (
    FUND_NAMES,
    FilingCategory,
    FundType,
    InsuranceType,
    MedType,
    PersonType,
    disease_covers,
    disease_key,
    region_chain,
)

# Funds a layer may not be (R18): the pooled funds (priced by the benefit rules, step 4-5) and the
# individual account (R16, the person's part; not a fund payment of setlinfo).
NOT_LAYERS = frozenset({FundType.EMPLOYEE_POOLED, FundType.RESIDENT_POOLED, FundType.EMPLOYEE_ACCOUNT})
# R18 and DOMAIN.md's step 6: the further layers pay in this order (a policy lists them so).
LAYER_ORDER: dict[FundType, int] = {
    FundType.RESIDENT_SERIOUS_ILLNESS: 0,
    FundType.EMPLOYEE_LARGE_AMOUNT: 0,
    FundType.CIVIL_SERVANT: 1,
    FundType.MEDICAL_ASSISTANCE: 2,
}

# R18 and DOMAIN.md step 6: the layers each insurance has. Serious-illness insurance is the
# residents'; the large-amount and civil-servant subsidies are employees'; medical assistance helps
# either. A layer of the other insurance would pay its fund's money to people it does not cover.
LAYERS_OF: dict[InsuranceType, frozenset[FundType]] = {
    InsuranceType.EMPLOYEE: frozenset({FundType.EMPLOYEE_LARGE_AMOUNT, FundType.CIVIL_SERVANT, FundType.MEDICAL_ASSISTANCE}),
    InsuranceType.RESIDENT: frozenset({FundType.RESIDENT_SERIOUS_ILLNESS, FundType.MEDICAL_ASSISTANCE}),
}


class PolicyError(ValueError):
    """A policy that cannot be applied; it is refused when loaded, never half-applied."""


class DeductibleScope(StrEnum):
    YEAR = "year"
    STAY = "stay"


class CalculationOrder(StrEnum):
    """Where a region's rules need another order than DOMAIN.md's default, it says so here."""

    # DOMAIN.md: first self-pay (R12) on the whole scope, then the deductible.
    DEFAULT = "default"
    # The deductible first, then the first self-pay share of what is left above it.
    DEDUCTIBLE_FIRST = "deductible_first"


class LayerBase(StrEnum):
    """What a further layer (R18) pays on."""

    # DOMAIN.md's default: what the pooled fund left inside the scope (serious-illness insurance:
    # the person's within-scope burden above a threshold).
    LEFT_IN_SCOPE = "left_in_scope"
    # The within-scope cost past the point where the pooled fund reached its annual cap (the
    # employee large-amount subsidy, 职工大额医疗费用补助: "above the pooled fund's limit").
    ABOVE_POOLED_CAP = "above_pooled_cap"


# R11: how far an insured region may lower the ratio for temporary trips.
REDUCTION_LIMITS: dict[FilingCategory, Decimal] = {
    FilingCategory.REFERRAL: Decimal("0.10"),
    FilingCategory.EMERGENCY: Decimal("0.10"),
    FilingCategory.TEMPORARY_OTHER: Decimal("0.20"),
    # Two-group mode: a merged temporary group may not go below the strictest of its members'
    # limits for referral and emergency care, so it is held to the referral limit.
    FilingCategory.TEMPORARY: Decimal("0.10"),
}

# R4: the temporary trips of the six categories, which provinces with two groups merge into one.
SIX_TEMPORARY = frozenset({FilingCategory.REFERRAL, FilingCategory.EMERGENCY, FilingCategory.TEMPORARY_OTHER})


@dataclass(frozen=True, slots=True)
class BenefitRule:
    """Deductible and ratio for a kind of care; empty selectors match anything."""

    med_types: frozenset[MedType]
    deductible: Decimal
    ratio: Decimal
    person_types: frozenset[PersonType] = frozenset()
    facility_levels: frozenset[int] = frozenset()
    deductible_scope: DeductibleScope = DeductibleScope.YEAR
    # Rules sharing a bucket share one year's deductible (e.g. all outpatient care). Empty: the
    # rule's medical categories are its bucket (``deductible_key``).
    deductible_bucket: str = ""
    # ICD-10 prefixes: a rule for some chronic diseases only (R14), e.g. dialysis at a higher ratio;
    # a treatment session of one of them (a dialysis visit coded Z49) is covered (``disease_covers``).
    diseases: frozenset[str] = frozenset()

    def matches(self, med_type: MedType, person_type: PersonType, facility_level: int, disease: str = "") -> bool:
        return (
            med_type in self.med_types
            and (not self.person_types or person_type in self.person_types)
            and (not self.facility_levels or facility_level in self.facility_levels)
            and (not self.diseases or any(disease_covers(d, disease) for d in self.diseases))
        )

    @property
    def deductible_key(self) -> str:
        """The deductible this rule counts against: its named bucket, else its medical categories
        (DOMAIN.md step 3: the year's deductible "for this kind of care"). Rules for the same
        categories at other facility levels or for other person types share it; an outpatient rule
        and an inpatient rule, unnamed, do not (they shared one bucket, "default", before
        2026-12-05: an outpatient bill took an inpatient stay's deductible)."""
        return self.deductible_bucket or "med:" + ",".join(sorted(m.value for m in self.med_types))

    @property
    def specificity(self) -> int:
        return (1 if self.person_types else 0) + (1 if self.facility_levels else 0) + (2 if self.diseases else 0)


@dataclass(frozen=True, slots=True)
class Layer:
    """A further fund after the pooled fund (R18), paid above an annual threshold.

    Its base (``LayerBase``) is what the pooled fund left of the within-scope amount, or only
    the within-scope cost past the pooled fund's annual cap; the threshold and cap are per person
    and year. ``requires`` names a person's qualification (``civil_servant``,
    ``medical_assistance``), empty for a layer every insured person has.
    """

    fund_type: FundType
    threshold: Decimal
    ratio: Decimal
    annual_cap: Decimal | None = None
    requires: str = ""
    base: LayerBase = LayerBase.LEFT_IN_SCOPE
    # The kinds of care the layer pays for; empty: every kind.
    med_types: frozenset[MedType] = frozenset()

    def pays_for(self, med_type: MedType, qualifications: frozenset[str]) -> bool:
        return (not self.med_types or med_type in self.med_types) and (not self.requires or self.requires in qualifications)


@dataclass(frozen=True, slots=True)
class BenefitPolicy:
    """One version of an insured region's policy for one insurance type."""

    region: str
    insutype: InsuranceType
    version: str
    effective_from: date
    rules: tuple[BenefitRule, ...]
    annual_cap: Decimal | None = None
    outpatient_quota: Decimal | None = None
    quota_med_types: frozenset[MedType] = frozenset({MedType.GENERAL_OUTPATIENT})
    reductions: dict[FilingCategory, Decimal] = field(default_factory=dict)
    first_selfpay: dict[FilingCategory, Decimal] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    account_payable: bool = True
    order: CalculationOrder = CalculationOrder.DEFAULT
    # The region's own policy ends here (exclusive) when this is its latest version begun: the region
    # then takes its city's or province's (policy_in_force). None: until a later version begins.
    effective_to: date | None = None
    # The rule each kind of visit gets, found once per policy version (a policy is immutable, and
    # the kinds of visit are few: med_type × person type × facility level × which of the policy's
    # disease prefixes cover the visit's code, and which of those the code itself starts with: the
    # tie-break of _find_rule). Keyed by the prefixes, not the code: a memo of every code a gateway
    # sends would grow without bound for as long as the policy version lives.
    _rule_memo: dict[tuple[MedType, PersonType, int, frozenset[str], frozenset[str]], BenefitRule] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)
    _disease_prefixes: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        validate_policy(self)
        object.__setattr__(self, "_disease_prefixes", frozenset(d for r in self.rules for d in r.diseases))

    def in_force(self, on: date) -> bool:
        """Begun by ``on`` and not ended (``effective_to`` exclusive)."""
        return self.effective_from <= on and (self.effective_to is None or on < self.effective_to)

    def rule_for(
        self, med_type: MedType, person_type: PersonType, facility_level: int, disease: str = ""
    ) -> BenefitRule:
        covering = direct = frozenset()
        if self._disease_prefixes:
            covering = frozenset(p for p in self._disease_prefixes if disease_covers(p, disease))
            # Z49.101 and Z99.200 are both covered by N18 and Z49 (dialysis); only the first starts
            # with Z49, which decides between those rules: keyed by the covering prefixes alone, the
            # first code priced chose the rule of the other for the policy's life (a review, session 36).
            code = disease_key(disease)
            direct = frozenset(p for p in covering if code.startswith(disease_key(p)))
        key = (med_type, person_type, facility_level, covering, direct)
        rule = self._rule_memo.get(key)
        if rule is None:
            rule = self._rule_memo[key] = self._find_rule(med_type, person_type, facility_level, disease)
        return rule

    def _find_rule(
        self, med_type: MedType, person_type: PersonType, facility_level: int, disease: str
    ) -> BenefitRule:
        candidates = [r for r in self.rules if r.matches(med_type, person_type, facility_level, disease)]
        if not candidates:
            raise PolicyError(
                f"policy {self.region}/{self.insutype.value} {self.version} has no benefit for "
                f"med_type {med_type.value}, person type {person_type.value}, facility level {facility_level}"
            )
        # Of equally specific rules, one whose disease prefix the code itself starts with beats one
        # that covers it only as a treatment session: a region's rule keyed on Z49 (dialysis) is its
        # word for a Z49 visit, over its rule for N18 (the disease dialysed).
        code = disease_key(disease)
        return max(candidates, key=lambda r: (r.specificity,
                                              any(code.startswith(disease_key(d)) for d in r.diseases)))

    def in_scheme(self, category: FilingCategory | None) -> FilingCategory | None:
        """R4: ``category`` as this policy's scheme names it. A province uses the six categories or
        the two groups, and its policy names the temporary categories of its scheme. A filing of the
        other scheme would find no reduction (R11) and no first self-pay (R12) and be paid more
        than any trip its region knows. The two groups' ``temporary`` says nothing of a referral
        or an emergency: under the six categories it is another temporary trip, the strictest of
        the three. Referral, emergency and other trips are ``temporary`` under the two groups. A
        policy that names no temporary category leaves every category as it is (none has any)."""
        if category is None or category.is_long_term:
            return category
        named = self.reductions.keys() | self.first_selfpay.keys()
        if category in named:  # its own scheme (or a policy stored before one_scheme, naming both)
            return category
        if category is FilingCategory.TEMPORARY:
            return FilingCategory.TEMPORARY_OTHER if not named.isdisjoint(SIX_TEMPORARY) else category
        return FilingCategory.TEMPORARY if FilingCategory.TEMPORARY in named else category

    def reduction_for(self, category: FilingCategory | None) -> Decimal:
        return self.reductions.get(category, Decimal(0)) if category else Decimal(0)

    def first_selfpay_for(self, category: FilingCategory | None) -> Decimal:
        return self.first_selfpay.get(category, Decimal(0)) if category else Decimal(0)


def one_scheme(policy: BenefitPolicy) -> None:
    """R4: a policy names the temporary categories of one scheme. Checked when a policy is published
    (``PolicyRecord``), not on one stored before the check, which stays readable and prices each
    category it names as it did (``in_scheme``)."""
    named = policy.reductions.keys() | policy.first_selfpay.keys()
    if FilingCategory.TEMPORARY in named and not named.isdisjoint(SIX_TEMPORARY):
        raise PolicyError(
            "R4: a policy names the temporary categories of one scheme, the two groups (temporary) or the six "
            f"categories (referral, emergency, temporary_other), not both: {sorted(c.value for c in named)}")


def _check_ratio(name: str, value: Decimal) -> None:
    if not Decimal(0) <= value <= Decimal(1):
        raise PolicyError(f"{name} lies between 0 and 1, got {value}")


def _check_amount(name: str, value: Decimal | None) -> None:
    if value is not None and value < 0:
        raise PolicyError(f"{name} is not negative, got {value}")


def validate_policy(policy: BenefitPolicy) -> None:
    """Refuse a policy the rules do not allow (R11 limits, ratios, amounts)."""
    if not policy.rules:
        raise PolicyError("a policy has at least one benefit rule")
    if policy.effective_to is not None and policy.effective_to < policy.effective_from:
        # Equal: never in force, and the region has none of its own from that day (a version
        # published for a later day withdrawn by publishing its begndate again with this enddate).
        raise PolicyError("a policy's enddate is not before its begndate")
    for i, rule in enumerate(policy.rules):
        if not rule.med_types:
            raise PolicyError(f"benefit rule {i} names no med_type")
        _check_ratio(f"benefit rule {i} ratio", rule.ratio)
        _check_amount(f"benefit rule {i} deductible", rule.deductible)
    _check_amount("annual_cap", policy.annual_cap)
    _check_amount("outpatient_quota", policy.outpatient_quota)
    for category, reduction in policy.reductions.items():
        limit = REDUCTION_LIMITS.get(category)
        if limit is None:
            raise PolicyError(f"R11: no reduction is allowed for filing category {category.value}")
        if not Decimal(0) <= reduction <= limit:
            raise PolicyError(
                f"R11: the reduction for {category.value} is at most {limit}, got {reduction}"
            )
    for category, share in policy.first_selfpay.items():
        if category.is_long_term:
            raise PolicyError(f"R12: first self-pay applies to temporary trips, not {category.value}")
        _check_ratio(f"first self-pay for {category.value}", share)
    seen: set[FundType] = set()
    previous: Layer | None = None
    for layer in policy.layers:
        if layer.fund_type in NOT_LAYERS:
            raise PolicyError(f"layer {layer.fund_type.value} ({FUND_NAMES[layer.fund_type]}) is not a further layer "
                              "(R18): the pooled fund is priced by the benefit rules, the account by R16")
        if layer.fund_type in seen:
            raise PolicyError(f"layer {layer.fund_type.value} appears twice: one layer per fund (its year is counted "
                              "per fund; segments by amount are not supported)")
        if layer.fund_type not in LAYERS_OF[policy.insutype]:
            raise PolicyError(
                f"R18: layer {layer.fund_type.value} ({FUND_NAMES[layer.fund_type]}) is not a layer of "
                f"{policy.insutype.value} ({'employee' if policy.insutype is InsuranceType.EMPLOYEE else 'resident'}) "
                f"insurance; its layers are "
                + ", ".join(f"{f.value} ({FUND_NAMES[f]})" for f in sorted(LAYERS_OF[policy.insutype])))
        seen.add(layer.fund_type)
        if previous is not None and LAYER_ORDER.get(layer.fund_type, 0) < LAYER_ORDER.get(previous.fund_type, 0):
            # Each layer pays a share of what the ones before it left: listed in another order, medical
            # assistance before serious illness (say), the same stay splits otherwise. DOMAIN.md's order
            # is the default; another would be a policy option of its own, documented and tested.
            raise PolicyError(
                f"R18: layer {layer.fund_type.value} ({FUND_NAMES[layer.fund_type]}) is listed after "
                f"{previous.fund_type.value} ({FUND_NAMES[previous.fund_type]}); layers pay in this order: serious-"
                "illness insurance or the employee large-amount subsidy, then the civil-servant subsidy, then "
                "medical assistance")
        previous = layer
        _check_ratio(f"layer {layer.fund_type.value} ratio", layer.ratio)
        _check_amount(f"layer {layer.fund_type.value} threshold", layer.threshold)
        _check_amount(f"layer {layer.fund_type.value} cap", layer.annual_cap)
        if layer.base is LayerBase.ABOVE_POOLED_CAP and policy.annual_cap is None:
            raise PolicyError(f"layer {layer.fund_type.value} pays above the pooled fund's annual cap, "
                              "and the policy has no annual_cap")


def policy_in_force(
    versions: list[BenefitPolicy], region: str, insutype: InsuranceType, on: date
) -> BenefitPolicy | None:
    """The version of a region's policy in force on ``on``: the latest that has begun, of the
    region's own versions, else its city's, else its province's (area codes nest: a province's
    policy serves every region of it that publishes none). A region whose latest version begun
    has ended (``effective_to``: its pooling moved up to the city or province) has none of its own."""
    chain = region_chain(region)
    latest: dict[str, BenefitPolicy] = {}
    for p in versions:
        if p.region in chain and p.insutype == insutype and p.effective_from <= on:
            held = latest.get(p.region)
            if held is None or p.effective_from > held.effective_from:
                latest[p.region] = p
    for r in chain:
        p = latest.get(r)
        if p is not None and p.in_force(on):
            return p
    return None
