"""The bench's warm-up: the broker's JIT CPU read from /proc, and when the rounds stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest import warmup
from loadtest.warmup import jit_cores, jit_cpu_seconds, summary, warm_up

TICK = os.sysconf("SC_CLK_TCK")


def _thread(proc: Path, pid: int, tid: int, comm: str, utime: int, stime: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(comm + "\n")
    # /proc/<pid>/task/<tid>/stat: pid (comm) state ppid ... utime (14th) stime (15th) ...; a name
    # may hold spaces and parentheses, which is why the fields are read after the last ')'.
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", str(utime), str(stime), "0", "0"]
    (task / "stat").write_text(f"{tid} ({comm}) " + " ".join(fields) + "\n")


def test_jit_cpu_is_the_compiler_threads_user_and_system_time(tmp_path):
    _thread(tmp_path, 7, 7, "java", 5000, 300)
    _thread(tmp_path, 7, 8, "C2 CompilerThre", 2 * TICK, 1 * TICK)
    _thread(tmp_path, 7, 9, "C1 CompilerThre", TICK, 0)
    _thread(tmp_path, 7, 10, "data-plane-kafk", 900, 100)
    _thread(tmp_path, 7, 11, "odd) name (x)", 800, 0)
    assert jit_cpu_seconds(7, proc=tmp_path) == pytest.approx(4.0)


def test_jit_cpu_is_unknown_without_a_jvm_to_read(tmp_path):
    _thread(tmp_path, 7, 7, "redis-server", 100, 0)
    assert jit_cpu_seconds(7, proc=tmp_path) is None  # no compiler threads: not a HotSpot JVM
    assert jit_cpu_seconds(8, proc=tmp_path) is None  # no such process
    assert jit_cpu_seconds(None, proc=tmp_path) is None


def test_jit_cores_over_an_interval():
    assert jit_cores(10.0, 13.0, 10.0) == 0.3
    assert jit_cores(None, 13.0, 10.0) is None
    assert jit_cores(10.0, 13.0, 0.0) is None


class _Fake:
    """replay_file and the JIT reading replaced: each round's JIT use is scripted."""

    def __init__(self, monkeypatch, per_round: list[float | None]) -> None:
        self.per_round, self.jit, self.replayed = list(per_round), 0.0, []
        self.current: float | None = 0.0
        monkeypatch.setattr(warmup, "replay_file", self.replay)
        monkeypatch.setattr(warmup, "jit_cpu_seconds", lambda pid: None if pid is None else self.current)

    async def replay(self, path, **kwargs):
        self.replayed.append((path, kwargs["pace"]))
        if path.name != "burst":
            used = self.per_round.pop(0)
            self.current = None if used is None else (self.current or 0.0) + used
        return {"sends": 10, "latency_ms": {"p99": 12.0}, "exactly_once": {"ok": True, "summary": "ok"}}


async def test_rounds_go_on_until_the_jit_settles(monkeypatch, tmp_path):
    # 0 s per round on the monotonic clock is not assumed: the JIT use per round is divided by
    # the round's real duration, so the scripted CPU seconds are large against it.
    monkeypatch.setattr(warmup.time, "monotonic", iter(range(0, 10_000, 5)).__next__)
    fake = _Fake(monkeypatch, [30.0, 20.0, 0.2, 99.0])
    warm = await warm_up(Path("burst"), lambda k: Path(f"round{k}"), bootstrap="b", namespace="n", rate=100,
                         broker_pid=42)
    assert [p.name for p, _ in fake.replayed] == ["burst", "round0", "round1", "round2"]
    assert fake.replayed[0][1].rate is None and fake.replayed[1][1].rate == 100
    assert [r["jit_cores"] for r in warm["rounds"]] == [6.0, 4.0, 0.04]
    assert warm["settled"] is True and len(warm["results"]) == 4
    assert summary(warm).startswith("3 rounds at 100/s in ") and "JIT used 0.04 cores (< 0.1)" in summary(warm)


async def test_rounds_stop_at_the_limit_when_the_jit_does_not_settle(monkeypatch):
    monkeypatch.setattr(warmup.time, "monotonic", iter(range(0, 10_000, 5)).__next__)
    fake = _Fake(monkeypatch, [30.0] * 50)
    warm = await warm_up(Path("burst"), lambda k: Path(f"round{k}"), bootstrap="b", namespace="n", rate=100,
                         broker_pid=42, max_seconds=60)
    assert warm["settled"] is False and 1 <= len(warm["rounds"]) < 10
    assert len(fake.replayed) == len(warm["rounds"]) + 1
    assert "stopped at the limit with the broker's JIT still at 6.0 cores" in summary(warm)


async def test_without_a_broker_pid_one_round_and_the_jit_not_watched(monkeypatch):
    fake = _Fake(monkeypatch, [30.0, 30.0])
    warm = await warm_up(Path("burst"), lambda k: Path(f"round{k}"), bootstrap="b", namespace="n", rate=100,
                         broker_pid=None)
    assert len(fake.replayed) == 2 and warm["settled"] is None
    assert warm["rounds"][0]["jit_cores"] is None
    assert "JIT not watched" in summary(warm)


async def test_no_rounds_when_the_limit_is_zero(monkeypatch):
    fake = _Fake(monkeypatch, [])
    warm = await warm_up(Path("burst"), lambda k: Path(f"round{k}"), bootstrap="b", namespace="n", rate=100,
                         broker_pid=42, max_seconds=0)
    assert [p.name for p, _ in fake.replayed] == ["burst"] and warm["rounds"] == []
    assert summary(warm).startswith("a burst only")
