"""The bench's warm-up: the broker's JIT CPU read from /proc, and when the rounds stop."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtest import warmup
from loadtest.bench import verdicts
from loadtest.observe import jit_cores, jit_threads
from loadtest.warmup import summary, warm_up

TICK = os.sysconf("SC_CLK_TCK")


def _thread(proc: Path, pid: int, tid: int, comm: str, utime: int, stime: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(comm + "\n")
    # /proc/<pid>/task/<tid>/stat: pid (comm) state ppid ... utime (14th) stime (15th) ...; a name
    # may hold spaces and parentheses, which is why the fields are read after the last ')'.
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "0", "0", "0", "0", str(utime), str(stime), "0", "0"]
    (task / "stat").write_text(f"{tid} ({comm}) " + " ".join(fields) + "\n")


def test_jit_cpu_is_each_compiler_threads_user_and_system_time(tmp_path):
    _thread(tmp_path, 7, 7, "java", 5000, 300)
    _thread(tmp_path, 7, 8, "C2 CompilerThre", 2 * TICK, 1 * TICK)
    _thread(tmp_path, 7, 9, "C1 CompilerThre", TICK, 0)
    _thread(tmp_path, 7, 10, "data-plane-kafk", 900, 100)
    assert jit_threads(7, proc=tmp_path) == {8: pytest.approx(3.0), 9: pytest.approx(1.0)}


def test_a_compiler_thread_named_with_parentheses_is_read_after_the_last_one(tmp_path):
    # A name holding ") (" would shift the fields if they were read after the first parenthesis.
    _thread(tmp_path, 7, 8, "C2 CompilerThre", 4 * TICK, 0)
    (tmp_path / "7" / "task" / "8" / "stat").write_text(
        "8 (C2 Compi) (x) S 1 1 1 0 -1 4194560 0 0 0 0 " + f"{4 * TICK} {TICK} 0 0\n")
    assert jit_threads(7, proc=tmp_path) == {8: pytest.approx(5.0)}


def test_jit_cpu_is_unknown_without_a_jvm_to_read(tmp_path):
    _thread(tmp_path, 7, 7, "redis-server", 100, 0)
    assert jit_threads(7, proc=tmp_path) is None  # no compiler threads: not a HotSpot JVM
    assert jit_threads(8, proc=tmp_path) is None  # no such process
    assert jit_threads(None, proc=tmp_path) is None


def test_jit_cores_by_thread():
    assert jit_cores({8: 10.0, 9: 1.0}, {8: 12.0, 9: 2.0}, 10.0) == 0.3
    # A thread born since counts whole; one that ended does not lower the sum.
    assert jit_cores({8: 10.0, 9: 50.0}, {8: 11.0, 12: 2.0}, 10.0) == 0.3
    assert jit_cores(None, {8: 13.0}, 10.0) is None
    assert jit_cores({8: 10.0}, {8: 13.0}, 0.0) is None


class _Fake:
    """replay_file, the clock and the JIT reading replaced: each round takes 10 s and uses the
    scripted JIT CPU seconds (None: the JIT cannot be read)."""

    def __init__(self, monkeypatch, per_round: list[float | None]) -> None:
        self.per_round, self.now, self.replayed = list(per_round), 0.0, []
        self.jit: dict[int, float] | None = {8: 0.0}
        monkeypatch.setattr(warmup, "replay_file", self.replay)
        monkeypatch.setattr(warmup, "jit_threads", lambda pid: None if pid is None else self.jit)
        monkeypatch.setattr(warmup, "time", SimpleNamespace(monotonic=lambda: self.now))

    async def replay(self, path, **kwargs):
        self.replayed.append((path.name, kwargs["pace"].rate))
        if path.name == "burst":
            self.now += 2.0
        else:
            self.now += 10.0
            used = self.per_round.pop(0)
            self.jit = None if used is None else {8: self.jit[8] + used}
        return {"sends": 10, "latency_ms": {"p99": 12.0}, "exactly_once": {"ok": True, "summary": "ok"}}


def _warm(**kwargs):
    return warm_up(Path("burst"), lambda k: Path(f"round{k}"), bootstrap="b", namespace="n", rate=100, **kwargs)


async def test_rounds_go_on_until_the_jit_settles(monkeypatch):
    fake = _Fake(monkeypatch, [6.0, 4.0, 0.4, 9.0])
    warm = await _warm(broker_pid=42)
    assert fake.replayed == [("burst", None), ("round0", 100), ("round1", 100), ("round2", 100)]
    assert [r["jit_cores"] for r in warm["rounds"]] == [0.6, 0.4, 0.04]
    assert warm["stopped"] == "settled" and warm["seconds"] == 32.0 and len(warm["results"]) == 4
    assert summary(warm) == "3 rounds at 100/s in 32 s, until the broker's JIT used 0.04 cores (< 0.1)"


async def test_rounds_stop_at_the_limit_when_the_jit_does_not_settle(monkeypatch):
    fake = _Fake(monkeypatch, [3.0] * 50)
    warm = await _warm(broker_pid=42, max_seconds=60)
    # The burst takes 2 s and each round 10: rounds start at 2, 12, ..., 52 s; none at 62.
    assert len(warm["rounds"]) == 6 and len(fake.replayed) == 7
    assert warm["stopped"] == "limit"
    assert summary(warm) == "6 rounds at 100/s in 62 s, stopped at the limit (60 s) with the broker's JIT still at 0.30 cores"


async def test_without_a_broker_to_watch_one_round(monkeypatch):
    fake = _Fake(monkeypatch, [3.0, 3.0])
    warm = await _warm(broker_pid=None)
    assert len(fake.replayed) == 2 and warm["stopped"] == "not watched"
    assert warm["rounds"][0]["jit_cores"] is None
    assert "the broker's JIT not watched" in summary(warm)


async def test_no_rounds_when_the_limit_is_zero(monkeypatch):
    fake = _Fake(monkeypatch, [])
    warm = await _warm(broker_pid=42, max_seconds=0)
    assert fake.replayed == [("burst", None)] and warm["rounds"] == []
    assert summary(warm) == "a burst only, in 2 s (limit 0 s)"


def _result(ok: bool, sends: int, ledger: bool | None = None) -> dict:
    r = {"sends": sends, "exactly_once": {"ok": ok, "summary": f"exactly once: {sends} sends" if ok else f"{sends} sends, 1 missing"}}
    if ledger is not None:
        r["ledger"] = {"ok": ledger, "summary": "ledger = answers" if ledger else "ledger differs"}
    return r


def test_several_replays_checks_sum_up_and_a_failed_one_is_quoted():
    assert verdicts([_result(True, 300, True), _result(True, 1000, True)]) == (
        True, "2 replays, 1300 sends, each exactly once and ledger = answers")
    assert verdicts([_result(True, 300), _result(True, 1000)]) == (True, "2 replays, 1300 sends, each exactly once")
    ok, text = verdicts([_result(True, 300, True), _result(False, 1000, True), _result(True, 5, False)])
    assert not ok and text == "1000 sends, 1 missing; ledger = answers; exactly once: 5 sends; ledger differs"
    assert verdicts([_result(True, 300, True)]) == (True, "exactly once: 300 sends; ledger = answers")
