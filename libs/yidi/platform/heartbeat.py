"""The event loop's heartbeat. /metrics is served from a thread of its own (prometheus_client), so a
loop that blocks (a handler stuck in a synchronous call, a loop that never yields) still answers
every scrape, with gauges frozen at their last values: a single instance then looked like one cut
off from Kafka (YidiKafkaUnreachable), and sent the on-call to the network. The heartbeat's time
goes stale instead (YidiEventLoopBlocked), and how late each beat came shows how long callbacks
wait behind a batch's handler."""

from __future__ import annotations

import asyncio
import time

from yidi.platform import metrics

TICK_SECONDS = 1.0


async def beat(tick: float = TICK_SECONDS) -> None:
    """Each ``tick``: the time of the beat (``yidi_event_loop_heartbeat_timestamp_seconds``) and
    how much later than due the loop ran it (``yidi_event_loop_lag_seconds``)."""
    loop = asyncio.get_running_loop()
    metrics.EVENT_LOOP_BEAT.set(time.time())
    while True:
        due = loop.time() + tick
        await asyncio.sleep(tick)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))
        metrics.EVENT_LOOP_BEAT.set(time.time())
