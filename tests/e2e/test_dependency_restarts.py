"""Postgres or Kafka restarted while settlements flow: every request is answered exactly once,
every settled one is in the ledger once, and no service stops (ops restart a server and expect
the platform to ride it out: the stages retry their batch until the server is back).

Each test stops and starts a server of the local stack (deploy/local/stack.sh), as an incident
or a maintenance window would."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.e2e.requests import we1

pytestmark = pytest.mark.e2e

SERVICES = ("filing", "eligibility", "pricing", "clearing")


async def _ledger_rows(settings, msgids: list[str]) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM clearing.ledger WHERE msgid = ANY($1::text[])", msgids)
    finally:
        await conn.close()


async def _answered_once(system, gateway, sent: list[tuple[dict, asyncio.Future]]) -> None:
    waiting = {f for _, f in sent}
    for _ in range(120):  # at most 2 minutes; a service that stopped fails the test at once
        _, waiting = await asyncio.wait(waiting, timeout=1.0)
        if not waiting:
            break
        _all_running(system)
    assert not waiting, f"{len(waiting)} of {len(sent)} requests unanswered after 120 s\n" + "\n".join(
        f"--- {s}\n{system.tail(s, 15)}" for s in SERVICES)
    answers = [f.result() for _, f in sent]
    await asyncio.sleep(2.0)  # a duplicate answer would arrive by now
    msgids = [r["msgid"] for r, _ in sent]
    assert [gateway.answer_counts[m] for m in msgids] == [1] * len(sent)
    refused = [(a["err_code"], a["err_msg"][:120]) for a in answers if a["infcode"] != 0]
    assert refused == []
    assert [a["output"]["setlinfo"]["hifp_pay"] for a in answers] == ["48.89"] * len(sent)
    assert await _ledger_rows(system.settings, msgids) == len(sent)


def _all_running(system) -> None:
    stopped = {s: system.procs[s].poll() for s in SERVICES if system.procs[s].poll() is not None}
    assert not stopped, f"services stopped (exit codes) {stopped}\n" + "\n".join(
        f"--- {s}\n{system.tail(s, 30)}" for s in stopped)


async def test_postgres_restarted_while_settlements_flow(system, gateway, local_stack):
    # Postgres's fast shutdown ends every connection; each stage's pooled connections are then
    # dead, and the first use of each fails in one of several ways (asyncpg's InternalClientError
    # among them, which stopped the stage until it was taken as transient).
    sent: list[tuple[dict, asyncio.Future]] = []

    async def send(n: int) -> None:
        for _ in range(n):
            request = we1()
            sent.append((request, await gateway.send(request)))
            await asyncio.sleep(0.05)

    await send(10)
    flowing = asyncio.create_task(send(60))  # about 3 s of requests, across the restart
    await asyncio.sleep(0.3)
    local_stack("stop", "postgres")
    await asyncio.sleep(1.0)
    local_stack("start", "postgres")
    await flowing
    await _answered_once(system, gateway, sent)
    _all_running(system)
    await send(5)  # and the platform answers as before
    await _answered_once(system, gateway, sent)
    _all_running(system)


async def test_kafka_restarted_while_settlements_flow(system, gateway, local_stack):
    # The stages are handling requests as the broker stops: their transactions are cut off
    # mid-way, their producers look for the transaction coordinator while the broker goes (aiokafka
    # took the connection closing under that look-up as final: the stage stopped its process), and
    # the coordinator reloads the transactions as the broker starts again. The gateway keeps
    # sending through the restart; its publishes wait for the broker, and its producer is
    # idempotent, so none is written twice.
    sent: list[tuple[dict, asyncio.Future]] = []
    sending = True

    async def send() -> None:
        while sending:
            request = we1()
            sent.append((request, await gateway.send(request)))
            await asyncio.sleep(0.05)

    flowing = asyncio.create_task(send())
    await asyncio.sleep(1.0)
    local_stack("stop", "kafka")
    await asyncio.sleep(1.0)
    local_stack("start", "kafka")
    await asyncio.sleep(1.0)
    sending = False
    await flowing
    assert len(sent) > 20
    await _answered_once(system, gateway, sent)
    _all_running(system)
