"""The services' database restored from a backup to an earlier point, then ``yidi-recover``: the
ledger, pricing's accumulators and the feeds' copies get back what the backup lacked, and no
request is answered twice (runbook, "Restoring a service's database"). Started on it before the
tool, a service refuses to start.

A system of its own (its database and namespace): restoring the session's database would undo
the other tests' work. The backup and the restore are Postgres's own tools, as an operator runs them.
"""

from __future__ import annotations

import asyncio
import glob
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from loadtest.procs import with_database
from services.pricing.handlers import fund_prefix
from yidi.client.gateway import GatewayClient
from yidi.platform import recover
from yidi.platform.db import execute_alone
from yidi.platform.kafka import delete_namespace_topics, ensure_topics
from yidi.platform.topics import ELIGIBILITY_STAGE_GROUP
from yidi.refdata.loader import load

from tests.e2e.conftest import DEMO
from tests.e2e.requests import we1
from tests.e2e.system import System
from tests.e2e.world import World
from tests.integration.waiting import until

pytestmark = pytest.mark.e2e

SERVICES = ("filing", "eligibility", "pricing", "clearing")


def postgres_tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore`` of the highest Postgres installed (the local stack's server)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    tool = found[-1] if found else shutil.which(name)
    if tool is None:
        pytest.fail(f"{name} is not installed (deploy/local/stack.sh installs Postgres)")
    return tool


async def _answered(gateway: GatewayClient, requests: list[dict]) -> list[dict]:
    return list(await asyncio.wait_for(asyncio.gather(*[await gateway.send(r) for r in requests]), 90))


async def _fund_paid(dsn: str, psn_no: str, prefix: str) -> Decimal:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM pricing.accumulators "
                                   "WHERE psn_no = $1 AND counter = $2", psn_no, prefix + "pooled_paid")
    finally:
        await conn.close()


async def _ledger(dsn: str, msgids: list[str]) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT msgid, hifp_pay::text AS hifp_pay FROM clearing.ledger WHERE msgid = ANY($1)",
                                msgids)
    finally:
        await conn.close()
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r["msgid"], []).append(r["hifp_pay"])
    return found


async def _until_in_ledger(dsn: str, requests: list[dict]) -> None:
    msgids = [r["msgid"] for r in requests]

    async def all_in_ledger() -> bool:
        return len(await _ledger(dsn, msgids)) == len(requests)

    await until(all_in_ledger, timeout=60, poll=0.5)


async def _answered_once_as_in_the_ledger(gateway: GatewayClient, dsn: str, settled: list[dict],
                                          answers: list[dict]) -> None:
    """Every one of ``settled`` in the ledger once, with what its one answer said it paid."""
    await _until_in_ledger(dsn, settled)
    await asyncio.sleep(3.0)  # a second answer would have come by now
    msgids = [r["msgid"] for r in settled]
    assert [gateway.answer_counts[m] for m in msgids] == [1] * len(msgids)
    assert all(a["infcode"] == 0 for a in answers), answers
    assert await _ledger(dsn, msgids) == {
        r["msgid"]: [a["output"]["setlinfo"]["hifp_pay"]] for r, a in zip(settled, answers, strict=True)}


@pytest.fixture
async def own_system(settings, log_dir, tmp_path):
    database = f"yidi_restore_{uuid.uuid4().hex[:8]}"
    await execute_alone(settings.database_url, f'CREATE DATABASE "{database}"')
    own = settings.model_copy(update={"database_url": with_database(settings.database_url, database),
                                      "namespace": f"r{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    logs = log_dir / "restore"
    logs.mkdir(exist_ok=True)
    system = System(own, logs)
    try:
        yield system
    finally:
        system.stop_all()
        await execute_alone(settings.database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await delete_namespace_topics(own.kafka_bootstrap, own.namespace)


async def test_a_database_restored_to_a_backup_is_brought_up_to_date_and_nobody_is_answered_twice(own_system, tmp_path,
                                                                                                   capsys):
    system, s = own_system, own_system.settings
    for service in SERVICES:
        system.start(service)
    await system.wait_ready()
    await load(str(DEMO), bootstrap=s.kafka_bootstrap, namespace=s.namespace, wait=120)
    psn_no, request = we1()["input"]["data"]["psn_no"], we1()
    paid = fund_prefix(request["insuplc_admdvs"], request["input"]["data"]["insutype"])
    async with GatewayClient(s.kafka_bootstrap, namespace=s.namespace) as gateway, GatewayClient(
            s.kafka_bootstrap, namespace=s.namespace, request_topic="clearing.requests", reply_to="clearing.results",
            correlate_by="reqid") as admin:
        before = [we1() for _ in range(3)]
        answers = await _answered(gateway, before)

        backup = tmp_path / "yidi.dump"
        subprocess.run([postgres_tool("pg_dump"), "--format=custom", f"--file={backup}", s.database_url],
                       check=True, capture_output=True, timeout=120)

        # After the backup: settlements, and reference data through every feed and filing's stages.
        after = [we1() for _ in range(4)]
        answers += await _answered(gateway, after)
        world = await World(s).build()
        newcomer = await world.person()
        # And a funding through clearing's other stage, whose group the backup holds nothing of.
        funding = {"type": "fund", "reqid": "C" + uuid.uuid4().hex, "insuplc_admdvs": world.insured,
                   "mdtrtarea_admvs": world.treating, "amount": "250.00"}
        assert (await admin.call(funding))["ok"]
        assert len(await _ledger(s.database_url, [r["msgid"] for r in after])) == 4

        system.stop_all()
        subprocess.run([postgres_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction",
                        f"--dbname={s.database_url}", str(backup)], check=True, capture_output=True, timeout=120)
        assert await _ledger(s.database_url, [r["msgid"] for r in after]) == {}, "the restore took effect"

        # Eligibility's settlement stage keeps nothing in Postgres: no row of it (its cache sweep's
        # transaction recorded one before), and the tool leaves its group as it is.
        conn = await asyncpg.connect(s.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM eligibility.stage_progress WHERE consumer_group = $1",
                                       s.group(ELIGIBILITY_STAGE_GROUP)) == 0
        finally:
            await conn.close()
        # Started on the restored database before the tool, each service refuses to: its groups'
        # offsets say the database held batches it lacks. Nothing is handled.
        for service in SERVICES:
            system.start(service)
        for service in SERVICES:
            assert await system.wait_exit(service, 60) == 2, system.tail(service)
            assert "its database is behind Kafka; the service does not start" in system.tail(service, 80)
        # A feed's commits say what its database holds too: the policy and catalogue after the backup.
        said = system.tail("pricing", 80)
        assert f"{s.group('yidi-pricing-feed-refdata.policies')} {s.topic('refdata.policies')}[0]" in said, said
        capsys.readouterr()
        for service in SERVICES:
            assert await recover.run(service, True, s) == 0
        said = capsys.readouterr().out
        assert f"kept    {s.group(ELIGIBILITY_STAGE_GROUP)} " in said and "this stage keeps nothing" in said
        for service in SERVICES:
            # Eligibility's at INFO: it says when its feeds have applied again what the backup lacked.
            system.start(service, {"YIDI_LOG_LEVEL": "INFO"} if service == "eligibility" else None)
        await system.wait_ready()

        asked = await admin.call({"type": "query_prepayment", "reqid": "C" + uuid.uuid4().hex,
                                  "insuplc_admdvs": world.insured, "mdtrtarea_admvs": world.treating})
        assert asked["data"]["funded"] == "250.00", asked

        later = [we1() for _ in range(2)]
        answers += await _answered(gateway, later)
        # The newcomer's facility, policy, catalogue, insurance and filing came after the backup.
        fresh_answer = await gateway.call(world.request(newcomer, [("T-A", "1", "100.00")]))
        assert fresh_answer["infcode"] == 0, fresh_answer

        await _answered_once_as_in_the_ledger(gateway, s.database_url, before + after + later, answers)
        assert admin.answer_counts[funding["reqid"]] == 1
        # Eligibility answered nobody from the backup's copies: its first batch after the start
        # waited, if need be, until its feeds had caught up (yidi.platform.catchup).
        assert "the feeds have applied again what the restored database lacked" in system.tail("eligibility", 400)
        # Pricing's accumulators count every settlement answered, the four after the backup too.
        assert await _fund_paid(s.database_url, psn_no, paid) == sum(
            Decimal(a["output"]["setlinfo"]["hifp_pay"]) for a in answers)
        assert system.metric("clearing", "yidi_stage_restored_records_total", stage="clearing",
                             outcome="redone") >= len(after)
        assert system.metric("pricing", "yidi_stage_restored_records_total", stage="pricing",
                             outcome="redone") >= len(after)


async def test_a_database_restored_under_the_running_services_stops_them_and_nothing_is_lost(own_system, tmp_path):
    """The runbook says to stop the services before a restore; a restore under them (or a failover to
    a replica that was behind) is found at the next batch on a partition they had recorded (pricing
    stops with status 2, handling nothing on it) or by their check every few seconds (clearing), and
    after yidi-recover the settlement sent meanwhile is answered once and every answered settlement
    is in the ledger."""
    system, s = own_system, own_system.settings
    for service in SERVICES:
        system.start(service)
    await system.wait_ready()
    await load(str(DEMO), bootstrap=s.kafka_bootstrap, namespace=s.namespace, wait=120)
    async with GatewayClient(s.kafka_bootstrap, namespace=s.namespace) as gateway:
        before = [we1() for _ in range(2)]
        answers = await _answered(gateway, before)
        backup = tmp_path / "yidi.dump"
        subprocess.run([postgres_tool("pg_dump"), "--format=custom", f"--file={backup}", s.database_url],
                       check=True, capture_output=True, timeout=120)
        after = [we1() for _ in range(3)]  # one person: the same partitions as the settlements before
        answers += await _answered(gateway, after)

        await _until_in_ledger(s.database_url, after)  # clearing answers as it commits: the ledger may lag
        for attempt in range(3):
            # Under running services, its DROPs may meet a service's statement in a deadlock, which
            # Postgres breaks by failing one of the two (the whole restore, in one transaction): again.
            restored = subprocess.run([postgres_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction",
                                       f"--dbname={s.database_url}", str(backup)], capture_output=True, timeout=120)
            if restored.returncode == 0 or b"deadlock detected" not in restored.stderr or attempt == 2:
                break
        assert restored.returncode == 0, restored.stderr.decode(errors="replace")
        assert await _ledger(s.database_url, [r["msgid"] for r in after]) == {}, "the restore took effect"

        meanwhile = we1()
        answer = await gateway.send(meanwhile)
        assert await system.wait_exit("pricing", 60) == 2, system.tail("pricing")
        said = system.tail("pricing", 80)
        assert "the database went back under the running service" in said, said
        assert f"{s.group('yidi-pricing-eligible')} {s.topic('settlement.eligible')}[" in said, said
        assert not answer.done()
        # Clearing gets nothing more (pricing stopped before it published), and finds it anyway: every
        # few seconds each service checks the rows its stages and feeds hold.
        assert await system.wait_exit("clearing", 60) == 2, system.tail("clearing")
        said = system.tail("clearing", 80)
        assert f"{s.group('yidi-clearing-priced')} {s.topic('settlement.priced')}[" in said, said

        system.stop_all()
        for service in SERVICES:
            assert await recover.run(service, True, s) == 0
        for service in SERVICES:
            system.start(service)
        await system.wait_ready()
        answers.append(await asyncio.wait_for(answer, 90))

        await _answered_once_as_in_the_ledger(gateway, s.database_url, [*before, *after, meanwhile], answers)


async def _months(dsn: str, msgids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return dict(await conn.fetch("SELECT msgid, clr_period FROM clearing.ledger WHERE msgid = ANY($1)", msgids))
    finally:
        await conn.close()


async def test_a_months_run_after_the_backup_and_the_settlements_around_it_land_as_they_did(own_system, tmp_path,
                                                                                               capsys):
    """After a restore, clearing's two stages handle their records again side by side: the month's
    run and the settlements before and after its close. Each settlement lands where it first did
    (the close's cut, which yidi-recover writes from clearing.periods), and the run handled again
    totals the month as its published statement did. Before, the settlements before the close
    landed in the next month if the redone run came first (cleared twice), and those after it in
    the closed month if the settlements came first (never cleared)."""
    system, s = own_system, own_system.settings
    for service in SERVICES:
        system.start(service)
    await system.wait_ready()
    world = await World(s).build()
    person = await world.person()
    month = "202503"

    def bill(day: int) -> dict:
        return world.request(person, [("T-A", "1", "100.00")], when=f"2025-03-{day:02d} 09:00:00")

    async with GatewayClient(s.kafka_bootstrap, namespace=s.namespace) as gateway, GatewayClient(
            s.kafka_bootstrap, namespace=s.namespace, request_topic="clearing.requests", reply_to="clearing.results",
            correlate_by="reqid") as admin:
        first = [bill(10), bill(11)]
        answers = await _answered(gateway, first)
        await _until_in_ledger(s.database_url, first)
        backup = tmp_path / "yidi.dump"
        subprocess.run([postgres_tool("pg_dump"), "--format=custom", f"--file={backup}", s.database_url],
                       check=True, capture_output=True, timeout=120)

        before = [bill(12), bill(13)]  # after the backup, before the close
        answers += await _answered(gateway, before)
        await _until_in_ledger(s.database_url, before)
        run = await admin.call({"type": "run_month", "reqid": "C" + uuid.uuid4().hex, "setlym": month})
        assert run["ok"], run
        (statement,) = [x for x in run["data"]["statements"] if x["insuplc_admdvs"] == world.insured]
        assert statement["settlements"] == 4
        after = [bill(14), bill(15)]  # dated in March, entered after its close: April's
        answers += await _answered(gateway, after)
        await _until_in_ledger(s.database_url, after)
        msgids = [r["msgid"] for r in first + before + after]
        landed = await _months(s.database_url, msgids)
        assert [landed[m] for m in msgids] == [month] * 4 + ["202504"] * 2

        system.stop_all()
        subprocess.run([postgres_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction",
                        f"--dbname={s.database_url}", str(backup)], check=True, capture_output=True, timeout=120)
        capsys.readouterr()
        for service in SERVICES:
            assert await recover.run(service, True, s) == 0
        said = capsys.readouterr().out
        assert f"closed  month {month}, closed at " in said, said
        for service in SERVICES:
            system.start(service)
        await system.wait_ready()

        async def totalled() -> bool:
            conn = await asyncpg.connect(s.database_url)
            try:
                return bool(await conn.fetchval("SELECT totalled_at IS NOT NULL FROM clearing.periods WHERE setlym = $1",
                                                month))
            finally:
                await conn.close()

        await until(totalled, timeout=90, poll=0.5)
        await _until_in_ledger(s.database_url, first + before + after)
        landed = await _months(s.database_url, msgids)
        assert [landed[m] for m in msgids] == [month] * 4 + ["202504"] * 2
        conn = await asyncpg.connect(s.database_url)
        try:
            redone = await conn.fetchval("SELECT settlements FROM clearing.statements WHERE setlym = $1 "
                                         "AND insuplc_admdvs = $2 AND mdtrtarea_admvs = $3",
                                         month, world.insured, world.treating)
        finally:
            await conn.close()
        assert redone == statement["settlements"]
        await _answered_once_as_in_the_ledger(gateway, s.database_url, first + before + after, answers)
