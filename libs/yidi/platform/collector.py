"""Python's cyclic garbage collector, tuned for a stage that handles batches.

A stage's batch makes some hundred thousand containers (parsed JSON, models, answers) that live
until the batch is committed and then die by reference count; almost none is part of a cycle.
At Python's default thresholds (700, 10, 10) the collector ran a young collection every 700 of
them, scanned each survivor again in the middle generation, and every few batches ran a full
collection over everything the process holds (imports, caches of policies and catalogues): in
the stage benchmark 8 % of the handlers' CPU, and a full collection paused a batch for ~30 ms.

So each service:

- collects at thresholds from ``Settings.gc_thresholds`` (default 50,000 / 20 / 100: a young
  collection every few batches, which still finds real cycles long before they matter);
- freezes what it holds once it is ready (``gc.freeze``: modules, settings, warm caches), so full
  collections no longer scan it;
- times every collection into ``yidi_gc_pause_seconds`` (by generation), so the cost stays visible.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from yidi.platform import metrics


def parse_thresholds(text: str) -> tuple[int, ...] | None:
    """``"50000,20,100"`` → (50000, 20, 100); empty → None (leave the interpreter's)."""
    text = text.strip()
    if not text:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"gc_thresholds is one to three whole numbers separated by commas, not {text!r}") from None
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values):
        raise ValueError(f"gc_thresholds is one to three whole numbers, none negative, not {text!r}")
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
