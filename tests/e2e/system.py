"""The four services as real processes on the real stack, in the test session's namespace."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from yidi.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("filing", "eligibility", "pricing", "clearing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class System:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def env(self, service: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("YIDI_")}
        env |= {
            "YIDI_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "YIDI_DATABASE_URL": self.settings.database_url,
            "YIDI_REDIS_URL": self.settings.redis_url,
            "YIDI_NAMESPACE": self.settings.namespace,
            "YIDI_METRICS_PORT": str(self.ports[service]),
            "YIDI_LOG_LEVEL": "INFO",
            "YIDI_BATCH_MAX_RECORDS": "200",
            # R8: the test region 980000 locks filings for six months.
            "YIDI_FILING_LOCK_MONTHS": '{"980000": 6}',
        }
        return env | (extra or {})

    def start(self, service: str, extra_env: dict[str, str] | None = None) -> None:
        self.ports.setdefault(service, free_port())
        with open(self.log_dir / f"{service}.log", "ab") as log:  # the child keeps its own copy
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=self.env(service, extra_env),
                stdout=log, stderr=subprocess.STDOUT,
            )

    def ready(self, service: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service]}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return False
        return f'yidi_service_up{{service="{service}"}} 1.0' in text

    async def wait_ready(self, *services: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for service in services or SERVICES:
            while not self.ready(service):
                proc = self.procs[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}: {self.tail(service)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} not ready: {self.tail(service)}")
                await asyncio.sleep(0.2)

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

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def metric(self, service: str, name: str, **labels: str) -> float:
        """The current value of a metric of a running service (0 when not exposed yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service]}/metrics", timeout=2) as r:
            text = r.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{{wanted}}}") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def ledger(self, msgid: str) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM clearing.ledger WHERE msgid = $1", msgid)]
        finally:
            await conn.close()
