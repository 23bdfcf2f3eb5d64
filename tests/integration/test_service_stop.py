"""A service told to stop (SIGTERM) exits within a supervisor's usual grace period (30 s) with its
Kafka broker frozen: its stages and its feeds each give their Kafka clients a bounded time to say
goodbye, and leave the rest to the broker's timeouts."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from loadtest.procs import Processes
from yidi.platform.settings import Settings

from tests.integration import strict_broker

pytestmark = pytest.mark.integration


async def test_services_with_feeds_stop_in_seconds_when_kafka_is_frozen(settings, tmp_path):
    # Pricing and eligibility read reference feeds (FastStream subscribers) beside their stages. A
    # feed's consumer, leaving its group, waited out its request timeout: both took 44 s to exit.
    if why := strict_broker.available():
        pytest.fail(why)  # the local stack's jars are there wherever these tests run
    services = ("eligibility", "pricing")
    with strict_broker.strict_broker(tmp_path) as bootstrap:
        procs = Processes(Settings(kafka_bootstrap=bootstrap, database_url=settings.database_url,
                                   redis_url=settings.redis_url, namespace=f"{settings.namespace}stop."),
                          tmp_path / "logs")
        try:
            for service in services:
                procs.start_service(service)
            await procs.wait_ready(*services, timeout=90)
            with strict_broker.frozen(bootstrap):
                started = time.monotonic()
                for service in services:
                    procs.procs[service].send_signal(signal.SIGTERM)
                took = {}
                while len(took) < len(services) and time.monotonic() - started < 60:
                    for service in services:
                        if service not in took and procs.procs[service].poll() is not None:
                            took[service] = time.monotonic() - started
                    await asyncio.sleep(0.1)
            assert set(took) == set(services), f"still running after 60 s: {set(services) - set(took)}"
            assert all(seconds < 20 for seconds in took.values()), took
            assert [procs.procs[s].returncode for s in services] == [0, 0]
            logs = "".join((tmp_path / "logs" / f"{s}.log").read_text() for s in services)
            assert "the feed of" in logs and "its Kafka consumer did not stop within" in logs  # the feeds' bound
        finally:
            procs.stop_all()
