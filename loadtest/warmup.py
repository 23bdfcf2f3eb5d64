"""Warm the stack up before measuring it: replay until the broker's JIT compiler has settled.

A freshly started Kafka broker compiles its hot code for minutes. On the 2-core box its C1/C2
compiler threads used 0.4–0.6 of a core for the first ~2 minutes of a 100/s load, and the
services' p99 at 100/s fell from 1,009 to 222 ms over eight 20-s runs as they finished
(docs/BENCHMARKS.md, 2026-12-03 "A cold broker"). A broker in service has long since compiled, so a
bench that starts the stack and measures at once measures the start-up, not the platform.

``warm_up`` replays a short burst, then rounds at a fixed rate, and stops after the first round
in which the broker's compiler threads used less than ``settled_cores`` of a core (or after
``max_seconds``). The compiler threads' CPU is read from ``/proc/<pid>/task/*``, so this needs
the broker's pid (the local stack's); without one it replays the burst and one round and says
that it could not watch the JIT. Each round's checks (exactly once, the ledger) count like any
other replay's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.replay import Pace, replay_file

# HotSpot's compiler threads, as /proc shows their names (cut to 15 characters).
JIT_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")
SETTLED_CORES = 0.1
MAX_SECONDS = 240.0
ROUND_SECONDS = 10.0


def jit_cpu_seconds(pid: int | None, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds (user + system) the JVM ``pid``'s JIT compiler threads have used, or None
    when they cannot be read (no pid, not Linux, not a HotSpot JVM)."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0.0, False
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            if not (task / "comm").read_text().startswith(JIT_THREAD_PREFIXES):
                continue
            # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / tick
        found = True
    return total if found else None


def jit_cores(before: float | None, after: float | None, seconds: float) -> float | None:
    """Cores the JIT compiler used between two ``jit_cpu_seconds`` readings ``seconds`` apart."""
    if before is None or after is None or seconds <= 0:
        return None
    return round((after - before) / seconds, 3)


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
    """Replay ``burst`` (as fast as a window of 200 allows), then rounds ``make_round(k)`` at
    ``rate`` until the broker's JIT used less than ``settled_cores`` in a round, or ``max_seconds``
    have passed. Returns what was done: the rounds, whether the JIT settled, and the replays'
    results (for their checks)."""
    started = time.monotonic()
    results = [await replay_file(burst, bootstrap=bootstrap, namespace=namespace, pace=Pace(window=200),
                                 database_url=database_url, progress=False)]
    rounds: list[dict[str, Any]] = []
    settled: bool | None = None if jit_cpu_seconds(broker_pid) is None else False
    while time.monotonic() - started < max_seconds:
        day = make_round(len(rounds))
        jit_before, t0 = jit_cpu_seconds(broker_pid), time.monotonic()
        result = await replay_file(day, bootstrap=bootstrap, namespace=namespace, pace=Pace(rate=rate, window=2000),
                                   database_url=database_url, progress=False)
        cores = jit_cores(jit_before, jit_cpu_seconds(broker_pid), time.monotonic() - t0)
        results.append(result)
        rounds.append({"requests": result["sends"], "p99_ms": result["latency_ms"].get("p99"), "jit_cores": cores})
        say(f"warm-up round {len(rounds)} at {rate:g}/s: p99 {result['latency_ms'].get('p99')} ms, "
            f"broker JIT {'not watched' if cores is None else f'{cores:.2f} cores'}")
        if cores is None:
            settled = None
            break  # nothing to wait for: one round warms the clients and the caches
        if cores < settled_cores:
            settled = True
            break
    return {"seconds": round(time.monotonic() - started, 1), "rate": rate, "settled_cores": settled_cores,
            "settled": settled, "rounds": rounds, "results": results}


def summary(warm: dict[str, Any]) -> str:
    """One line on a warm-up: how long, and whether the broker's JIT settled."""
    rounds = warm["rounds"]
    if not rounds:
        return f"a burst only, in {warm['seconds']:.0f} s (no rounds: --warmup-seconds 0)"
    last = rounds[-1]["jit_cores"]
    if warm["settled"] is None:
        how = "the broker's JIT not watched (no local broker pid)"
    elif warm["settled"]:
        how = f"until the broker's JIT used {last:.2f} cores (< {warm['settled_cores']:g})"
    else:
        how = f"stopped at the limit with the broker's JIT still at {last} cores"
    return f"{len(rounds)} rounds at {warm['rate']:g}/s in {warm['seconds']:.0f} s, {how}"
