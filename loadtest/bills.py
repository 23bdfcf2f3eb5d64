"""Bills of a generated day: fee details whose totals follow the national averages (DOMAIN.md figures).

Amounts are handled in fen (integers); every detail is ``cnt × pric`` exactly and the bill's
``medfee_sumamt`` is the sum of its details, as SettlementInput requires.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from loadtest.world import UNLISTED_CODE


@dataclass(frozen=True, slots=True)
class CareKind:
    name: str
    infno: str
    pre_infno: str
    cancel_infno: str
    med_type: str
    share: float
    mean_yuan: float
    sigma: float


# The day's mix (NHSA Q1 2025 cross-province settlements, DOMAIN.md figures) and bill averages:
# inpatient ≈ 22,470 and general outpatient ≈ 241 yuan (source 004); chronic and pharmacy bills
# are not in the sources: 450 and 95 yuan are assumptions (docs/BENCHMARKS.md).
MIX: tuple[CareKind, ...] = (
    CareKind("inpatient", "2304", "2303", "2305", "21", 0.05, 22_470.0, 0.8),
    CareKind("outpatient", "2207", "2206", "2208", "11", 0.64, 241.0, 0.9),
    CareKind("chronic", "2207", "2206", "2208", "14", 0.04, 450.0, 0.7),
    CareKind("pharmacy", "2207", "2206", "2208", "41", 0.27, 95.0, 0.8),
)

# Item pools: (code, name, counts (lo, hi)).
_SURGERY = (("003108000010000", "appendectomy", (1, 1)), ("003111000020000", "laparoscopic cholecystectomy", (1, 1)))
_INPATIENT_POOL = (
    ("002703000010000", "CT scan, one site", (1, 3)),
    ("002704000010000", "MRI scan, one site", (1, 2)),
    ("250101000010000", "complete blood count", (1, 6)),
    ("250305000010000", "liver function panel", (1, 4)),
    ("XJ01DDA063A001", "ceftriaxone for injection", (4, 30)),
    ("XB05BA03A001", "compound amino acid injection", (2, 20)),
    ("XA02BCA001A001", "omeprazole capsules", (7, 40)),
    ("XL01XC003A001", "trastuzumab for injection", (1, 2)),
)
_OUTPATIENT_POOL = (
    ("250101000010000", "complete blood count", (1, 1)),
    ("002703000010000", "CT scan, one site", (1, 1)),
    ("XJ01DDA063A001", "ceftriaxone for injection", (1, 3)),
    ("XJ01CRA001A001", "amoxicillin/clavulanate tablets", (1, 3)),
    ("XR05CBA001A001", "ambroxol tablets", (1, 3)),
    ("XN02BEA001A001", "paracetamol tablets", (1, 2)),
    ("XA02BCA001A001", "omeprazole capsules", (1, 3)),
    ("XC08CAA001A001", "amlodipine tablets", (1, 3)),
)
_PHARMACY_POOL = (
    ("XR05CBA001A001", "ambroxol tablets", (1, 4)),
    ("XN02BEA001A001", "paracetamol tablets", (1, 4)),
    ("XA02BCA001A001", "omeprazole capsules", (1, 3)),
    ("XJ01CRA001A001", "amoxicillin/clavulanate tablets", (1, 3)),
    ("XC08CAA001A001", "amlodipine tablets", (1, 6)),
    ("XA10BFA013A001", "acarbose tablets", (1, 6)),
    ("ZZCOS0000001", "cosmetic dressing", (1, 2)),
)
_CHRONIC_POOL = {
    "I10": (("XC09CAM095A001", "amlodipine/valsartan tablets", (1, 6)), ("XC08CAA001A001", "amlodipine tablets", (1, 6))),
    "E11": (("XA10BFA013A001", "acarbose tablets", (1, 6)), ("XA10BXR018A001", "repaglinide tablets", (1, 6))),
    "C50": (("XL01BC002A001", "capecitabine tablets", (1, 4)), ("250101000010000", "complete blood count", (1, 1))),
    "N18": (("003105000010000", "haemodialysis session", (1, 1)), ("XB03XAE001A001", "erythropoietin injection", (1, 3))),
    "Z94": (("XL04AD002A001", "tacrolimus capsules", (1, 4)), ("250305000010000", "liver function panel", (1, 1))),
}
_UNLISTED = (UNLISTED_CODE, "unlisted item", (1, 2))

INPATIENT_DISEASES = (("K35.800", "acute appendicitis"), ("I63.900", "cerebral infarction"),
                      ("J18.900", "pneumonia"), ("K80.100", "gallstones with cholecystitis"),
                      ("S72.000", "fracture of femoral neck"), ("C50.900", "breast cancer"))
OUTPATIENT_DISEASES = (("J06.900", "upper respiratory infection"), ("J20.900", "acute bronchitis"),
                       ("K29.700", "gastritis"), ("M54.500", "low back pain"), ("I10.X00", "essential hypertension"),
                       ("R51.X00", "headache"))


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def draw_total(rng: random.Random, kind: CareKind) -> int:
    """A bill total in fen: lognormal with the kind's mean (mu = ln(mean) - sigma²/2)."""
    mu = math.log(kind.mean_yuan) - kind.sigma**2 / 2
    return max(100, round(rng.lognormvariate(mu, kind.sigma) * 100))


class BillMaker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def details(self, kind: CareKind, total_fen: int, chronic: str = "") -> tuple[list[dict[str, str]], int]:
        """Fee details of a bill of about ``total_fen``; returns them and, for inpatient, the stay in days."""
        rng, lines, days = self.rng, [], 0
        fixed: list[tuple[str, str, int, int]] = []  # code, name, cnt, pric_fen
        if kind.med_type == "21":
            per_day = rng.choice((4000, 5000, 6000, 8000)) + rng.choice((2000, 3000, 4000))
            days = max(1, min(30, round(total_fen / 220_000 * rng.uniform(0.6, 1.4))))
            days = max(1, min(days, total_fen // (2 * per_day)))
            # The bed is part of the day's charge: nursing care is the rest, at least 10 yuan (a
            # dearer bed than the day's charge made nursing care a negative line, which the
            # contract now refuses: a bill's lines are charges).
            bed = min(rng.choice((4000, 5000, 6000, 8000)), per_day - 1000)
            fixed += [("001102000010000", "general ward bed, per day", days, bed),
                      ("001103000010000", "nursing care grade II, per day", days, per_day - bed)]
            pool = list(_INPATIENT_POOL)
            variable = rng.sample(pool, rng.randint(3, 6))
            if rng.random() < 0.5:
                variable.append(rng.choice(_SURGERY))
            if rng.random() < 0.1:
                variable.append(("ZZVIP0000001", "private ward upgrade", (1, 5)))
        elif kind.med_type == "11":
            specialist = rng.random() < 0.3
            fixed.append(("121600004", "specialist consultation", 1, rng.randrange(5000, 10001, 500)) if specialist
                         else ("121600003", "outpatient consultation", 1, rng.randrange(2000, 5001, 500)))
            variable = rng.sample(_OUTPATIENT_POOL, rng.randint(1, 4))
        elif kind.med_type == "14":
            if rng.random() < 0.5:
                fixed.append(("121600003", "outpatient consultation", 1, rng.randrange(2000, 5001, 500)))
            variable = list(_CHRONIC_POOL[chronic])
        else:
            variable = rng.sample(_PHARMACY_POOL, rng.randint(1, 3))
        if rng.random() < 0.03:
            variable.append(_UNLISTED)
        sn = 0
        for code, name, cnt, pric in fixed:
            sn += 1
            lines.append(self._line(sn, code, name, cnt, pric))
        remaining = total_fen - sum(cnt * pric for _, _, cnt, pric in fixed)
        if remaining >= 100 or not lines:
            remaining = max(remaining, 100)
            weights = [rng.random() + 0.2 for _ in variable]
            scale = sum(weights)
            left = remaining
            for i, ((code, name, (lo, hi)), w) in enumerate(zip(variable, weights, strict=True)):
                part = left if i == len(variable) - 1 else round(remaining * w / scale)
                left -= part
                if part < 1:
                    continue
                cnt = rng.randint(lo, hi)
                pric = max(1, round(part / cnt))
                sn += 1
                lines.append(self._line(sn, code, name, cnt, pric))
        return lines, days

    @staticmethod
    def _line(sn: int, code: str, name: str, cnt: int, pric_fen: int) -> dict[str, str]:
        return {"feedetl_sn": str(sn), "hilist_code": code, "hilist_name": name, "cnt": str(cnt),
                "pric": yuan(pric_fen), "det_item_fee_sumamt": yuan(cnt * pric_fen)}


def total_of(details: list[dict[str, str]]) -> int:
    return sum(int(d["det_item_fee_sumamt"].replace(".", "")) for d in details)
