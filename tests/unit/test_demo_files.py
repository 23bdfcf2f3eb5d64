"""The demo files README.md tells users to send are valid requests (deploy/demo/)."""

from __future__ import annotations

import json
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
