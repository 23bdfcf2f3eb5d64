"""The services' garbage-collector policy: thresholds read from settings, every collection timed,
what a started service holds frozen out of later collections, a full collection now and then."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from yidi.platform import collector, metrics
from yidi.platform.settings import Settings


@pytest.fixture
def interpreter_gc():
    """Whatever a test does to the collector is undone after it: thresholds, the freeze, the timer."""
    thresholds = gc.get_threshold()
    timer = collector._timer
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    if collector._timer is not timer and collector._timer in gc.callbacks:
        gc.callbacks.remove(collector._timer)
    collector._timer = timer


@pytest.mark.parametrize(("text", "read"), [("50000,20,100", (50000, 20, 100)), (" 700 ", (700,)), ("", None),
                                            ("1, 0, 0", (1, 0, 0))])
def test_thresholds_are_read_from_one_to_three_numbers(text, read):
    assert collector.parse_thresholds(text) == read


@pytest.mark.parametrize("text", ["fast", "1,2,3,4", "-1", "700;10", "0", "0,10,10", "99999999999", "１０００",
                                  "1_000", "+5"])
def test_settings_refuse_thresholds_that_would_stop_collection_or_the_service(text):
    with pytest.raises(ValidationError, match="gc_thresholds"):
        Settings(gc_thresholds=text)


@pytest.mark.parametrize("seconds", [0.0001, 0.5, -1])
def test_settings_refuse_a_full_collection_more_often_than_every_second(seconds):
    with pytest.raises(ValidationError, match="gc_full_collection_seconds"):
        Settings(gc_full_collection_seconds=seconds)


def _observed(generation: int) -> tuple[float, float]:
    """(seconds, collections) of ``generation`` in yidi_gc_pause_seconds so far."""
    labels = {"generation": str(generation)}
    return (REGISTRY.get_sample_value("yidi_gc_pause_seconds_sum", labels) or 0.0,
            REGISTRY.get_sample_value("yidi_gc_pause_seconds_count", labels) or 0.0)


def test_tuning_sets_the_thresholds_and_times_every_collection(interpreter_gc):
    collector.tune("40000,15,90")
    assert gc.get_threshold() == (40000, 15, 90)
    seconds_before, count_before = _observed(2)
    gc.collect()
    seconds_after, count_after = _observed(2)
    assert count_after == count_before + 1 and seconds_after > seconds_before


def test_tuning_twice_times_each_collection_once(interpreter_gc):
    collector.tune("")
    collector.tune("")
    _, before = _observed(2)
    gc.collect()
    assert _observed(2)[1] == before + 1


class _Held:
    pass


def test_freezing_collects_the_garbage_first_and_keeps_what_is_held_out_of_later_collections(interpreter_gc):
    garbage = _Held()
    garbage.me = garbage  # a cycle nothing else refers to: only a collection frees it
    dead = weakref.ref(garbage)
    del garbage
    held = _Held()
    collector.freeze()
    assert dead() is None  # collected, not frozen
    assert not any(o is held for o in gc.get_objects())  # frozen: no generation holds it any more
    assert gc.get_freeze_count() > 0
    assert metrics.GC_FROZEN._value.get() == gc.get_freeze_count()  # shown: the e2e tests read it from each service


async def test_a_full_collection_runs_every_period(interpreter_gc):
    collector.tune("")
    _, before = _observed(2)
    started = time.monotonic()
    task = asyncio.create_task(collector.collect_every(0.05))
    try:
        while _observed(2)[1] < before + 3 and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert _observed(2)[1] >= before + 3  # an idle loop alone makes no full collection in 10 s
