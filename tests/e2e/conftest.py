"""E2E: the four services running as processes, the demo data loaded, a gateway client."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from yidi.client.gateway import GatewayClient
from yidi.platform.kafka import ensure_topics
from yidi.platform.settings import Settings
from yidi.refdata.loader import load

from tests.answer_schemas import AnswerSchemas
from tests.e2e.system import ROOT, System

DEMO = ROOT / "deploy" / "demo" / "refdata.json"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = ROOT / ".local" / "log" / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
async def system(settings: Settings, log_dir: Path) -> AsyncIterator[System]:
    await ensure_topics(settings)
    sys_ = System(settings, log_dir)
    for service in ("filing", "eligibility", "pricing", "clearing"):
        sys_.start(service)
    try:
        await sys_.wait_ready()
        await load(str(DEMO), bootstrap=settings.kafka_bootstrap, namespace=settings.namespace, wait=120)
        yield sys_
    finally:
        sys_.stop_all()


@pytest.fixture
async def gateway(system: System) -> AsyncIterator[GatewayClient]:
    schemas = AnswerSchemas("ResponseEnvelope")
    async with GatewayClient(system.settings.kafka_bootstrap, namespace=system.settings.namespace) as client:
        client.on_answer = schemas
        yield client
    schemas.check()


async def _requests_client(system: System, service: str, schema: str) -> AsyncIterator[GatewayClient]:
    """A client for ``<service>.requests``, answered on ``<service>.results``, correlated by reqid."""
    schemas = AnswerSchemas(schema)
    async with GatewayClient(
        system.settings.kafka_bootstrap, namespace=system.settings.namespace, request_topic=f"{service}.requests",
        reply_to=f"{service}.results", correlate_by="reqid",
    ) as client:
        client.on_answer = schemas
        yield client
    schemas.check()


@pytest.fixture
async def filings(system: System) -> AsyncIterator[GatewayClient]:
    async for client in _requests_client(system, "filing", "FilingResult"):
        yield client


@pytest.fixture
async def clearing(system: System) -> AsyncIterator[GatewayClient]:
    async for client in _requests_client(system, "clearing", "ClearingResult"):
        yield client


@pytest.fixture
def local_stack() -> Iterator[Callable[..., None]]:
    """Stop and start a server of the local stack, as an ops incident would."""
    script = ROOT / "deploy" / "local" / "stack.sh"
    if os.environ.get("YIDI_REDIS_URL", "").endswith(":16379/0") and script.exists():
        def run(action: str, part: str) -> None:
            subprocess.run([str(script), action, part], check=True, capture_output=True, timeout=120)

        yield run
        run("start", "all")
        return
    if os.environ.get("CI"):
        pytest.fail("CI runs on the local stack, which these tests stop and start")
    pytest.skip("not on the local stack started by deploy/local/stack.sh")


@pytest.fixture(scope="session")
def demo_requests() -> Iterator[dict[str, Path]]:
    yield {p.stem: p for p in sorted((ROOT / "deploy" / "demo" / "requests").glob("*.json"))}
