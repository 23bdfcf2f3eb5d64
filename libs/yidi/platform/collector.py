"""Python's cyclic garbage collector, tuned for a stage that handles batches.

A stage's batch makes some hundred thousand containers (parsed JSON, models, answers) that live
until the batch is committed and then die by reference count; almost none is part of a cycle.
At Python's default thresholds (700, 10, 10) the collector ran a young collection every 700 of
them, scanned each survivor again in the middle generation, and every few batches ran a full
collection over everything the process holds (imports, caches of policies and catalogues): in
the stage benchmark 8-24 % of each handler's CPU (15 % of the three), in the services pauses of
up to 25 ms (docs/BENCHMARKS.md, 2026-12-04, "The garbage collector").

So each service:

- collects at thresholds from ``Settings.gc_thresholds`` (default 50,000 / 20 / 100). The young
  generation's count is the containers made less those freed, so it reaches 50,000 only when that
  many outlive their batch or sit in cycles: no collection at all in a bench or a whole day;
- freezes what it holds once it is ready (``gc.freeze``: modules, settings, warm caches, the
  connections open then), so no collection scans it again (a cycle among those is never freed);
- collects in full every ``Settings.gc_full_collection_seconds`` (default 600): at these
  thresholds the oldest generation is otherwise never collected;
- times every collection into ``yidi_gc_pause_seconds`` (by generation), so the cost stays visible.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from typing import Any

from yidi.platform import metrics


_WHOLE = re.compile(r"[0-9]{1,10}")
_MAX = 2**31 - 1  # gc.set_threshold takes C ints


def parse_thresholds(text: str) -> tuple[int, ...] | None:
    """``"50000,20,100"`` → (50000, 20, 100); empty → None (leave the interpreter's). One or two
    numbers set the first generations only. The first is at least 1: 0 turns automatic
    collection off, which no service should run with."""
    text = text.strip()
    if not text:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not 1 <= len(parts) <= 3 or not all(_WHOLE.fullmatch(part) for part in parts):
        raise ValueError(f"gc_thresholds is one to three whole numbers separated by commas, not {text!r}")
    values = tuple(int(part) for part in parts)
    if values[0] < 1 or any(v > _MAX for v in values):
        raise ValueError(f"gc_thresholds: the first is at least 1 (0 turns collection off) and none is above "
                         f"{_MAX}, not {text!r}")
    return values


class _PauseTimer:
    """A ``gc.callbacks`` entry: each collection's duration into ``yidi_gc_pause_seconds``."""

    def __init__(self) -> None:
        self._children = [metrics.GC_PAUSE_SECONDS.labels(str(g)) for g in range(3)]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)


_timer: _PauseTimer | None = None


def tune(thresholds: str) -> None:
    """Set the thresholds and start timing collections (once per process)."""
    global _timer
    values = parse_thresholds(thresholds)
    if values is not None:
        gc.set_threshold(*values)
    if _timer is None:
        _timer = _PauseTimer()
        gc.callbacks.append(_timer)


def freeze() -> None:
    """What the process holds now (imports, settings, warm caches) is kept out of every later
    collection: collect the garbage there is, then move the survivors to the permanent generation."""
    gc.collect()
    gc.freeze()
    metrics.GC_FROZEN.set(gc.get_freeze_count())


async def collect_every(seconds: float) -> None:
    """A full collection every ``seconds``. At these thresholds the collector itself almost never
    reaches the oldest generation (its count moves only with objects that outlive a batch), so a
    cycle that got there (a connection replaced after a broker or database restart) would never be
    freed. After the freeze a full collection scans only what came later: a few milliseconds."""
    while True:
        await asyncio.sleep(seconds)
        gc.collect()
