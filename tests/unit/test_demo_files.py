"""The demo files README.md tells users to send are valid requests (deploy/demo/)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from services.eligibility.handlers import INPUT_MODELS
from yidi.contracts.clearing import CLEARING_REQUEST
from yidi.contracts.envelope import RequestEnvelope
from yidi.contracts.filing import FilingRequest

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"


def files(folder: str) -> list[Path]:
    found = sorted((DEMO / folder).glob("*.json"))
    assert found, f"no demo files in deploy/demo/{folder}"
    return found


@pytest.mark.parametrize("path", files("requests"), ids=lambda p: p.name)
def test_a_demo_settlement_request_validates(path):
    request = RequestEnvelope.model_validate(json.loads(path.read_text()))
    INPUT_MODELS[request.infno].model_validate(request.data)


@pytest.mark.parametrize("path", files("filing"), ids=lambda p: p.name)
def test_a_demo_filing_request_validates(path):
    FilingRequest.model_validate(json.loads(path.read_text()))


@pytest.mark.parametrize("path", files("clearing"), ids=lambda p: p.name)
def test_a_demo_clearing_request_validates(path):
    CLEARING_REQUEST.validate_python(json.loads(path.read_text()))


def test_the_demo_runs_the_month_of_every_demo_settlement_in_order():
    # Months are cleared in order: README's `clearing deploy/demo/clearing/*.json` after its demo
    # requests clears each month they settle in (WE1 is dated 2022-07), in the order sent.
    runs = [body["setlym"] for path in files("clearing")
            if (body := json.loads(path.read_text()))["type"] == "run_month"]
    settled = {json.loads(path.read_text())["inf_time"].replace("-", "")[:6] for path in files("requests")}
    assert runs == sorted(runs) and settled <= set(runs), (runs, settled)


def _policies() -> list[tuple[str, dict]]:
    from loadtest.world import World

    demo = json.loads((DEMO / "refdata.json").read_text())["policies"]
    world = list(World(persons=40, seed=3, run_id="Q").policy_records())
    return [(f"demo {p['version']}", p) for p in demo] + [(f"loadtest {p['version']}", p) for p in world]


def _policies_with_a_quota() -> list[tuple[str, dict]]:
    found = [(name, p) for name, p in _policies() if p.get("outpatient_quota") is not None]
    assert found, "no policy has an outpatient quota: the test below would test nothing"
    return found


@pytest.mark.parametrize("name,policy", _policies_with_a_quota(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_outpatient_quota_covers_every_kind_of_care_priced_by_the_general_outpatient_rules(name, policy):
    # R13: the general-outpatient quota caps what the pooled fund pays a person in a year. Where a
    # policy pays pharmacy purchases (41) by the same rules as general outpatient care (11), the
    # quota covers them too; with quota_med_types left at its default ["11"] a person whose quota was
    # used up at the clinic had the pooled fund go on paying at the pharmacy. (Care with rules of
    # its own, such as emergency care (13), is the policy's to put under the quota or not.)
    shared = {m for rule in policy["rules"] if "11" in rule["med_types"] for m in rule["med_types"]}
    assert shared <= set(policy.get("quota_med_types", ["11"])), (name, shared)


def _judged(tmp_path: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    """deploy/local/demo.sh, copied beside the demo's requests, judging ``lines`` printed by a
    yidi-gateway of the test's own (one line per answer, in the requests' order, as the real one)."""
    import shutil

    root = tmp_path / f"root-{len(list(tmp_path.iterdir()))}"
    (root / "deploy" / "local").mkdir(parents=True)
    for script in ("demo.sh", "common.sh", "env.sh"):
        shutil.copy(DEMO.parent / "local" / script, root / "deploy" / "local" / script)
    shutil.copytree(DEMO / "requests", root / "deploy" / "demo" / "requests")
    (root / ".venv" / "bin").mkdir(parents=True)
    gateway = root / ".venv" / "bin" / "yidi-gateway"
    gateway.write_text("#!/usr/bin/env bash\ncat <<'END'\n" + "\n".join(lines) + "\nEND\n")
    gateway.chmod(0o755)
    return subprocess.run(["bash", str(root / "deploy" / "local" / "demo.sh")], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}, timeout=60)


def test_make_run_takes_a_not_filed_refusal_only_for_the_request_meant_to_get_it(tmp_path):
    # Request 06 is the same person's as 05 (an emergency without filing, R5): with Ma Jun's demo
    # filing approved, 05 settles, and 06 refused NOT_FILED passed as "Yidi is running" (a review,
    # session 48).
    names = [p.name for p in files("requests")]
    place = next(i for i, name in enumerate(names) if name.startswith("05-"))
    settled = "2207 13100000000000000008 at H11010800002: total 510.00, funds pay 0.00  [S1]"
    refused = "2207 13100000000000000008 at H11010800002: REFUSED NOT_FILED: No valid filing for region 110000"
    lines = [settled] * len(names)
    assert _judged(tmp_path, lines).returncode == 0
    lines[place] = refused
    assert _judged(tmp_path, lines).returncode == 0
    lines[place], lines[place + 1] = settled, refused
    judged = _judged(tmp_path, lines)
    assert judged.returncode == 1 and "refused that should settle" in judged.stderr
    lines[place] = refused  # 05 and 06 both refused
    assert _judged(tmp_path, lines).returncode == 1
    lines = [settled] * (len(names) - 1)  # an answer short
    assert "answers for" in _judged(tmp_path, lines).stderr
