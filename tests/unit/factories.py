"""Small builders of domain objects for unit tests (plain data, no servers)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from yidi.domain.catalogue import Catalogue, CatalogueItem
from yidi.domain.codes import ChargeClass, FilingCategory, InsuranceType, MedType, PersonType
from yidi.domain.policy import BenefitPolicy, BenefitRule, DeductibleScope, Layer
from yidi.domain.pricing import Bill, BillLine, Terms

DAY = date(2022, 7, 1)

# WE1's person and long-term filing as eligibility stores them (the records of refdata.persons and
# filing.events): the Langfang retiree resettled in Beijing.
WE1_PSN_NO = "13100000000000000001"
WE1_PERSON = {"psn_no": WE1_PSN_NO, "psn_name": "Wang", "insuplc_admdvs": "131000", "insutype": "310",
              "psn_type": "12", "chronic_qualifications": ["E11"]}
WE1_FILING = {"filing_id": "F1", "psn_no": WE1_PSN_NO, "insutype": "310", "insuplc_admdvs": "131000",
              "filed_admdvs": "110000", "category": "retiree_resettled", "begndate": "2022-01-01",
              "enddate": None, "status": "active", "version": 1}


def item(code: str, cls: ChargeClass = ChargeClass.A, prop: str = "0", ceiling: str | None = None, region: str = "110000") -> CatalogueItem:
    return CatalogueItem(region, code, code, cls, D(prop), D(ceiling) if ceiling else None, date(2022, 1, 1))


def catalogue(*items: CatalogueItem) -> Catalogue:
    return Catalogue.in_force("110000", DAY, items)


def we1_catalogue() -> Catalogue:
    return catalogue(item("XA10BFA013A001"), item("XA10BXR018A001", ChargeClass.B, "0.10"))


def rule(med: MedType, deductible: str = "0", ratio: str = "0.80", **kw: object) -> BenefitRule:
    return BenefitRule(frozenset({med}), D(deductible), D(ratio), **kw)  # type: ignore[arg-type]


def policy(*rules: BenefitRule, insutype: InsuranceType = InsuranceType.EMPLOYEE, **kw: object) -> BenefitPolicy:
    return BenefitPolicy("131000", insutype, "test", date(2022, 1, 1), rules or (rule(MedType.CHRONIC_OUTPATIENT),), **kw)  # type: ignore[arg-type]


def we1_policy() -> BenefitPolicy:
    return policy(rule(MedType.CHRONIC_OUTPATIENT, "0", "0.80", person_types=frozenset({PersonType.RETIRED})), annual_cap=D("300000"))


def bill(*lines: tuple[str, str, str], visit: str = "V1") -> Bill:
    """lines: (code, count, price)"""
    return Bill(
        visit, DAY,
        tuple(BillLine(str(i), code, code, D(cnt), D(pric), (D(cnt) * D(pric)).quantize(D("0.01"))) for i, (code, cnt, pric) in enumerate(lines, 1)),
    )


def terms(med: MedType = MedType.CHRONIC_OUTPATIENT, *, category: FilingCategory | None = FilingCategory.RETIREE_RESETTLED,
          person: PersonType = PersonType.RETIRED, insutype: InsuranceType = InsuranceType.EMPLOYEE, **kw: object) -> Terms:
    return Terms(med, insutype, person, 3, category, **kw)  # type: ignore[arg-type]


__all__ = ["D", "DeductibleScope", "Layer", "ChargeClass", "FilingCategory", "InsuranceType", "MedType", "PersonType"]
