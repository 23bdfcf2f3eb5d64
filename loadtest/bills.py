"""Bills of a generated day: fee details whose totals follow the national averages (DOMAIN.md figures).

Amounts are handled in fen (integers); every detail is ``cnt × pric`` exactly and the bill's
``medfee_sumamt`` is the sum of its details, as SettlementInput requires.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from loadtest.world import CATALOGUE_ITEMS, UNLISTED_CODE, yuan


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
# inpatient ≈ 22,470 and outpatient ≈ 241 yuan (source 004). Source 004's outpatient figure is
# every outpatient settlement, retail pharmacies' among them (4.967 bn yuan / 20.6268 M), so 241 is
# the mean of general outpatient, chronic outpatient and pharmacy bills together. Chronic and
# pharmacy bills are not in the sources: 450 and 95 yuan are assumptions, and general outpatient's
# 290 is what brings the three, at their shares, to 241 ((0.64·290 + 0.04·450 + 0.27·95) / 0.95).
OUTPATIENT_MEAN_YUAN = 241.0
MIX: tuple[CareKind, ...] = (
    CareKind("inpatient", "2304", "2303", "2305", "21", 0.05, 22_470.0, 0.8),
    CareKind("outpatient", "2207", "2206", "2208", "11", 0.64, 290.0, 0.9),
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

# The lowest price ceiling of each capped item over the treating regions (the world adds 0–10 % by
# region), in fen. A bill prices a capped item below it, but for the few lines priced over it on
# purpose (OVER_CEILING): the rest of a bill's total goes to items without a ceiling, so that most
# of its money lies within the catalogue's scope, as the national fund shares say it does.
CEILINGS_FEN = {code: int(ceiling.replace(".", "")) for code, _, _, _, ceiling in CATALOGUE_ITEMS if ceiling}
# Of the bills whose first variable item has a ceiling, the share priced 10–30 % over it (before any
# scaling down to the bill's total): about 0.7 % of all bills (pharmacy bills have no capped item).
OVER_CEILING = 0.03
# Class C items (fully self-paid) have no ceiling but a price of their own, so that they do not soak
# up the rest of a large bill: a day's private ward upgrade, a bag of amino acids, a dressing.
_PRICED_FEN = {**CEILINGS_FEN, "ZZVIP0000001": 30_000, "XB05BA03A001": 12_000, "ZZCOS0000001": 5_000}
# Items without a ceiling a bill can add when none of its lines can take the rest of its total.
_UNCAPPED_EXTRA = {
    "21": (("XJ01CRA001A001", "amoxicillin/clavulanate tablets", (6, 30)), ("XA02BCA001A001", "omeprazole capsules", (7, 40))),
    "11": (("XJ01CRA001A001", "amoxicillin/clavulanate tablets", (1, 3)), ("XA02BCA001A001", "omeprazole capsules", (1, 3))),
    "14": (("XC08CAA001A001", "amlodipine tablets", (1, 6)), ("XA10BFA013A001", "acarbose tablets", (1, 6))),
    "41": (("XN02BEA001A001", "paracetamol tablets", (1, 4)), ("XR05CBA001A001", "ambroxol tablets", (1, 4))),
}

INPATIENT_DISEASES = (("K35.800", "acute appendicitis"), ("I63.900", "cerebral infarction"),
                      ("J18.900", "pneumonia"), ("K80.100", "gallstones with cholecystitis"),
                      ("S72.000", "fracture of femoral neck"), ("C50.900", "breast cancer"))
OUTPATIENT_DISEASES = (("J06.900", "upper respiratory infection"), ("J20.900", "acute bronchitis"),
                       ("K29.700", "gastritis"), ("M54.500", "low back pain"), ("I10.X00", "essential hypertension"),
                       ("R51.X00", "headache"))


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
            # A day's bed and nursing care, each within its ceiling (80 and 40 yuan).
            bed, nursing = rng.choice((4000, 5000, 6000, 8000)), rng.randrange(1500, 4001, 500)
            per_day = bed + nursing
            days = max(1, min(30, round(total_fen / 220_000 * rng.uniform(0.6, 1.4))))
            days = max(1, min(days, total_fen // (2 * per_day)))
            fixed += [("001102000010000", "general ward bed, per day", days, bed),
                      ("001103000010000", "nursing care grade II, per day", days, nursing)]
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
            capped = [item for item in variable if item[0] in _PRICED_FEN]
            uncapped = [item for item in variable if item[0] not in _PRICED_FEN]
            over = any(item[0] in CEILINGS_FEN for item in capped[:1]) and rng.random() < OVER_CEILING
            priced: list[tuple[str, str, int, int]] = []
            # Capped items first, each at 50–95 % of its ceiling or price (a capped one over its
            # ceiling, now and then), scaled down together when they alone would pass the bill's total.
            for i, (code, name, (lo, hi)) in enumerate(capped):
                factor = rng.uniform(1.1, 1.3) if over and i == 0 else rng.uniform(0.5, 0.95)
                priced.append((code, name, rng.randint(lo, hi), max(1, round(_PRICED_FEN[code] * factor))))
            spent = sum(cnt * pric for _, _, cnt, pric in priced)
            budget = round(remaining * 0.9) if uncapped else remaining  # uncapped items keep 10 % at least
            if spent > budget:
                priced = [(c, n, cnt, max(1, int(pric * budget / spent))) for c, n, cnt, pric in priced]
                spent = sum(cnt * pric for _, _, cnt, pric in priced)
            if not uncapped and remaining - spent >= 100:
                # Nothing else on the bill can take the rest: an item without a ceiling does.
                uncapped = [rng.choice(_UNCAPPED_EXTRA[kind.med_type])]
            left = remaining - spent
            if uncapped and left > 0:
                weights = [rng.random() + 0.2 for _ in uncapped]
                scale = sum(weights)
                rest = left
                for i, ((code, name, (lo, hi)), w) in enumerate(zip(uncapped, weights, strict=True)):
                    part = rest if i == len(uncapped) - 1 else round(left * w / scale)
                    rest -= part
                    if part < 1:
                        continue
                    cnt = rng.randint(lo, hi)
                    priced.append((code, name, cnt, max(1, round(part / cnt))))
            for code, name, cnt, pric in priced:
                sn += 1
                lines.append(self._line(sn, code, name, cnt, pric))
        return lines, days

    @staticmethod
    def _line(sn: int, code: str, name: str, cnt: int, pric_fen: int) -> dict[str, str]:
        return {"feedetl_sn": str(sn), "hilist_code": code, "hilist_name": name, "cnt": str(cnt),
                "pric": yuan(pric_fen), "det_item_fee_sumamt": yuan(cnt * pric_fen)}


def total_of(details: list[dict[str, str]]) -> int:
    return sum(int(d["det_item_fee_sumamt"].replace(".", "")) for d in details)
