"""Eligibility's stale marks, with fakes: a mark that cannot be made holds the change's answer back,
and the sweep each second neither spins nor floods the log while Redis or Postgres is away."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.eligibility import subjects as subjects_module
from services.eligibility.subjects import SWEEP_BATCH, Subjects, sweep_every
from yidi.platform.cache import VersionedCache
from yidi.platform.errors import TransientError


class _PostgresAway:
    async def mark_stale(self, psn_nos: list[str]) -> None:
        raise TransientError("postgres is away")


async def test_a_mark_that_cannot_be_made_fails_the_change_so_it_is_not_answered(monkeypatch):
    monkeypatch.setattr(subjects_module, "FORGET_WITHIN_S", 0.2)
    cache = VersionedCache("redis://127.0.0.1:1/0", ttl_seconds=60, prefix="t:")  # nothing listens there
    try:
        with pytest.raises(TransientError):  # the stage reads the batch again; nothing is answered
            await Subjects(_PostgresAway(), cache).remember_many({"P1": (2, {"filings": []})}, changed=True)
    finally:
        await cache.close()


class _Sweeps:
    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes

    async def sweep(self) -> tuple[int, bool]:
        if not self.outcomes:
            raise asyncio.CancelledError
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_the_sweeps_each_second_go_on_at_once_after_a_full_batch_and_log_changes_only(monkeypatch, caplog):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(subjects_module.asyncio, "sleep", sleep)
    outcomes = [(SWEEP_BATCH, False), (3, False), (0, True), (0, True), (0, True),
                TransientError("postgres"), TransientError("postgres"), (0, False), (0, False)]
    with caplog.at_level(logging.INFO, logger="yidi.eligibility.cache"), pytest.raises(asyncio.CancelledError):
        await sweep_every(_Sweeps(outcomes), 1.0)
    assert slept == [1.0] * 8  # not after the full batch; after each of the others
    messages = [r.getMessage() for r in caplog.records if "not swept" in r.getMessage() or "again" in r.getMessage()]
    assert len(messages) == 3, messages  # Redis unreachable, Postgres failed, swept again: once each
    assert "Redis unreachable" in messages[0] and "Postgres failed" in messages[1] and "swept again" in messages[2]


@pytest.mark.parametrize("argv", [["--help"], ["--dry-run"], ["now"]])
def test_the_shell_sweep_sweeps_nothing_when_asked_for_help_or_given_an_option_it_lacks(monkeypatch, argv):
    # It ignored its arguments: `--help` swept the cache of whatever YIDI_* pointed at.
    from services.eligibility import sweep

    def refuse(settings):  # pragma: no cover - the test fails if it runs
        raise AssertionError("swept")

    monkeypatch.setattr(sweep, "sweep", refuse)
    with pytest.raises(SystemExit) as exited:
        sweep.main(argv)
    assert exited.value.code == (0 if argv == ["--help"] else 2)
