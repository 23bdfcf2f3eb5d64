"""The bare pipeline: Yidi's Kafka hops with handlers that do no work, the yardstick for throughput.

settlement.requests → settlement.eligible → settlement.priced → the request's reply topic, each
hop a ``yidi.platform.kafka.TransactionalStage`` (the same consumer, producer, transactions and
batch size as the services). The first two hops pass the bytes on; the last answers each request
with a minimal valid response (its msgid; for a settlement a made-up setl_id, so the replay's
cancellations still go out). No Postgres, no Redis, no parsing beyond what the answer needs.

    YIDI_NAMESPACE=ref1. python -m loadtest.reference_pipeline --stage all
    (or one process per hop: --stage eligible | priced | answer, as the bench runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import orjson

from yidi.contracts import answers
from yidi.contracts.envelope import DEFAULT_REPLY_TO
from yidi.platform import kafka as yidi_kafka
from yidi.platform import collector, metrics
from yidi.platform.jsonwire import dumps
from yidi.platform.kafka import Incoming, Outgoing, TransactionalStage, ensure_topics
from yidi.platform.replies import recover_ids
from yidi.platform.settings import Settings
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED, SETTLEMENT_REQUESTS

log = logging.getLogger("loadtest.reference")
HOPS = {"eligible": (SETTLEMENT_REQUESTS, SETTLEMENT_ELIGIBLE), "priced": (SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED),
        "answer": (SETTLEMENT_PRICED, None)}
SETTLEMENTS = {"2207", "2304"}


class PassOn:
    def __init__(self, settings: Settings, to_topic: str) -> None:
        self.topic = settings.topic(to_topic)

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        return [Outgoing(self.topic, r.value, r.key) for r in records]


class AnswerAll:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, records: list[Incoming]) -> list[Outgoing]:
        out = []
        for r in records:
            try:
                request = orjson.loads(r.value)
                msgid, reply_to = request.get("msgid"), request.get("reply_to") or DEFAULT_REPLY_TO
                infno, facility = str(request.get("infno", "")), str(request.get("fixmedins_code", ""))
            except orjson.JSONDecodeError:
                msgid, reply_to, infno, facility = recover_ids(r.value)
            if not msgid:
                continue  # the real platform dead-letters it without an answer, too
            output = {"setlinfo": {"setl_id": f"S{msgid}"[:64]}} if infno in SETTLEMENTS else None
            answer = answers.answer(msgid, infno, output)
            out.append(Outgoing(self.settings.topic(reply_to), dumps(answer), facility.encode() or None))
        return out


def _what_if_options() -> None:
    """Try client settings on the bare pipeline before proposing them for the services:
    ``LOADTEST_PRODUCER_OPTIONS='{"retry_backoff_ms": 10}'`` (the stage's producer comes from
    ``make_producer``), ``LOADTEST_CONSUMER_OPTIONS='{"fetch_max_wait_ms": 10}'`` (its consumer is an
    ``AIOKafkaConsumer`` built in ``TransactionalStage.start``)."""
    producer: dict[str, Any] = orjson.loads(os.environ.get("LOADTEST_PRODUCER_OPTIONS") or "{}")
    consumer: dict[str, Any] = orjson.loads(os.environ.get("LOADTEST_CONSUMER_OPTIONS") or "{}")
    if producer:
        plain = yidi_kafka.make_producer

        def make_producer(settings: Settings, **overrides: object) -> Any:
            return plain(settings, **(overrides | producer))

        yidi_kafka.make_producer = make_producer  # type: ignore[assignment]
    if consumer:
        base = yidi_kafka.AIOKafkaConsumer

        class Consumer(base):  # type: ignore[misc, valid-type]
            def __init__(self, *topics: str, **options: Any) -> None:
                super().__init__(*topics, **(options | consumer))

        yidi_kafka.AIOKafkaConsumer = Consumer  # type: ignore[misc]
    if producer or consumer:
        log.warning("what-if client options: producer %s, consumer %s", producer, consumer)


def stages_for(settings: Settings, which: str) -> list[TransactionalStage]:
    names = list(HOPS) if which == "all" else [which]
    stages = []
    for name in names:
        source, target = HOPS[name]
        handler = AnswerAll(settings) if target is None else PassOn(settings, target)
        stages.append(TransactionalStage(
            name=f"ref-{name}", service=f"ref-{name}", settings=settings, topics=[source],
            group_id=f"yidi-ref-{name}", handler=handler, max_records=settings.batch_max_records,
        ))
    return stages


async def run(which: str) -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collector.tune(settings.gc_thresholds)  # the services' runtime, so the comparison is of the handlers
    metrics.serve_metrics(settings.metrics_host, settings.metrics_port)
    _what_if_options()
    await ensure_topics(settings)
    stages = stages_for(settings, which)
    collector.freeze()
    for stage in stages:
        await stage.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before it says it is up: a stop may follow at once
        loop.add_signal_handler(sig, stop.set)
    up = f"ref-{which}"
    metrics.SERVICE_UP.labels(up).set(1)
    log.info("reference pipeline %s ready in namespace %r", which, settings.namespace)
    tasks = [s.task for s in stages if s.task]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    metrics.SERVICE_UP.labels(up).set(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    for stage in stages:
        await stage.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.reference_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", *HOPS], default="all")
    args = parser.parse_args(argv)
    asyncio.run(run(args.stage))


if __name__ == "__main__":
    main()
