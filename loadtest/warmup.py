"""Warm the stack up before measuring it: replay until the broker's JIT compiler has settled.

A freshly started Kafka broker compiles its hot code for minutes. On the 2-core box its C1/C2
compiler threads used 0.4–0.6 of a core for the first ~2 minutes of a 100/s load, and the
services' p99 at 100/s fell from 1,009 to 222 ms over eight 20-s runs as they finished
(docs/BENCHMARKS.md, 2026-12-03 "A cold broker"). A broker in service has long since compiled, so a
bench that starts the stack and measures at once measures the start-up, not the platform.

``warm_up`` replays a short burst, then rounds at a fixed rate, and stops after the first round
in which the broker's compiler threads used less than ``settled_cores`` of a core (or once
``max_seconds`` have passed). The threads are read from ``/proc/<pid>/task`` (loadtest.observe),
so only the local stack's broker is watched; without its pid the warm-up replays the burst and
one round and says that it could not watch the JIT. Each replay's checks (exactly once, the
ledger) are returned with it, to count like any other replay's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.observe import jit_cores, jit_threads
from loadtest.replay import Pace, replay_file

SETTLED_CORES = 0.1
MAX_SECONDS = 240.0
ROUND_SECONDS = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup-seconds", type=float, default=MAX_SECONDS,
                        help=f"warm up for at most this long, in rounds of {ROUND_SECONDS:g} s, until the broker's "
                             f"JIT compiler uses < {SETTLED_CORES:g} core (0: a short burst only)")


async def warm_up(
    burst: Path,
    make_round: Callable[[int], Path],
    *,
    bootstrap: str,
    namespace: str,
    rate: float,
    broker_pid: int | None,
    database_url: str | None = None,
    settled_cores: float = SETTLED_CORES,
    max_seconds: float = MAX_SECONDS,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Replay ``burst`` (as fast as a window of 200 allows), then rounds ``make_round(k)`` (about
    ``ROUND_SECONDS`` each) at ``rate`` until the broker's JIT used less than ``settled_cores``
    in a round, or ``max_seconds`` have passed. Returns what was done: the rounds, why it
    stopped (``settled``, ``limit`` or ``not watched``), and the replays' results."""
    started = time.monotonic()
    results = [await replay_file(burst, bootstrap=bootstrap, namespace=namespace, pace=Pace(window=200),
                                 database_url=database_url, progress=False)]
    rounds: list[dict[str, Any]] = []
    stopped = "limit"
    while time.monotonic() - started < max_seconds:
        jit_before, t0 = jit_threads(broker_pid), time.monotonic()
        result = await replay_file(make_round(len(rounds)), bootstrap=bootstrap, namespace=namespace,
                                   pace=Pace(rate=rate, window=2000), database_url=database_url, progress=False)
        cores = jit_cores(jit_before, jit_threads(broker_pid), time.monotonic() - t0)
        results.append(result)
        rounds.append({"requests": result["sends"], "p99_ms": result["latency_ms"].get("p99"), "jit_cores": cores})
        say(f"warm-up round {len(rounds)} at {rate:g}/s: p99 {result['latency_ms'].get('p99')} ms, "
            f"broker JIT {'not watched' if cores is None else f'{cores:.2f} cores'}")
        if cores is None:
            stopped = "not watched"  # nothing to wait for: one round warms the clients and the caches
            break
        if cores < settled_cores:
            stopped = "settled"
            break
    return {"seconds": round(time.monotonic() - started, 1), "rate": rate, "settled_cores": settled_cores,
            "max_seconds": max_seconds, "stopped": stopped, "rounds": rounds, "results": results}


def summary(warm: dict[str, Any]) -> str:
    """One line on a warm-up: how long, and why it stopped."""
    rounds, seconds = warm["rounds"], f"{warm['seconds']:.0f} s"
    if not rounds:
        return f"a burst only, in {seconds} (limit {warm['max_seconds']:g} s)"
    done = f"{len(rounds)} round{'' if len(rounds) == 1 else 's'} at {warm['rate']:g}/s in {seconds}"
    last = rounds[-1]["jit_cores"]
    if warm["stopped"] == "not watched":
        return f"{done}; the broker's JIT not watched (not the local stack's broker, or not a HotSpot JVM)"
    if warm["stopped"] == "settled":
        return f"{done}, until the broker's JIT used {last:.2f} cores (< {warm['settled_cores']:g})"
    return f"{done}, stopped at the limit ({warm['max_seconds']:g} s) with the broker's JIT still at {last:.2f} cores"
