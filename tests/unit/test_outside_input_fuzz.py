"""What the regions and offices send, mutated at random (tests.unit.mutations): a feed record and a
filing or clearing request are refused as data (ValidationError, ValueError, ArithmeticError: what
the feeds and the stages dead-letter) or taken, never raise anything else, which would leave a
feed's batch read again for ever and a stage retrying for every hospital. A record a feed takes is
readable where it is used: stored as the services store it and read back under the stored rules,
it gives its domain object (a policy taken but unreadable would leave its region's settlements
refused NO_POLICY; the settlement requests' own fuzz is in test_bad_input.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tests.unit.mutations import fuzzing, mutate
from yidi.contracts.clearing import CLEARING_REQUEST
from yidi.contracts.filing import FilingRequest
from yidi.contracts.refdata import (
    STORED_CONTEXT,
    CatalogueRecord,
    FacilityRecord,
    PersonRecord,
    PolicyRecord,
    RegionStatusRecord,
)
from yidi.domain.codes import BUSINESS_TZ
from yidi.platform.jsonwire import loads

ROOT = Path(__file__).resolve().parents[2]
DEMO = json.loads((ROOT / "deploy" / "demo" / "refdata.json").read_text())
REFUSED = (ValidationError, ValueError, ArithmeticError)  # what the feeds and parse_each dead-letter

# Each feed's model, the records it starts from (every one of the demo's), and the check the feed
# makes beside validation (eligibility's: a person record dated ahead of the clock).
FEEDS: dict[str, tuple[type[BaseModel], list[dict], Callable[[Any], str | None] | None]] = {
    "persons": (PersonRecord, DEMO["persons"], lambda r: r.ahead_of(datetime.now(BUSINESS_TZ), 300)),
    "facilities": (FacilityRecord, DEMO["facilities"], None),
    "policies": (PolicyRecord, DEMO["policies"], None),
    "catalogue": (CatalogueRecord, DEMO["catalogue"], None),
    "region_status": (RegionStatusRecord, [{"status_id": "S1", "admdvs": "131000",
                                             "starts_at": "2026-11-23T02:00:00+08:00",
                                             "ends_at": "2026-11-23T04:00:00+08:00", "reason": "upgrade"}], None),
}
FILING_REQUESTS = DEMO["filings"] + [json.loads(p.read_text()) for p in sorted((ROOT / "deploy" / "demo" / "filing").glob("*.json"))]
CLEARING_REQUESTS = [json.loads(p.read_text()) for p in sorted((ROOT / "deploy" / "demo" / "clearing").glob("*.json"))]


def _wire(message: dict) -> bytes:
    return json.dumps(message).encode()  # the standard library writes integers past 64 bits; orjson does not


def _taken_or_refused(read: Callable[[], Any]) -> Any:
    """What ``read`` gives, or None when it refuses the message as data."""
    try:
        return read()
    except REFUSED:
        return None


@pytest.mark.parametrize("feed", list(FEEDS))
def test_the_seeds_are_records_each_feed_takes(feed):
    model, seeds, check = FEEDS[feed]
    for seed in seeds:
        record = model.model_validate(loads(_wire(seed)))
        assert check is None or check(record) is None, seed


@pytest.mark.parametrize("feed", list(FEEDS))
@given(data=st.data())
@fuzzing(250)
def test_a_mutated_feed_record_is_refused_as_data_or_taken_and_readable_where_it_is_used(feed, data):
    model, seeds, check = FEEDS[feed]
    raw = _wire(mutate(data.draw, data.draw(st.sampled_from(seeds))))

    def read() -> Any:
        record = model.model_validate(loads(raw))
        if check is not None and (why := check(record)) is not None:
            raise ValueError(why)
        return record

    record = _taken_or_refused(read)
    if record is None:
        return
    # Stored as eligibility and pricing store it, read back under the stored rules, used.
    stored = model.model_validate(orjson.loads(record.model_dump_json()), context=STORED_CONTEXT)
    assert stored == record
    if hasattr(stored, "to_domain"):
        stored.to_domain()


@pytest.mark.parametrize(("what", "seeds", "validate"), [
    ("filing", FILING_REQUESTS, FilingRequest.model_validate),
    ("clearing", CLEARING_REQUESTS, CLEARING_REQUEST.validate_python),
])
@given(data=st.data())
@fuzzing(250)
def test_a_mutated_filing_or_clearing_request_is_refused_as_data_or_taken(what, seeds, validate, data):
    raw = _wire(mutate(data.draw, data.draw(st.sampled_from(seeds))))
    _taken_or_refused(lambda: validate(loads(raw)))


def test_the_filing_and_clearing_seeds_are_requests_the_stages_take():
    for seed in FILING_REQUESTS:
        FilingRequest.model_validate(loads(_wire(seed)))
    for seed in CLEARING_REQUESTS:
        CLEARING_REQUEST.validate_python(loads(_wire(seed)))


def test_the_suite_fuzzes_fixed_examples_and_make_fuzz_fresh_ones(monkeypatch):
    from tests.unit.mutations import fuzzing

    monkeypatch.delenv("YIDI_FUZZ_EXAMPLES", raising=False)
    fixed = fuzzing(250)
    assert (fixed.max_examples, fixed.derandomize) == (250, True)
    monkeypatch.setenv("YIDI_FUZZ_EXAMPLES", "5000")
    fresh = fuzzing(250)
    assert (fresh.max_examples, fresh.derandomize) == (5000, False)
