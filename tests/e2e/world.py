"""A small world of its own for a test: unique regions, facility, policy, catalogue and persons.

Everything is published through the real feeds (the loader's validation and topics) in the
session's namespace, and the helper waits until the services have applied it.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from datetime import datetime
from typing import Any

from yidi.domain.codes import BUSINESS_TZ
from yidi.platform.lag import wait_caught_up
from yidi.platform.settings import Settings
from yidi.refdata.loader import consumers_to_wait_for, publish, validate

from tests.e2e.requests import fresh


def china_now() -> datetime:
    """Now on the platform's clock (China time, as requests and filings date things), whatever the
    machine's zone: in UTC's evening China is a day ahead, and a date from the machine's clock was
    the platform's yesterday."""
    return datetime.now(BUSINESS_TZ).replace(tzinfo=None)


LONG_TERM = {"retiree_resettled", "long_term_resident", "posted_worker", "long_term"}


_DRAWN: set[str] = set()  # the regions of this test session's worlds


def _region(prefix: str) -> str:
    # A county's code of a city (neither part 00): area codes nest, and a world at a city's or
    # province's code would lend its catalogue and policy to the other worlds inside it, and make
    # their care care at home. Never one an earlier world drew: two worlds insured in one region
    # share its statements (a clean-clone CI run met it, 1 in 9,801 per pair of worlds: a month's
    # statement counted another test's settlement).
    while True:
        region = prefix + f"{random.randrange(1, 100):02d}{random.randrange(1, 100):02d}"
        if region not in _DRAWN:
            _DRAWN.add(region)
            return region


class World:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.insured = _region("98")
        self.treating = _region("97")
        self.facility = "H" + uuid.uuid4().hex[:11].upper()

    async def load(self, *, optional_feeds: tuple[str, ...] = (), compression_type: str | None = None,
                   **sections: list[dict[str, Any]]) -> None:
        await publish(self.settings.kafka_bootstrap, self.settings.namespace, validate(sections),
                      compression_type=compression_type)
        await wait_caught_up(self.settings.kafka_bootstrap,
                             consumers_to_wait_for(self.settings.namespace, optional=optional_feeds), timeout=60)

    def policy(self, insutype: str = "310", **overrides: Any) -> dict[str, Any]:
        policy = {
            "insuplc_admdvs": self.insured, "insutype": insutype, "version": "TEST-1", "begndate": "2020-01-01",
            "rules": [
                {"med_types": ["11", "41"], "deductible": "300.00", "ratio": "0.60", "deductible_bucket": "op"},
                {"med_types": ["13"], "deductible": "0.00", "ratio": "0.70", "deductible_bucket": "er"},
                {"med_types": ["21", "24"], "deductible": "500.00", "ratio": "0.80", "deductible_bucket": "ip",
                 "deductible_scope": "stay"},
            ],
            "annual_cap": "5000.00", "outpatient_quota": "400.00",
            "reductions": {"temporary_other": "0.20", "referral": "0.10"},
            "first_selfpay": {"temporary_other": "0.10"},
        }
        return policy | overrides

    def catalogue(self) -> list[dict[str, Any]]:
        base = {"mdtrtarea_admvs": self.treating, "begndate": "2020-01-01"}
        return [
            base | {"hilist_code": "T-A", "hilist_name": "class A service", "chrgitm_lv": "01"},
            base | {"hilist_code": "T-B", "hilist_name": "class B drug", "chrgitm_lv": "02", "selfpay_prop": "0.10",
                    "pric_uplmt_amt": "40.00"},
            base | {"hilist_code": "T-C", "hilist_name": "class C item", "chrgitm_lv": "03"},
        ]

    async def build(self, policy: dict[str, Any] | None = None) -> World:
        await self.load(
            facilities=[{"fixmedins_code": self.facility, "fixmedins_name": "test hospital", "admdvs": self.treating,
                         "level": 3, "med_types": ["11", "13", "14", "21", "24", "41"]}],
            policies=[policy or self.policy()],
            catalogue=self.catalogue(),
        )
        return self

    async def person(self, *, category: str | None = "long_term_resident", psn_type: str = "11",
                     balance: str = "0.00", insutype: str = "310", psn_no: str | None = None,
                     compression_type: str | None = None, **extra: Any) -> str:
        """A new person of this world, with a filing of ``category``; or ``psn_no`` published again
        (its insurance changed, say), and then the filing: filing refuses one under an insurance its
        copy of the region's record does not show yet (R20), and the two topics are read apart."""
        again = psn_no is not None
        psn_no = psn_no or "T" + uuid.uuid4().hex[:19].upper()
        sections: dict[str, list[dict[str, Any]]] = {
            "persons": [{"psn_no": psn_no, "psn_name": "test person", "insuplc_admdvs": self.insured,
                         "insutype": insutype, "psn_type": psn_type, "acct_balc": balance, "acct_version": "v1"} | extra],
        }
        if category:
            sections["filings"] = [{
                "action": "add", "reqid": "R" + uuid.uuid4().hex, "psn_no": psn_no, "insutype": insutype,
                "insuplc_admdvs": self.insured, "filed_admdvs": self.treating, "category": category,
                # Temporary filings last six months from their start (R7): start them today.
                "begndate": "2020-01-01" if category in LONG_TERM else china_now().strftime("%Y-%m-%d"),
                "decl_source": "import",
            }]
        if again and "filings" in sections:
            await self.load(compression_type=compression_type, persons=sections.pop("persons"))
        await self.load(compression_type=compression_type, **sections)
        return psn_no

    def request(self, psn_no: str, items: list[tuple[str, str, str]], *, infno: str = "2207", med_type: str = "11",
                insutype: str = "310", account: bool = False, visit: str | None = None,
                when: str | None = None) -> dict[str, Any]:
        details: list[dict[str, str]] = []
        total = Decimal("0.00")
        for i, (code, cnt, pric) in enumerate(items, 1):
            amount = (Decimal(cnt) * Decimal(pric)).quantize(Decimal("0.01"))
            total += amount
            details.append({"feedetl_sn": str(i), "hilist_code": code, "hilist_name": code, "cnt": cnt, "pric": pric,
                            "det_item_fee_sumamt": str(amount)})
        request = fresh({
            "infno": infno, "msgid": "x", "mdtrtarea_admvs": self.treating, "insuplc_admdvs": self.insured,
            "inf_time": when or china_now().strftime("%Y-%m-%d %H:%M:%S"), "fixmedins_code": self.facility,
            "input": {"data": {
                "psn_no": psn_no, "insutype": insutype, "med_type": med_type,
                "mdtrt_id": visit or "V" + uuid.uuid4().hex[:10], "acct_used_flag": "1" if account else "0",
                "medfee_sumamt": str(total), "feedetail": details,
            }},
        })
        if visit:
            request["input"]["data"]["mdtrt_id"] = visit  # fresh() gives a bill a new visit otherwise
        return request


def filing_request(world: World, psn_no: str, action: str = "add", **fields: Any) -> dict[str, Any]:
    base = {
        "action": action, "reqid": "R" + uuid.uuid4().hex, "psn_no": psn_no, "insutype": "310",
        "insuplc_admdvs": world.insured, "filed_admdvs": world.treating, "category": "long_term_resident",
        "begndate": china_now().strftime("%Y-%m-%d"), "decl_source": "self_service",
    }
    if action not in ("add", "change"):
        base = {k: base[k] for k in ("action", "reqid", "psn_no", "decl_source")}
    return base | fields
