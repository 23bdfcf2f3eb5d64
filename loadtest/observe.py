"""What the bench watches besides the answers: stage metrics, processes' memory and CPU, profiles.

- ``scrape`` reads a service's /metrics; ``stage_deltas`` turns two scrapes into the time (mean,
  p50, p99) and size of a batch per stage (``yidi_stage_batch_seconds``, ``yidi_stage_batch_size``);
  ``histogram_quantiles`` reads any histogram's buckets so (the services' own
  ``yidi_settlement_latency_seconds``).
- ``ProcessSampler`` samples RSS (max) and CPU seconds of named processes with psutil; Postgres is
  its postmaster with every backend, and the CPU of those that exited between samples (what the
  postmaster reaped); Kafka and Redis their pids from ``.local/``.
- ``jit_threads`` reads a JVM's JIT compiler threads' CPU (the broker's, which compiles for minutes
  after it starts) and ``jit_cores`` turns two readings into cores used.
- ``profile`` runs ``py-spy record`` on a pid and ``top_frames`` reads its collapsed stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group("labels") or "")))
        with contextlib.suppress(ValueError):
            out[(m.group("name"), labels)] = float(m.group("value"))
    return out


def scrape(port: int) -> Samples:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return {}


def histogram_quantiles(before: Samples, after: Samples, name: str, by: str,
                        quantiles: tuple[float, ...] = (0.5, 0.95, 0.99),
                        ceiling_ms: float | None = None) -> dict[str, dict[str, float]]:
    """Quantiles, in ms, of what histogram ``name`` observed between two scrapes, per value of the
    label ``by`` (its other labels summed), as Prometheus's histogram_quantile reads buckets:
    linear within the bucket the rank falls in; in the +Inf bucket, the highest finite bound.
    ``ceiling_ms``: what no observation can have exceeded (the services' own latency lies within
    the replay's, whose maximum is exact): the interpolation within a wide bucket is cut there."""
    cumulative: dict[str, Counter[float]] = {}
    for (n, labels), value in after.items():
        if n != f"{name}_bucket":
            continue
        d = dict(labels)
        cumulative.setdefault(d.get(by, ""), Counter())[float(d["le"])] += value - before.get((n, labels), 0.0)
    out: dict[str, dict[str, float]] = {}
    for group, counts in sorted(cumulative.items()):
        edges = sorted(counts)
        total = counts[edges[-1]]
        if total <= 0:
            continue
        found: dict[str, float] = {}
        for q in quantiles:
            rank = q * total
            i = next(i for i, e in enumerate(edges) if counts[e] >= rank)
            lower, below = (edges[i - 1], counts[edges[i - 1]]) if i else (0.0, 0.0)
            if edges[i] == float("inf"):
                value = lower
            else:
                value = lower + (edges[i] - lower) * (rank - below) / max(counts[edges[i]] - below, 1e-12)
            value_ms = value * 1000 if ceiling_ms is None else min(value * 1000, ceiling_ms)
            found[f"p{q * 100:g}"] = round(value_ms, 2)
        out[group] = found
    return out


def stage_deltas(before: Samples, after: Samples) -> dict[str, dict[str, float]]:
    """Per stage: batches, records, mean seconds per batch, mean records per batch, p50 and p99 of
    a batch's time (from its buckets), retries (after − before)."""

    def per_stage(samples: Samples, name: str) -> dict[str, float]:
        return {dict(labels).get("stage", ""): v for (n, labels), v in samples.items() if n == name}

    out: dict[str, dict[str, float]] = {}
    sums_b, sums_a = per_stage(before, "yidi_stage_batch_seconds_sum"), per_stage(after, "yidi_stage_batch_seconds_sum")
    counts_b, counts_a = per_stage(before, "yidi_stage_batch_seconds_count"), per_stage(after, "yidi_stage_batch_seconds_count")
    size_b, size_a = per_stage(before, "yidi_stage_batch_size_sum"), per_stage(after, "yidi_stage_batch_size_sum")
    retries_a = Counter[str]()
    retries_b = Counter[str]()
    for (n, labels), v in after.items():
        if n == "yidi_stage_retries_total":
            retries_a[dict(labels).get("stage", "")] += v
    for (n, labels), v in before.items():
        if n == "yidi_stage_retries_total":
            retries_b[dict(labels).get("stage", "")] += v
    quantiles = histogram_quantiles(before, after, "yidi_stage_batch_seconds", "stage", (0.5, 0.99))
    for stage, count in counts_a.items():
        batches = count - counts_b.get(stage, 0.0)
        if batches <= 0:
            continue
        seconds = sums_a.get(stage, 0.0) - sums_b.get(stage, 0.0)
        records = size_a.get(stage, 0.0) - size_b.get(stage, 0.0)
        out[stage] = {
            "batches": int(batches),
            "records": int(records),
            "mean_batch_ms": round(seconds / batches * 1000, 2),
            "mean_batch_size": round(records / batches, 1),
            "batch_ms_p50": quantiles.get(stage, {}).get("p50"),
            "batch_ms_p99": quantiles.get(stage, {}).get("p99"),
            "ms_per_record": round(seconds / records * 1000, 3) if records else None,
            "busy_s": round(seconds, 2),
            "retries": int(retries_a[stage] - retries_b[stage]),
        }
    return out


def gc_deltas(before: Samples, after: Samples) -> dict[str, Any] | None:
    """Python's garbage collector in one service between two scrapes (yidi_gc_pause_seconds):
    collections and seconds, in all and full (generation 2), and the bucket bound the longest pause
    was under (``longest_pause_over_ms`` instead when it was beyond the last bound). None when the
    process does not expose the histogram (not measured, which is not "no collection")."""
    count: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    buckets: dict[str, dict[float, float]] = {}
    for (n, labels), value in after.items():
        d = dict(labels)
        delta = value - before.get((n, labels), 0.0)
        generation = d.get("generation", "")
        if n == "yidi_gc_pause_seconds_count":
            count[generation] += delta
        elif n == "yidi_gc_pause_seconds_sum":
            seconds[generation] += delta
        elif n == "yidi_gc_pause_seconds_bucket":
            buckets.setdefault(generation, {})[float(d["le"])] = delta
    if not count:
        return None
    # per generation: the smallest bound whose cumulative count holds every pause of the run
    bounds = [min(le for le, v in b.items() if v >= count[g]) for g, b in buckets.items() if count[g] > 0]
    longest = max(bounds, default=None)
    out: dict[str, Any] = {
        "collections": int(sum(count.values())), "seconds": round(sum(seconds.values()), 3),
        "full_collections": int(count["2"]), "full_seconds": round(seconds["2"], 3),
        "longest_pause_under_ms": None if longest is None or longest == float("inf") else round(longest * 1000, 2),
    }
    if longest == float("inf"):
        last = max((le for b in buckets.values() for le in b if le != float("inf")), default=0.0)
        out["longest_pause_over_ms"] = round(last * 1000, 2)
    return out


def infrastructure_pids() -> dict[str, int]:
    """Kafka, Postgres and Redis of the local stack, from their pid files under .local/ (those found)."""
    found: dict[str, int] = {}
    for name, path in (("kafka", LOCAL / "kafka" / "kafka.pid"), ("redis", LOCAL / "redis" / "redis.pid"),
                       ("postgres", LOCAL / "pg" / "data" / "postmaster.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(path.read_text().split()[0])
            if psutil.pid_exists(pid):
                found[name] = pid
    return found


@dataclass
class _Watched:
    root: psutil.Process
    tree: bool
    rss_max: int = 0
    cpu_first: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    # A tree's exited children, whole lives, as the root has reaped them (its children_user and
    # children_system), at the first sample and now; the processes alive at the last sample; the
    # root's direct children among all seen.
    reaped_first: float | None = None
    reaped_last: float = 0.0
    alive: set[int] = field(default_factory=set)
    direct: set[int] = field(default_factory=set)

    def cpu_s(self) -> float:
        """CPU seconds since the first sample. A tree also counts the children that exited meanwhile,
        however short their lives: Postgres' parallel workers live a few ms and a sample every 0.5 s
        would miss nearly all of them. The root reaps its children, so the growth of its reaped time
        is their whole lives; less, for those already there at the start, what they had used by then.
        Exact for a tree of depth 1, as Postgres' is (backends and workers have no children). A deeper
        descendant that exited is counted as sampled, which can count it twice if its parent is reaped
        in the run too."""
        if not self.tree or self.reaped_first is None:
            return sum(self.cpu_last[p] - self.cpu_first.get(p, 0.0) for p in self.cpu_last)
        living = sum(self.cpu_last[p] - self.cpu_first.get(p, 0.0) for p in self.alive if p in self.cpu_last)
        gone = [p for p in self.cpu_last if p not in self.alive]
        before_start = sum(self.cpu_first.get(p, 0.0) for p in gone if p in self.direct)
        deeper = sum(self.cpu_last[p] - self.cpu_first.get(p, 0.0) for p in gone if p not in self.direct)
        return living + (self.reaped_last - self.reaped_first) - before_start + deeper


def _memory(p: psutil.Process) -> int:
    """A tree's member's memory as its share of the pages it maps (PSS): Postgres' backends map the
    same shared buffers, and their RSS summed counted them once per backend (873 MiB for 256 MiB of
    shared_buffers and 16 processes). RSS where the kernel gives no PSS."""
    try:
        return int(p.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(p.memory_info().rss)


def _reaped(root: psutil.Process) -> float | None:
    try:
        t = root.cpu_times()
    except psutil.Error:
        return None
    return t.children_user + t.children_system


def cpu_counters(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """The machine's (steal, total) CPU time in ticks since boot, or None off Linux."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Of the CPU time between two ``cpu_counters``, the share the hypervisor gave other guests
    (``steal``): on a shared VM, the runs with more of it are slower for reasons not in the code."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 4)


# HotSpot's compiler threads, as /proc shows their names (cut to 15 characters).
JIT_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")


def jit_threads(pid: int | None, proc: Path = Path("/proc")) -> dict[int, float] | None:
    """CPU seconds (user + system) of each JIT compiler thread of the JVM ``pid``, by thread id;
    None when they cannot be read (no pid, not Linux, not a HotSpot JVM). By thread: a JVM starts
    and ends compiler threads as its load changes, and one that ended must not lower a sum."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
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
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return found or None


def jit_cores(before: dict[int, float] | None, after: dict[int, float] | None, seconds: float) -> float | None:
    """Cores the JIT compiler threads used between two ``jit_threads`` readings ``seconds`` apart
    (a thread born in between counts whole; what one that ended used after ``before`` is lost)."""
    if before is None or after is None or seconds <= 0:
        return None
    used = sum(max(0.0, cpu - before.get(tid, 0.0)) for tid, cpu in after.items())
    return round(used / seconds, 3)


class ProcessSampler:
    """Samples every ``interval`` seconds; ``tree`` processes count their children (Postgres backends)."""

    def __init__(self, pids: dict[str, int], *, tree: set[str] | frozenset[str] = frozenset({"postgres"}),
                 interval: float = 0.5, jit_pid: int | None = None) -> None:
        self.interval = interval
        self.jit_pid = jit_pid  # a JVM whose JIT compiler is watched too (``broker_jit_cores``)
        self.broker_jit_cores: float | None = None
        self.steal_share: float | None = None
        self._cpu_at_start: tuple[int, int] | None = None
        self._jit_at_start: tuple[dict[int, float] | None, float] = (None, 0.0)
        self.watched: dict[str, _Watched] = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self.watched[name] = _Watched(psutil.Process(pid), name in tree)
        self._task: asyncio.Task[None] | None = None
        self._initial = True
        self._lock = threading.Lock()

    def sample(self) -> None:
        # One at a time: the loop's (in a thread, which a stop's cancel does not end) and the last,
        # at stop.
        with self._lock:
            for w in self.watched.values():
                self._sample(w)
            self._initial = False

    def _sample(self, w: _Watched) -> None:
        # A tree's children are read between two reads of the root's reaped time, again while the
        # two differ: a child reaped in between would be counted twice (sampled alive, then in the
        # reaped time) or not at all (gone when read, not yet in the reaped time).
        for _ in range(5):
            before = _reaped(w.root) if w.tree else None
            try:
                children = w.root.children(recursive=True) if w.tree else []
            except psutil.Error:
                return
            seen: dict[int, tuple[float, int, bool]] = {}  # pid: CPU seconds, RSS, a direct child of the root
            for p in [w.root, *children]:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        seen[p.pid] = (t.user + t.system, _memory(p) if w.tree else p.memory_info().rss,
                                       p is not w.root and p.ppid() == w.root.pid)
                except psutil.Error:
                    continue
            reaped = _reaped(w.root) if w.tree else None
            if reaped == before:
                break
        for pid, (cpu, _, direct) in seen.items():
            # A process there at the start counts from then; one born later, its whole life.
            w.cpu_first.setdefault(pid, cpu if self._initial else 0.0)
            w.cpu_last[pid] = cpu
            if direct:
                w.direct.add(pid)
        w.alive = set(seen)
        if reaped is not None:
            if w.reaped_first is None:
                w.reaped_first = reaped
            w.reaped_last = reaped
        w.rss_max = max(w.rss_max, sum(rss for _, rss, _ in seen.values()))

    async def _run(self) -> None:
        while True:
            # In a thread: reading /proc for every process (a tree's children found by a scan of all
            # of them) took milliseconds of the event loop that reads the answers, and delayed them.
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._cpu_at_start = cpu_counters()
        self._jit_at_start = jit_threads(self.jit_pid), time.monotonic()
        self.sample()
        self._task = asyncio.create_task(self._run())
        self._sampling_since = time.monotonic()

    async def stop(self) -> dict[str, dict[str, float]]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        # The span the CPU figures cover: from the first sample to the last. It is longer than the
        # run's answers (the replay's start and end, its grace for late answers), so "cores busy"
        # divides by it, not by the run's duration (the bench review, session 36).
        self.window_s = time.monotonic() - self._sampling_since
        self.steal_share = steal_share(self._cpu_at_start, cpu_counters())
        jit_before, started = self._jit_at_start
        self.broker_jit_cores = jit_cores(jit_before, jit_threads(self.jit_pid), time.monotonic() - started)
        return {
            name: {
                "pid": w.root.pid,
                "rss_max_mib": round(w.rss_max / 2**20, 1),
                "cpu_s": round(w.cpu_s(), 2),
                **({"processes_seen": len(w.cpu_last)} if w.tree else {}),
            }
            for name, w in self.watched.items()
        }


# Profiles --------------------------------------------------------------------------------------

def py_spy() -> str | None:
    here = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profile(pid: int, out: Path, seconds: float, rate: int = 97) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (collapsed stacks); None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


PACKAGES = (
    ("/pydantic", "pydantic (validate, dump)"), ("/aiokafka/", "aiokafka"), ("/asyncpg/", "asyncpg"),
    ("/redis/", "redis client"), ("/asyncio/", "asyncio event loop and sockets"),
    ("selectors.py", "asyncio event loop and sockets"), ("/yidi/domain/", "yidi.domain (rules, money)"),
    ("/yidi/contracts/", "yidi.contracts"), ("/yidi/platform/", "yidi.platform"), ("/services/", "services"),
    ("/prometheus_client/", "prometheus_client"), ("/faststream/", "faststream"),
)


def package_of(path: str) -> str:
    """py-spy names files relative to their sys.path entry: ``yidi/platform/kafka.py``, ``selectors.py``."""
    rooted = "/" + path
    for needle, name in PACKAGES:
        if needle in rooted:
            return name
    if "/" not in path or path.startswith("<frozen") or "/python3." in path:
        return "stdlib (decimal, datetime, _strptime ...)"
    return "other: " + path.split("/")[0]


def top_frames(collapsed: Path, *, top: int = 10) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: share of samples by package (self time), by leaf frame (self),
    and by frame of the project's own code anywhere on the stack (inclusive; frames on nearly every
    stack, like the event loop's, left out)."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        packages[package_of(_path(frames[-1]))] += n
        for f in {_short(f) for f in frames if _path(f).startswith(("services/", "yidi/"))}:
            anywhere[f] += n
    if not total:
        return {"samples": [], "by_package": [], "self": [], "project_inclusive": []}

    def pick(c: Counter[str], limit: int = top) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in c.most_common() if n / total < 0.9][:limit]

    return {"samples": [("all", float(total))], "by_package": pick(packages, 20), "self": pick(own),
            "project_inclusive": pick(anywhere, 15)}


def _path(frame: str) -> str:
    m = re.match(r".*? \((?P<path>[^:)]*)(?::\d+)?\)$", frame.strip())
    return m.group("path") if m else ""


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (to/module.py)``: lines differ between samples of one function."""
    m = re.match(r"(?P<func>.*?) \((?P<path>[^:)]*)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    path = m.group("path")
    parts = Path(path).parts
    where = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{m.group('func')} ({where})"
