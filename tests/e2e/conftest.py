"""E2E: the four services running as processes, the demo data loaded, a gateway client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from yidi.client.gateway import GatewayClient
from yidi.platform.kafka import ensure_topics
from yidi.platform.settings import Settings
from yidi.refdata.loader import load

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
    async with GatewayClient(system.settings.kafka_bootstrap, namespace=system.settings.namespace) as client:
        yield client


@pytest.fixture(scope="session")
def demo_requests() -> Iterator[dict[str, Path]]:
    yield {p.stem: p for p in sorted((ROOT / "deploy" / "demo" / "requests").glob("*.json"))}
