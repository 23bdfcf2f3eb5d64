"""The event loop's heartbeat: its time goes stale when the loop blocks (the scrapes, served from a
thread of their own, still answer), and how late each beat came is what a blocking handler cost."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from yidi.platform import heartbeat


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_heartbeat_runs_each_tick_and_a_blocked_loop_shows_as_a_late_beat():
    beats = _sample("yidi_event_loop_lag_seconds_count")
    on_time = _sample("yidi_event_loop_lag_seconds_bucket", le="0.1")
    started = time.time()
    task = asyncio.create_task(heartbeat.beat(tick=0.05))
    try:
        await asyncio.sleep(0)  # the beat's first time is set as it starts
        assert _sample("yidi_event_loop_heartbeat_timestamp_seconds") >= started
        await asyncio.sleep(0.12)
        time.sleep(0.3)  # a handler that does not yield: the loop runs nothing else meanwhile
        unblocked = time.time()
        await asyncio.sleep(0.12)
    finally:
        task.cancel()
    beaten = _sample("yidi_event_loop_lag_seconds_count") - beats
    late = beaten - (_sample("yidi_event_loop_lag_seconds_bucket", le="0.1") - on_time)
    assert beaten >= 3 and late >= 1  # the beat due during the block ran 0.2-0.3 s late
    assert _sample("yidi_event_loop_heartbeat_timestamp_seconds") >= unblocked
