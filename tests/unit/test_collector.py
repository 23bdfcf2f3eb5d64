"""The services' garbage-collector policy: thresholds read from settings, every collection timed,
what a started service holds frozen out of later collections."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from yidi.platform import collector
from yidi.platform.settings import Settings


@pytest.fixture
def interpreter_gc():
    """Whatever a test does to the collector is undone after it."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


@pytest.mark.parametrize(("text", "read"), [("50000,20,100", (50000, 20, 100)), (" 700 ", (700,)), ("", None)])
def test_thresholds_are_read_from_one_to_three_numbers(text, read):
    assert collector.parse_thresholds(text) == read


@pytest.mark.parametrize("text", ["fast", "1,2,3,4", "-1", "700;10"])
def test_settings_refuse_thresholds_that_are_not_one_to_three_whole_numbers(text):
    with pytest.raises(ValidationError, match="gc_thresholds"):
        Settings(gc_thresholds=text)


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


def test_what_a_started_service_holds_is_frozen_out_of_later_collections(interpreter_gc):
    held = [{"policy": i} for i in range(1000)]
    collector.freeze()
    assert gc.get_freeze_count() >= len(held)
