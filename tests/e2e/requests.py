"""Building requests for e2e tests from the demo files, with fresh ids."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[3] / "shared"
WE1_REQUEST = SHARED / "examples" / "we1" / "request.json"
WE1_EXPECTED = SHARED / "examples" / "we1" / "expected.json"


def fresh(request: dict[str, Any]) -> dict[str, Any]:
    """The same request under a new msgid (and visit id), as a new settlement would be."""
    r = copy.deepcopy(request)
    r["msgid"] = str(r["fixmedins_code"])[:12] + uuid.uuid4().hex[:18].upper()
    data = r.get("input", {}).get("data")
    if isinstance(data, dict) and "feedetail" in data:
        data["mdtrt_id"] = f"V{r['msgid']}"  # a visit is settled once (ALREADY_SETTLED)
    return r


def from_file(path: Path) -> dict[str, Any]:
    return fresh(json.loads(path.read_text()))


def we1() -> dict[str, Any]:
    return from_file(WE1_REQUEST)


def expected_we1() -> dict[str, Any]:
    return json.loads(WE1_EXPECTED.read_text())


def cancel_of(settle: dict[str, Any], setl_id: str) -> dict[str, Any]:
    data = settle["input"]["data"]
    infno = "2208" if settle["infno"] in ("2206", "2207") else "2305"
    r = fresh(settle)
    r["infno"] = infno
    r["input"] = {"data": {"psn_no": data["psn_no"], "mdtrt_id": data["mdtrt_id"], "setl_id": setl_id}}
    return r


def contains(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` on the fields ``expected`` names."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: not an object"]
        return [d for k, v in expected.items() for d in contains(actual.get(k), v, f"{path}.{k}")]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]
