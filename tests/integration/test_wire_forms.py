"""Every message the settlement stages pass on, built in wire form, is what its model would dump.

Eligibility, pricing and clearing build settlement.eligible, settlement.priced and the answers as
dicts (no model round trip on the hot path). Here the three real handlers run on the real
Postgres and Redis over a generated day, and each message they produced is validated by its
model and compared with that model's dump: same fields, same order, same bytes.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import orjson
import pytest

from loadtest.bench_stages import Chain
from loadtest.world import World
from yidi.contracts.envelope import RequestEnvelope, ResponseEnvelope
from yidi.contracts.internal import EligibleWork, PricedWork
from yidi.contracts.settlement import SettlementOutput
from yidi.platform.cache import VersionedCache
from yidi.platform.db import create_pool
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED

from tests.answer_schemas import validator

pytestmark = pytest.mark.integration


def _round_trips(value: bytes, model_type) -> dict:
    built = orjson.loads(value)
    dumped = model_type.model_validate(built).model_dump(mode="json")
    assert orjson.dumps(dumped) == orjson.dumps(built)
    return built


async def test_the_stages_wire_forms_are_their_models_dumps(settings):
    tag = "WF" + uuid.uuid4().hex[:8].upper()
    pool = await create_pool(settings.database_url, size=4)
    cache = VersionedCache(settings.redis_url, ttl_seconds=60, prefix=f"{settings.namespace}{tag}:")
    try:
        chain = Chain(settings, pool, cache, World(persons=150, seed=3, run_id=tag))
        await chain.load()
        requests = chain.requests(400, tag, pre_settlements=0.1, duplicates=0.05)
        # A person nobody insures: at least one refusal is built, whatever the day drew.
        stranger = orjson.loads(next(r.value for r in requests if b'"infno":"2207"' in r.value))
        stranger["msgid"] += "X"
        stranger["input"]["data"]["psn_no"] = "NOBODY" + tag
        requests.append(replace(requests[0], offset=len(requests), value=orjson.dumps(stranger)))
        results = await chain.run(requests, size=100)
        eligible = [o for o in results["eligibility"][0] if o.topic == settings.topic(SETTLEMENT_ELIGIBLE)]
        priced = [o for o in results["pricing"][0] if o.topic == settings.topic(SETTLEMENT_PRICED)]
        answers = [o for stage in ("eligibility", "pricing", "clearing") for o in results[stage][0] if o.answered]
        assert len(eligible) > 350 and len(priced) > 300 and len(answers) >= 400

        sent = {orjson.loads(r.value)["msgid"]: r.value for r in requests}
        # And each against its published schema (docs/schemas), as a consumer of the topic would.
        schema = {name: validator(name) for name in ("EligibleWork", "PricedWork")}
        for name, outputs in (("EligibleWork", eligible), ("PricedWork", priced)):
            for o in outputs:
                errors = [e.message for e in schema[name].iter_errors(orjson.loads(o.value))]
                assert not errors, (name, errors[:3])
        refused = 0
        for o in eligible:
            # The request goes on as the gateway sent it (validated, not dumped again): the rest of
            # the message is its model's dump, and the request validates to what the gateway sent.
            built = orjson.loads(o.value)
            work = EligibleWork.model_validate(built)
            assert built["request"] == orjson.loads(sent[work.request.msgid])
            assert work.request == RequestEnvelope.model_validate_json(sent[work.request.msgid])
            dumped = work.model_dump(mode="json")
            dumped["request"] = built["request"]
            assert orjson.dumps(dumped) == orjson.dumps(built)
            refused += built["refusal"] is not None
        assert 0 < refused < len(eligible)  # both kinds were built (a day has unfiled persons)
        for o in priced:
            _round_trips(o.value, PricedWork)
        settled = 0
        for o in answers:
            answer = _round_trips(o.value, ResponseEnvelope)
            if answer["infno"] in ("2206", "2207", "2303", "2304") and answer["infcode"] == 0:
                _round_trips(orjson.dumps(answer["output"]), SettlementOutput)
                settled += 1
        assert settled > 300
    finally:
        await cache.close()
        await pool.close()
