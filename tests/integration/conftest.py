"""Fixtures of the integration tests."""

from __future__ import annotations

import os
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from yidi.platform import txnv2


async def _cluster_has_v2(bootstrap: str) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"probe-{uuid.uuid4().hex}",
                                enable_idempotence=True, acks="all")
    await producer.start()
    try:
        return await txnv2.enable(producer, "auto") == 2
    finally:
        await producer.stop()


@pytest.fixture
async def v2_cluster(settings) -> str:
    """The broker, when its cluster has finalized transaction.version >= 2 (Kafka 4.0+; the local
    stack's does). A broker without it is a failure under CI."""
    if not await _cluster_has_v2(settings.kafka_bootstrap):
        message = "the broker's cluster has not finalized transaction.version >= 2"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return settings.kafka_bootstrap


async def _repository(settings, schema: str, repository: type):
    """A service's schema on the real Postgres, and its repository over a small pool of its own."""
    from yidi.platform.db import create_pool, migrate

    pool = await create_pool(settings.database_url, size=3)
    try:
        await migrate(pool, schema, f"services.{schema}.migrations")
        yield repository(pool)
    finally:
        await pool.close()


@pytest.fixture
async def clearing_repo(settings):
    from services.clearing.repository import ClearingRepository

    async for repo in _repository(settings, "clearing", ClearingRepository):
        yield repo


async def _of_its_own(settings, schema: str, repository: type):
    """A service's schema in a database of the test's own: (its settings, its repository)."""
    from loadtest.procs import with_database
    from yidi.platform.db import execute_alone

    name = f"{settings.database_url.rsplit('/', 1)[1].split('?')[0]}_{uuid.uuid4().hex[:8]}"
    await execute_alone(settings.database_url, f'CREATE DATABASE "{name}"')
    try:
        own = settings.model_copy(update={"database_url": with_database(settings.database_url, name)})
        async for repo in _repository(own, schema, repository):
            yield own, repo
    finally:
        await execute_alone(settings.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def clearing_of_its_own(settings):
    """Clearing's schema in a database of the test's own: (its settings, its repository).

    Months are cleared in order and what is dated at or before the latest month closed lands
    after it, so a test that runs months needs a ledger and periods no other test moves (a
    database per test: about 0.3 s each)."""
    from services.clearing.repository import ClearingRepository

    async for own in _of_its_own(settings, "clearing", ClearingRepository):
        yield own


@pytest.fixture
async def eligibility_of_its_own(settings):
    """Eligibility's schema in a database of the test's own: (its settings, its repository). The
    e2e tests' eligibility, still running in the session's database, sweeps its stale marks."""
    from services.eligibility.repository import EligibilityRepository

    async for own in _of_its_own(settings, "eligibility", EligibilityRepository):
        yield own


@pytest.fixture
async def filing_repo(settings):
    from services.filing.repository import FilingRepository

    async for repo in _repository(settings, "filing", FilingRepository):
        yield repo


@pytest.fixture
async def filing_of_its_own(settings):
    """Filing's schema in a database of the test's own: (its settings, its repository), for a test
    that counts over every filing (the pending ones past R21's limit)."""
    from services.filing.repository import FilingRepository

    async for own in _of_its_own(settings, "filing", FilingRepository):
        yield own
