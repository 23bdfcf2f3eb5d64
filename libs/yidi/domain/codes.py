"""Code lists of the national interface that the rules branch on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import StrEnum


# The platform's business time zone: China Standard Time (UTC+8, no daylight saving). Facility
# clocks (inf_time) are read in it; filing dates, and times shown to cashiers, are in it.
BUSINESS_TZ = timezone(timedelta(hours=8), "UTC+08:00")


def minutes_ahead(moment: datetime, now: datetime, tolerance_seconds: float) -> int | None:
    """How many whole minutes an aware ``moment`` is ahead of ``now``, when by more than the
    tolerance; else None. A source's time far ahead (a request's ``inf_time``, a region's record)
    is refused: it would pick a future year or month, or hold what follows it as older."""
    ahead = (moment - now).total_seconds()
    return None if ahead <= tolerance_seconds else int(ahead // 60)


def disease_key(code: str) -> str:
    """An ICD-10 code or prefix as the platform compares them: upper case, without its dot
    ("N18.500" and "n18500", "Z99.2" and "Z992" alike; facilities send both forms)."""
    return code.upper().replace(".", "")


# R14: the five chronic and special outpatient diseases settled across provinces, by ICD-10 prefix.
CROSS_PROVINCE_CHRONIC: dict[str, tuple[str, ...]] = {
    "hypertension": ("I10", "I11", "I12", "I13", "I15"),
    "diabetes": ("E10", "E11", "E12", "E13", "E14"),
    # A malignant tumour (C), or a session of radiotherapy or chemotherapy coded as such (Z51.0, Z51.1).
    "malignant tumour chemo/radiotherapy": ("C", "Z51.0", "Z51.1"),
    # Chronic kidney disease (N18: the national coding puts stage 5 under N18.9 as well, so the
    # stages are not told apart here; the home qualification the person must hold is the gate),
    # kidney failure (N19), or a dialysis visit coded as such (Z49, Z99.2).
    "uraemia dialysis": ("N18", "N19", "Z49", "Z99.2"),
    # After a transplant (Z94), or its rejection treated (T86).
    "anti-rejection after organ transplant": ("Z94", "T86"),
}


def chronic_disease_of(code: str) -> str | None:
    """R14: the cross-province chronic disease a diagnosis (or treatment) code belongs to, if any."""
    plain = disease_key(code)  # "N18.500" and "N18500", "Z99.2" and "Z992" alike
    for disease, prefixes in CROSS_PROVINCE_CHRONIC.items():
        if any(plain.startswith(disease_key(p)) for p in prefixes):
            return disease
    return None


# R14: the codes of a session of treatment rather than of a diagnosis (radiotherapy or chemotherapy,
# dialysis, a transplant's rejection treated). A visit coded by its treatment is the treated
# disease's: a person qualified at home for uraemia (N18.5) has dialysis visits coded Z49.1.
TREATMENT_CODES: tuple[str, ...] = ("Z51.0", "Z51.1", "Z49", "Z99.2", "T86")
_TREATMENT_KEYS = tuple(disease_key(t) for t in TREATMENT_CODES)


def disease_covers(prefix: str, code: str) -> bool:
    """Whether a qualification or a policy rule's disease ``prefix`` covers a visit coded ``code``
    (R14): the code starts with it (without case or dot), or the code is a treatment session
    (``TREATMENT_CODES``) of the cross-province disease the prefix belongs to. A qualification for
    diabetes does not cover a dialysis session; one for uraemia does."""
    key = disease_key(code)
    if key.startswith(disease_key(prefix)):
        return True
    if not key.startswith(_TREATMENT_KEYS):
        return False
    disease = chronic_disease_of(code)
    return disease is not None and disease == chronic_disease_of(prefix)


def region_chain(region: str) -> tuple[str, ...]:
    """A 6-digit area code and the regions it lies in, the most specific first (GB/T 2260: two
    digits of province, two of city, two of county): "440106" → ("440106", "440100", "440000").
    A filing to any of them covers care in the region (R9); the region's catalogue and policy are
    its own versions, else its city's, else its province's."""
    if len(region) != 6:
        return (region,)  # not an area code: no region holds it
    chain = [region]
    for parent in (region[:4] + "00", region[:2] + "0000"):
        if parent != chain[-1]:
            chain.append(parent)
    return tuple(chain)


def within(region: str, area: str) -> bool:
    """Whether ``region`` lies in ``area``: the same code, or a county or city inside it
    ("440106" lies in "440100" and in "440000"; "440100" does not lie in "440106")."""
    return area in region_chain(region)


class MedType(StrEnum):
    """Medical category (``med_type``)."""

    GENERAL_OUTPATIENT = "11"
    EMERGENCY = "13"
    CHRONIC_OUTPATIENT = "14"
    INPATIENT = "21"
    EMERGENCY_TO_INPATIENT = "24"
    PHARMACY = "41"

    @property
    def is_inpatient(self) -> bool:
        return self in (MedType.INPATIENT, MedType.EMERGENCY_TO_INPATIENT)

    @property
    def is_emergency(self) -> bool:
        return self in (MedType.EMERGENCY, MedType.EMERGENCY_TO_INPATIENT)


class InsuranceType(StrEnum):
    """Insurance type (``insutype``)."""

    EMPLOYEE = "310"
    RESIDENT = "390"


class PersonType(StrEnum):
    """Person type (``psn_type``); illustrative codes, documented in docs/reference-data.md."""

    IN_SERVICE = "11"
    RETIRED = "12"
    RESIDENT = "21"


class ChargeClass(StrEnum):
    """Catalogue class (``chrgitm_lv``): A fully in scope, B with a first self-pay share, C self-paid."""

    A = "01"
    B = "02"
    C = "03"


class FilingCategory(StrEnum):
    """Filing categories (R4): three long-term, three temporary, and the two-group mode's pair."""

    RETIREE_RESETTLED = "retiree_resettled"
    LONG_TERM_RESIDENT = "long_term_resident"
    POSTED_WORKER = "posted_worker"
    REFERRAL = "referral"
    EMERGENCY = "emergency"
    TEMPORARY_OTHER = "temporary_other"
    # Two-group mode of some provinces (R4).
    LONG_TERM = "long_term"
    TEMPORARY = "temporary"

    @property
    def is_long_term(self) -> bool:
        return self in LONG_TERM_CATEGORIES


LONG_TERM_CATEGORIES = frozenset(
    {
        FilingCategory.RETIREE_RESETTLED,
        FilingCategory.LONG_TERM_RESIDENT,
        FilingCategory.POSTED_WORKER,
        FilingCategory.LONG_TERM,
    }
)


class FundType(StrEnum):
    """Fund payment types (``fund_pay_type``) of the national code list."""

    EMPLOYEE_POOLED = "310100"
    EMPLOYEE_ACCOUNT = "310200"
    CIVIL_SERVANT = "320100"
    EMPLOYEE_LARGE_AMOUNT = "330100"
    RESIDENT_POOLED = "390100"
    RESIDENT_SERIOUS_ILLNESS = "390200"
    MEDICAL_ASSISTANCE = "610100"


FUND_NAMES: dict[FundType, str] = {
    FundType.EMPLOYEE_POOLED: "employee basic medical insurance pooled fund",
    FundType.EMPLOYEE_ACCOUNT: "employee individual account",
    FundType.CIVIL_SERVANT: "civil-servant medical subsidy",
    FundType.EMPLOYEE_LARGE_AMOUNT: "employee large-amount medical subsidy",
    FundType.RESIDENT_POOLED: "resident basic medical insurance fund",
    FundType.RESIDENT_SERIOUS_ILLNESS: "resident serious-illness insurance",
    FundType.MEDICAL_ASSISTANCE: "medical assistance fund",
}


def pooled_fund_for(insutype: InsuranceType) -> FundType:
    return FundType.EMPLOYEE_POOLED if insutype is InsuranceType.EMPLOYEE else FundType.RESIDENT_POOLED
