"""The reference data behind a generated day: regions, facilities, catalogues, policies, persons, filings.

Regions, facilities, catalogues and policies are fixed (the same in every run, so publishing them
again is an idempotent upsert); they use region codes the demo data and the tests do not use.
Persons and their filings are drawn from the seed and carry the run's ``run_id`` in their
``psn_no``, so runs sharing one Postgres never share a person's accumulators.

``refdata()`` is a loader data file (the format of deploy/demo/refdata.json), valid for
``yidi.refdata.loader.validate``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from yidi.domain.filing import add_months

DEFAULT_DAY = date(2026, 3, 18)
POLICY_BEGIN = "2024-01-01"
CATALOGUE_BEGIN = "2024-01-01"

# (code, name, weight): where the persons are insured ...
INSURED_REGIONS = (
    ("510100", "Chengdu", 1.3), ("420100", "Wuhan", 1.0), ("430100", "Changsha", 0.9),
    ("410100", "Zhengzhou", 1.2), ("360100", "Nanchang", 0.7), ("450100", "Nanning", 0.6),
    ("130100", "Shijiazhuang", 1.0), ("340100", "Hefei", 0.8),
)
# ... and where they are treated (their filed region, or its province: FILED_TO_PROVINCE).
TREATING_REGIONS = (
    ("440100", "Guangzhou", 1.4), ("320100", "Nanjing", 0.9), ("330100", "Hangzhou", 1.1),
    ("120000", "Tianjin", 0.8), ("460100", "Haikou", 0.7), ("500000", "Chongqing", 0.9),
)
# Facilities of each treating region: (prefix, number, level). Nationally 61,000 inpatient and
# 76,100 outpatient facilities and 210,200 pharmacies were networked (DOMAIN.md, 2022): a city
# has hundreds of each. A day's settlements go mostly to the higher-level hospitals
# (FACILITY_WEIGHT: a level-3 hospital draws 12 times what a level-1 one does, so the 40 take 45 %
# of a region's hospital care, the 120 level-2 ones 33 %); the pharmacies draw evenly.
HOSPITAL_MED_TYPES = ["11", "13", "14", "21", "24"]
FACILITY_PLAN = (("H", 40, 3), ("H", 120, 2), ("H", 240, 1), ("P", 600, 1))
FACILITY_WEIGHT = {3: 12, 2: 3, 1: 1}

# Catalogue items (the same national codes in every treating region; ceilings differ a little by region):
# code, name, class, first self-pay share, price ceiling (yuan) or None.
CATALOGUE_ITEMS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("121600003", "outpatient consultation", "01", "0.00", "50.00"),
    ("121600004", "specialist consultation", "01", "0.00", "100.00"),
    ("001102000010000", "general ward bed, per day", "01", "0.00", "80.00"),
    ("001103000010000", "nursing care grade II, per day", "01", "0.00", "40.00"),
    ("003108000010000", "appendectomy", "01", "0.00", None),
    ("003111000020000", "laparoscopic cholecystectomy", "01", "0.00", None),
    ("003105000010000", "haemodialysis session", "01", "0.00", "480.00"),
    ("002703000010000", "CT scan, one site", "02", "0.10", "280.00"),
    ("002704000010000", "MRI scan, one site", "02", "0.10", "650.00"),
    ("250101000010000", "complete blood count", "01", "0.00", "30.00"),
    ("250305000010000", "liver function panel", "01", "0.00", "120.00"),
    ("XJ01DDA063A001", "ceftriaxone for injection", "02", "0.10", "60.00"),
    ("XJ01CRA001A001", "amoxicillin/clavulanate tablets", "02", "0.10", None),
    ("XB05BA03A001", "compound amino acid injection", "03", "0.00", None),
    ("XA10BFA013A001", "acarbose tablets", "01", "0.00", None),
    ("XA10BXR018A001", "repaglinide tablets", "02", "0.10", None),
    ("XC09CAM095A001", "amlodipine/valsartan tablets", "02", "0.05", None),
    ("XC08CAA001A001", "amlodipine tablets", "01", "0.00", None),
    ("XL01XC003A001", "trastuzumab for injection", "02", "0.20", "7800.00"),
    ("XL01BC002A001", "capecitabine tablets", "02", "0.10", None),
    ("XL04AD002A001", "tacrolimus capsules", "01", "0.00", None),
    ("XB03XAE001A001", "erythropoietin injection", "02", "0.10", None),
    ("XR05CBA001A001", "ambroxol tablets", "01", "0.00", None),
    ("XN02BEA001A001", "paracetamol tablets", "01", "0.00", None),
    ("XA02BCA001A001", "omeprazole capsules", "02", "0.05", None),
    ("ZZVIP0000001", "private ward upgrade", "03", "0.00", None),
    ("ZZCOS0000001", "cosmetic dressing", "03", "0.00", None),
)
UNLISTED_CODE = "ZZUNLISTED0001"  # in no catalogue: fully self-paid

# R14: one qualification code per cross-province chronic disease, and the diagnosis used in bills.
CHRONIC_DISEASES = (
    ("I10", "I10.X00", "essential hypertension"),
    ("E11", "E11.900", "type 2 diabetes"),
    ("C50", "C50.900", "breast cancer, outpatient chemotherapy"),
    ("N18", "N18.500", "uraemia, dialysis"),
    ("Z94", "Z94.000", "after kidney transplant, anti-rejection therapy"),
)
LONG_TERM_BY_TYPE = {"12": "retiree_resettled", "11": "posted_worker", "21": "long_term_resident"}
FILED_TO_PROVINCE = 3  # filings whose index is this modulo 5 are to the treating province


@dataclass(frozen=True, slots=True)
class Person:
    """What the day needs of a person; the loader records are built from it."""

    psn_no: str
    insured: str
    treating: str
    insutype: str
    psn_type: str
    chronic: str  # qualification code from CHRONIC_DISEASES, or ""
    category: str  # filing category, or "" (not filed)
    acct_fen: int


def yuan(fen: int) -> str:
    """An amount in fen as the wire writes yuan ("12.05")."""
    return f"{fen // 100}.{fen % 100:02d}"


def facility_codes(region: str) -> list[tuple[str, int, list[str]]]:
    """(code, level, med_types) of each facility of a treating region (12-character codes)."""
    out, n = [], 0
    for prefix, count, level in FACILITY_PLAN:
        for _ in range(count):
            n += 1
            out.append((f"{prefix}{region}{n:05d}", level, ["41"] if prefix == "P" else list(HOSPITAL_MED_TYPES)))
    return out


def _pick(rng: random.Random, weighted: tuple[tuple[str, str, float], ...]) -> str:
    return rng.choices([r[0] for r in weighted], weights=[r[2] for r in weighted])[0]


class World:
    """The persons of a run, drawn from ``seed``; everything else is fixed."""

    def __init__(self, *, persons: int, seed: int = 1, run_id: str = "", day: date = DEFAULT_DAY,
                 unfiled_share: float = 0.015, chronic_share: float = 0.12, temporary_share: float = 0.25,
                 home_usage_share: float = 0.0) -> None:
        if persons < 1:
            raise ValueError("a world has at least one person")
        self.seed = seed
        self.run_id = run_id or f"LT{seed}"
        if not self.run_id.isalnum() or len(self.run_id) > 16:
            raise ValueError("run_id is 1-16 letters or digits (it goes into every psn_no and msgid)")
        self.day = day
        # The share of persons whose record states what their insurance paid at home this year
        # (``home_usage``): drawn per person apart from the world's draws, so 0 changes nothing.
        self.home_usage_share = home_usage_share
        # Seeded by the seed alone: the run id names psn_no and msgid, and must not change the world.
        rng = random.Random(f"world:{seed}")
        self.persons: list[Person] = []
        for i in range(persons):
            insured = _pick(rng, INSURED_REGIONS)
            insutype = "310" if rng.random() < 0.6 else "390"
            psn_type = ("12" if rng.random() < 0.45 else "11") if insutype == "310" else "21"
            chronic = rng.choice(CHRONIC_DISEASES)[0] if rng.random() < chronic_share else ""
            draw = rng.random()
            if draw < unfiled_share:
                category = ""
            elif draw < unfiled_share + temporary_share:
                category = "referral" if rng.random() < 0.4 else "temporary_other"
            else:
                category = LONG_TERM_BY_TYPE[psn_type]
            acct = rng.randrange(0, 500_000) if insutype == "310" else 0
            self.persons.append(Person(f"{self.run_id}{insured}{i:07d}", insured, _pick(rng, TREATING_REGIONS),
                                       insutype, psn_type, chronic, category, acct))
        self.chronic_persons = [p for p in self.persons if p.chronic and p.category]
        self.facilities = {r: facility_codes(r) for r, _, _ in TREATING_REGIONS}

    # Reference data -----------------------------------------------------------------------------

    def refdata(self) -> dict[str, list[dict[str, Any]]]:
        """The loader data file of this world (deploy/demo/refdata.json's format)."""
        return {
            "facilities": list(self.facility_records()),
            "policies": list(self.policy_records()),
            "catalogue": list(self.catalogue_records()),
            "persons": [self.person_record(p) for p in self.persons],
            "filings": [f for f in (self.filing_record(i, p) for i, p in enumerate(self.persons)) if f],
        }

    def facility_records(self) -> Iterator[dict[str, Any]]:
        names = {r: n for r, n, _ in TREATING_REGIONS}
        for region, facilities in self.facilities.items():
            for code, level, med_types in facilities:
                kind = "pharmacy" if code.startswith("P") else f"level-{level} hospital"
                yield {"fixmedins_code": code, "fixmedins_name": f"{names[region]} {kind} {int(code[-5:])}",
                       "admdvs": region, "level": level, "med_types": med_types}

    def catalogue_records(self) -> Iterator[dict[str, Any]]:
        for n, (region, _, _) in enumerate(TREATING_REGIONS):
            for code, name, lv, prop, ceiling in CATALOGUE_ITEMS:
                record: dict[str, Any] = {"mdtrtarea_admvs": region, "hilist_code": code, "hilist_name": name,
                                          "chrgitm_lv": lv, "selfpay_prop": prop, "begndate": CATALOGUE_BEGIN}
                if ceiling is not None:
                    # Regions differ a little: 0 %, +5 %, +10 % on the ceiling.
                    fen = round(int(ceiling.replace(".", "")) * (100 + 5 * (n % 3)) / 100)
                    record["pric_uplmt_amt"] = yuan(fen)
                yield record

    def policy_records(self) -> Iterator[dict[str, Any]]:
        for n, (region, name, _) in enumerate(INSURED_REGIONS):
            op_dedc = 600 + 100 * (n % 4)
            yield {
                "insuplc_admdvs": region, "insutype": "310", "version": f"LT-{name[:6].upper()}-E1",
                "begndate": POLICY_BEGIN,
                "rules": [
                    {"med_types": ["11", "41"], "deductible": f"{op_dedc}.00", "ratio": f"0.{50 + 5 * (n % 3)}",
                     "deductible_bucket": "outpatient"},
                    {"med_types": ["11", "41"], "psn_types": ["12"], "deductible": f"{op_dedc - 200}.00",
                     "ratio": f"0.{60 + 5 * (n % 3)}", "deductible_bucket": "outpatient"},
                    {"med_types": ["13"], "deductible": "0.00", "ratio": "0.70", "deductible_bucket": "emergency"},
                    {"med_types": ["14"], "deductible": "0.00", "ratio": "0.80", "deductible_bucket": "chronic"},
                    {"med_types": ["21", "24"], "deductible": f"{800 + 100 * (n % 5)}.00", "ratio": "0.85",
                     "deductible_bucket": "inpatient", "deductible_scope": "stay"},
                    {"med_types": ["21", "24"], "psn_types": ["12"], "deductible": f"{700 + 100 * (n % 5)}.00",
                     "ratio": "0.90", "deductible_bucket": "inpatient", "deductible_scope": "stay"},
                ],
                "annual_cap": "300000.00", "outpatient_quota": f"{3000 + 500 * (n % 3)}.00",
                "quota_med_types": ["11", "41"],
                "reductions": {"referral": "0.05", "emergency": "0.00", "temporary_other": f"0.{10 + 5 * (n % 2)}"},
                "first_selfpay": {"temporary_other": "0.10"},
                "layers": [
                    {"fund_type": "330100", "threshold": "0.00", "ratio": "0.85", "annual_cap": "400000.00",
                     "base": "above_pooled_cap", "med_types": ["14", "21", "24"]},
                    {"fund_type": "320100", "threshold": "0.00", "ratio": "0.50", "annual_cap": "20000.00",
                     "requires": "civil_servant"},
                ],
            }
            yield {
                "insuplc_admdvs": region, "insutype": "390", "version": f"LT-{name[:6].upper()}-R1",
                "begndate": POLICY_BEGIN,
                "rules": [
                    {"med_types": ["11", "41"], "deductible": f"{150 + 50 * (n % 3)}.00", "ratio": "0.50",
                     "deductible_bucket": "outpatient"},
                    {"med_types": ["13"], "deductible": "0.00", "ratio": "0.60", "deductible_bucket": "emergency"},
                    {"med_types": ["14"], "deductible": "0.00", "ratio": "0.60", "deductible_bucket": "chronic"},
                    {"med_types": ["21", "24"], "deductible": f"{1000 + 100 * (n % 4)}.00", "ratio": "0.65",
                     "deductible_bucket": "inpatient", "deductible_scope": "stay"},
                ],
                "annual_cap": "150000.00", "outpatient_quota": "800.00", "quota_med_types": ["11", "41"],
                "reductions": {"referral": "0.10", "emergency": "0.05", "temporary_other": "0.15"},
                "first_selfpay": {"temporary_other": "0.10"},
                "layers": [
                    {"fund_type": "390200", "threshold": "15000.00", "ratio": "0.60", "annual_cap": "400000.00"},
                    {"fund_type": "610100", "threshold": "0.00", "ratio": "0.70", "annual_cap": "50000.00",
                     "requires": "medical_assistance"},
                ],
            }

    def person_record(self, p: Person) -> dict[str, Any]:
        n = int(p.psn_no[-7:])
        qualifications = []
        if p.insutype == "310" and n % 50 == 7:
            qualifications.append("civil_servant")
        if p.insutype == "390" and n % 33 == 5:
            qualifications.append("medical_assistance")
        return {
            "psn_no": p.psn_no, "psn_name": f"load-test person {n}", "insuplc_admdvs": p.insured,
            "insutype": p.insutype, "psn_type": p.psn_type, "active": True,
            "chronic_qualifications": [p.chronic] if p.chronic else [],
            "acct_balc": yuan(p.acct_fen), "acct_version": "2026-01",
            "qualifications": qualifications,
        } | self._home_usage(n)

    def _home_usage(self, n: int) -> dict[str, Any]:
        """What the person's insurance paid at home this year, for a share of persons: part of the
        outpatient deductible (every policy here names the bucket ``outpatient``), the pooled fund
        and the outpatient quota, so that their bills here start from it."""
        if not self.home_usage_share:
            return {}
        rng = random.Random(f"home:{self.seed}:{n}")
        if rng.random() >= self.home_usage_share:
            return {}
        return {"home_usage": [{"year": self.day.year, "deductible_paid": {"outpatient": yuan(rng.randrange(0, 60_000))},
                                "pooled_paid": yuan(rng.randrange(0, 2_000_000)),
                                "outpatient_quota_used": yuan(rng.randrange(0, 50_000))}]}

    def filing_record(self, index: int, p: Person) -> dict[str, Any] | None:
        if not p.category:
            return None
        rng = random.Random(f"filing:{self.seed}:{index}")
        # One filing in five is to the treating region's province, which covers its cities (R9: a
        # person may file to the province or the city); a municipality is its own province.
        filed = p.treating[:2] + "0000" if index % 5 == FILED_TO_PROVINCE else p.treating
        record: dict[str, Any] = {
            "action": "add", "reqid": f"{self.run_id}-F{index:07d}", "psn_no": p.psn_no, "insutype": p.insutype,
            "insuplc_admdvs": p.insured, "filed_admdvs": filed, "category": p.category,
            "decl_source": "import",
        }
        if p.category in LONG_TERM_BY_TYPE.values():
            record["begndate"] = (self.day - timedelta(days=rng.randrange(200, 3000))).isoformat()
        else:
            begin = self.day - timedelta(days=rng.randrange(5, 150))
            record["begndate"] = begin.isoformat()
            record["enddate"] = add_months(begin, 6).isoformat()  # R7: at least six months
        return record
