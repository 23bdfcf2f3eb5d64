"""Experiment: the bare pipeline with some hops at-least-once (no Kafka transaction).

    python -m loadtest.latency_probe reference --runs 3 --seconds 15 \
        --reference-module loadtest.experiments.plain_hops --env LOADTEST_PLAIN_HOPS=eligible,priced

A plain hop consumes a batch (lingering as a ``TransactionalStage`` does, ``YIDI_BATCH_LINGER_MS``
after its last batch), publishes the handler's records with the idempotent producer, waits for
their acks and commits the offsets in the background (one commit in flight). The other hops stay
``TransactionalStage``s. Measures how much of the latency floor the transactions are
(docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from loadtest import reference_pipeline as ref
from yidi.platform import metrics
from yidi.platform.kafka import TransactionalStage, ensure_topics, make_producer
from yidi.platform.settings import Settings

log = logging.getLogger("loadtest.plain")


class PlainStage(TransactionalStage):
    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            *[s.topic(t) for t in self.topics], bootstrap_servers=s.kafka_bootstrap,
            group_id=s.group(self.group_id), enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", max_poll_records=self.max_records, fetch_max_wait_ms=200)
        self._producer = make_producer(s, enable_idempotence=True, linger_ms=0, max_batch_size=512 * 1024)
        await self._producer.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._plain(), name=f"plain-{self.name}")

    async def _plain(self) -> None:
        assert self._consumer is not None and self._producer is not None
        committing: asyncio.Task[None] | None = None
        last = 0.0
        while not self._stopping:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=self.max_records)
            records = self._incoming(batch)
            if not records:
                continue
            # The same linger as TransactionalStage._run (its LingerGate too), so that only the transaction differs.
            linger = self.settings.batch_linger_ms / 1000 - (time.monotonic() - last)
            if linger > 0 and len(records) < self.max_records and self._linger_wanted():
                await asyncio.sleep(linger)
                more = self._incoming(
                    await self._consumer.getmany(timeout_ms=0, max_records=self.max_records - len(records)))
                self._linger.lingered(len(more))
                records += more
            outgoing = await self.handler(records)
            sends = [await self._producer.send(o.topic, o.value, key=o.key) for o in outgoing]
            await asyncio.gather(*sends)
            offsets: dict[TopicPartition, int] = {}
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
            if committing is not None:
                await committing
            committing = asyncio.create_task(self._consumer.commit(offsets))
            last = time.monotonic()
            metrics.STAGE_RECORDS.labels(self.name).inc(len(records))


async def run(which: str) -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics.serve_metrics(settings.metrics_host, settings.metrics_port)
    ref._what_if_options()
    await ensure_topics(settings)
    plain = set(filter(None, os.environ.get("LOADTEST_PLAIN_HOPS", "").split(",")))
    stages = []
    for stage in ref.stages_for(settings, which):
        hop = stage.name.removeprefix("ref-")
        if hop in plain:
            stage = PlainStage(name=stage.name, service=stage.service, settings=settings, topics=stage.topics,
                               group_id=stage.group_id, handler=stage.handler, max_records=stage.max_records)
        stages.append(stage)
    for stage in stages:
        await stage.start()
    metrics.SERVICE_UP.labels(f"ref-{which}").set(1)
    log.info("plain hops %s; stage %s ready", sorted(plain), which)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *[s.task for s in stages if s.task]], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    for stage in stages:
        await stage.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["all", *ref.HOPS], default="all")
    asyncio.run(run(parser.parse_args().stage))


if __name__ == "__main__":
    main()
