"""Producers may compress their batches (gzip, lz4, snappy, zstd: whatever a gateway's or a region's
Kafka client is set to, or a topic's ``compression.type``). Every stage and feed reads them all:
without lz4/snappy/zstd (cramjam), one such batch stopped a stage in a loop and made a feed skip
records."""

from __future__ import annotations

import pytest

from yidi.client.gateway import GatewayClient

from tests.answer_schemas import AnswerSchemas
from tests.e2e.world import World, filing_request

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "zstd"])
async def test_compressed_records_are_read_by_every_stage_and_feed(system, codec):
    world = await World(system.settings).build()
    # The person through refdata.persons (filing's and eligibility's feeds), compressed.
    psn_no = await world.person(category=None, compression_type=codec)
    schemas = AnswerSchemas("FilingResult")
    async with GatewayClient(system.settings.kafka_bootstrap, namespace=system.settings.namespace,
                             request_topic="filing.requests", reply_to="filing.results", correlate_by="reqid",
                             compression_type=codec, on_answer=schemas) as filings:
        filed = await filings.call(filing_request(world, psn_no), timeout=30)
    schemas.check()
    assert filed["accepted"] is True, filed
    await world.load()  # the filing's event applied by eligibility
    settle = AnswerSchemas("ResponseEnvelope")
    async with GatewayClient(system.settings.kafka_bootstrap, namespace=system.settings.namespace,
                             compression_type=codec, on_answer=settle) as gateway:
        answer = await gateway.call(world.request(psn_no, [("T-A", "1", "100.00")]), timeout=30)
    settle.check()
    assert answer["infcode"] == 0, answer
    assert answer["output"]["setlinfo"]["psn_no"] == psn_no
