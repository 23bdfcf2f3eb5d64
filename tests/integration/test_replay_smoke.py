"""A smoke-sized replay: a small generated day through the four services, every answer and the ledger checked."""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest

from loadtest.generator import DayOptions, day_lines, write_refdata
from loadtest.replay import Pace, Replay, sweep
from loadtest.observe import infrastructure_pids, jit_threads
from loadtest.world import World
from yidi.platform.kafka import ensure_topics
from yidi.refdata.loader import load

from tests.e2e.system import ROOT, SERVICES, System

pytestmark = pytest.mark.e2e


async def test_a_small_day_is_answered_exactly_once_and_the_ledger_matches_the_answers(settings, tmp_path):
    # A namespace of its own: the e2e suite's services may be running in the session's namespace.
    s = settings.model_copy(update={"namespace": f"{settings.namespace}replay."})
    log_dir = ROOT / ".local" / "log" / "e2e"
    log_dir.mkdir(parents=True, exist_ok=True)
    await ensure_topics(s)
    system = System(s, log_dir)
    for service in SERVICES:
        system.start(service)
    try:
        await system.wait_ready(timeout=45)
        world = World(persons=60, seed=5, run_id="S" + uuid.uuid4().hex[:9].upper(), home_usage_share=0.3)
        write_refdata(world, tmp_path / "refdata.json")
        await load(str(tmp_path / "refdata.json"), bootstrap=s.kafka_bootstrap, namespace=s.namespace, wait=30)
        options = DayOptions(settlements=180, seed=5, pre_settlements=0.05, cancellations=0.05, duplicates=0.05,
                             malformed=0.05, queries=0.05)
        replay = Replay(s.kafka_bootstrap, s.namespace, Pace(window=500), progress=False, drain_timeout=20, grace=1.0,
                        judge_malformed=True)
        result = await replay.run(day_lines(world, options))
        ledger = await replay.ledger_check(s.database_url)
        # Two rows' amounts swapped keep the totals: the row by row comparison must see it.
        two = sorted((m for m, v in replay.settled.items() if v.setl_id not in replay.cancelled_setl_ids),
                     key=lambda m: replay.settled[m].fund_pay_sumamt)
        low, high = two[0], two[-1]
        conn = await asyncpg.connect(s.database_url)
        try:
            async with conn.transaction():
                swap = """UPDATE clearing.ledger l SET fund_pay_sumamt = o.fund_pay_sumamt FROM clearing.ledger o
                          WHERE l.msgid = $1 AND o.msgid = $2"""
                await conn.execute("CREATE TEMP TABLE kept AS SELECT msgid, fund_pay_sumamt FROM clearing.ledger "
                                   "WHERE msgid = ANY($1::text[])", [low, high])
                await conn.execute(swap, low, high)
                await conn.execute("UPDATE clearing.ledger l SET fund_pay_sumamt = k.fund_pay_sumamt FROM kept k "
                                   "WHERE l.msgid = $1 AND k.msgid = $2", high, low)
        finally:
            await conn.close()
        swapped = await replay.ledger_check(s.database_url)
        # A bill's total unlike its answer's, every amount paid as answered: the same (a review, session 46).
        conn = await asyncpg.connect(s.database_url)
        try:
            await conn.execute("UPDATE clearing.ledger SET medfee_sumamt = medfee_sumamt + 1 WHERE msgid = $1",
                               two[len(two) // 2])  # neither of the two swapped
        finally:
            await conn.close()
        billed = await replay.ledger_check(s.database_url)
    finally:
        system.stop_all()
    swept = await sweep(s.kafka_bootstrap, s.namespace)  # every answer, once nothing can answer any more

    assert result["exactly_once"]["ok"], result["exactly_once"]["summary"]
    assert swept.ok and swept.sends == result["sends"], swept.summary()
    assert ledger.ok, ledger.summary()
    assert replay.settled[low].fund_pay_sumamt != replay.settled[high].fund_pay_sumamt
    assert swapped.answers == swapped.ledger and swapped.mismatched == 2 and not swapped.ok, swapped.summary()
    assert billed.mismatched == 3 and not billed.ok, billed.summary()
    assert 190 <= result["sends"] <= 260
    kinds, errors = result["kinds_sent"], result["err_codes"]
    assert kinds["duplicate"] and kinds["pre-settlement"] and (kinds.get("malformed-json", 0) + kinds.get("invalid-sum", 0))
    assert kinds["year-so-far"] and "INTERNAL_ERROR" not in errors, (kinds, errors)  # 5206 answered, home usage read
    assert result["cancellations"]["sent"] >= 1
    assert errors["INVALID_INPUT"] >= 1 and errors["ok"] > 150
    # Each malformed request refused INVALID_INPUT, and none has a ledger row (the ledger's check).
    assert replay.malformed and result["exactly_once"]["not_refused"] == 0
    assert ledger.answers.count == len(replay.settled) - result["cancellations"]["sent"]



def test_the_brokers_jit_compiler_time_is_read_from_its_threads():
    # The warm-up watches the local stack's broker, found as the bench finds it (its pid file). A
    # broker in a container is not on this machine's /proc: nothing to read there (CI: a failure).
    broker = infrastructure_pids().get("kafka")
    if broker is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs on the local stack, whose broker the warm-up watches")
        pytest.skip("the broker is not the local stack's: its JVM threads are not in this machine's /proc")
    threads = jit_threads(broker)
    assert threads, "a HotSpot broker has JIT compiler threads"
    assert sum(threads.values()) > 0  # it has compiled since it started
