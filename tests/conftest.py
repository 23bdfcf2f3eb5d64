"""Where the real servers are: the local stack (make test starts it) or testcontainers.

Integration and e2e tests talk to real Kafka, Postgres and Redis. The URLs come from
``YIDI_KAFKA_BOOTSTRAP``, ``YIDI_DATABASE_URL`` and ``YIDI_REDIS_URL``; where they are unset
and a Docker engine answers, testcontainers starts the servers. In CI a missing server is a
failure, never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from loadtest.procs import with_database
from yidi.platform.db import execute_alone
from yidi.platform.kafka import delete_namespace_topics
from yidi.platform.settings import Settings


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no engine
        return False


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    urls = {v: os.environ.get(v, "") for v in ("YIDI_KAFKA_BOOTSTRAP", "YIDI_DATABASE_URL", "YIDI_REDIS_URL")}
    if all(urls.values()):
        yield urls
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.community.redis import RedisContainer

        with contextlib.ExitStack() as stack:
            kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft())
            pg = stack.enter_context(PostgresContainer("postgres:15", driver=None))
            redis = stack.enter_context(RedisContainer("redis:7"))
            yield {
                "YIDI_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server(),
                "YIDI_DATABASE_URL": pg.get_connection_url(),
                "YIDI_REDIS_URL": f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            }
        return
    missing = ", ".join(k for k, v in urls.items() if not v)
    message = f"no real servers: {missing} unset and no Docker engine (run `make test`, which starts them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def settings(servers: dict[str, str]) -> Iterator[Settings]:
    """Settings for this test session: its own topic namespace, Redis prefix and database, so a
    running system is not disturbed and month-end clearing in a test closes no one else's month."""
    tag = uuid.uuid4().hex[:8]
    base = servers["YIDI_DATABASE_URL"]
    database = f"yidi_test_{tag}"
    asyncio.run(execute_alone(base, f'CREATE DATABASE "{database}"'))
    try:
        yield Settings(
            kafka_bootstrap=servers["YIDI_KAFKA_BOOTSTRAP"],
            database_url=with_database(base, database),
            redis_url=servers["YIDI_REDIS_URL"],
            namespace=f"t{tag}.",
            metrics_port=0,
            log_level="WARNING",
        )
    finally:
        asyncio.run(execute_alone(base, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        # The session's topics too: thousands of leftover partitions slow a developer's broker
        # (and every later benchmark on it) down.
        with contextlib.suppress(Exception):
            asyncio.run(delete_namespace_topics(servers["YIDI_KAFKA_BOOTSTRAP"], f"t{tag}."))


def unique(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:12].upper()
