"""The four services as real processes on the real stack, in the test session's namespace."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from typing import Any

import asyncpg

from loadtest.procs import ROOT, SERVICES, Processes

__all__ = ["ROOT", "SERVICES", "System"]


class System(Processes):
    """The four services for e2e tests: the load tool's process runner, plus what tests do to
    processes (kill them, arm failpoints, read a metric) and the test services' settings."""

    def _env(self, name: str, extra: dict[str, str] | None) -> dict[str, str]:
        test_settings = {
            "YIDI_BATCH_MAX_RECORDS": "200",
            # R8: the test province 930000 locks its regions' filings for six months (no other
            # test world is insured in province 93: area codes nest).
            "YIDI_FILING_LOCK_MONTHS": '{"930000": 6}',
            # R17: the test province 960000 waives filing for trips inside it, for its regions.
            "YIDI_FILING_WAIVED_REGIONS": '["960000"]',
            # The prepayment gauges, read often enough for a test to wait for them.
            "YIDI_PREPAYMENT_SAMPLE_SECONDS": "0.5",
            # R21's gauge of pending filings past the office's limit, likewise.
            "YIDI_OFFICE_OVERDUE_SAMPLE_SECONDS": "0.5",
        }
        # The shell settings the services get: `YIDI_KAFKA_TRANSACTIONS=v1 make test` runs the
        # end-to-end and crash tests under transactions v1 (the default speaks v2 where the broker
        # has it), `YIDI_KAFKA_OFFSETS_DURING_HANDLER=true make test` with the offsets sent during
        # the handler (the in-process stages read both anyway).
        for setting in ("YIDI_KAFKA_TRANSACTIONS", "YIDI_KAFKA_OFFSETS_DURING_HANDLER"):
            if setting in os.environ:
                test_settings[setting] = os.environ[setting]
        return super()._env(name, test_settings | (extra or {}))

    def start(self, service: str, extra_env: dict[str, str] | None = None, *, instance: str = "") -> None:
        self.start_service(service, extra_env, instance=instance)

    async def wait_ready(self, *services: str, timeout: float = 60.0) -> None:
        try:
            await super().wait_ready(*services, timeout=timeout)
        except (RuntimeError, TimeoutError) as exc:
            failed = next((s for s in services or tuple(self.procs) if not self.ready(s)), "")
            raise type(exc)(f"{exc}\n{self.tail(failed)}") from exc

    def tail(self, service: str, lines: int = 30) -> str:
        path = self.log_dir / f"{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self, service: str) -> None:
        """SIGKILL: the process dies where it stands, as in a power cut."""
        proc = self.procs[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    async def wait_exit(self, service: str, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.procs[service].poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} did not exit")
            await asyncio.sleep(0.1)
        return code

    def metric(self, service: str, name: str, /, **labels: str) -> float:
        """The current value of a metric of a running service (0 when not exposed yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service]}/metrics", timeout=2) as r:
            text = r.read().decode()
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if not labels and series == name:
                return float(value)
            if labels and series.startswith(name + "{") and set(series[len(name) + 1:-1].split(",")) == wanted:
                return float(value)
        return 0.0

    async def ledger(self, msgid: str) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM clearing.ledger WHERE msgid = $1", msgid)]
        finally:
            await conn.close()
