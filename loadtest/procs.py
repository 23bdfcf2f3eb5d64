"""The processes a bench runs: the four services, or the reference pipeline, in a namespace of their own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from yidi.platform.db import execute_alone
from yidi.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("filing", "eligibility", "pricing", "clearing")
REFERENCE_STAGES = ("eligible", "priced", "answer")
#: What every child gets from ``Processes`` (from the bench's own Settings, or its namespace and port).
SET_FOR_EACH = frozenset({"YIDI_KAFKA_BOOTSTRAP", "YIDI_DATABASE_URL", "YIDI_REDIS_URL", "YIDI_NAMESPACE",
                          "YIDI_METRICS_PORT", "YIDI_LOG_LEVEL"})
#: The shell's settings that do reach the children, through the load tool's own Settings: the stack it measures.
FROM_SHELL = frozenset({"YIDI_KAFKA_BOOTSTRAP", "YIDI_DATABASE_URL", "YIDI_REDIS_URL"})
_TRANSACTIONS_LINE = re.compile(rb"stage (\S+): Kafka transactions v(\d+)")


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (user, host, port and query kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def bench_database(tag: str) -> str:
    return f"yidi_bench_{tag.lower()}"


@contextlib.asynccontextmanager
async def own_database(settings: Settings, tag: str, *, keep: bool = False) -> AsyncIterator[Settings]:
    """``settings`` with a database of the run's own (``yidi_bench_<tag>``) on the same server,
    dropped afterwards unless ``keep``. The services migrate it when they start. A load test's world
    (policies and catalogues for real region codes), its ledger rows and prepayment draws then stay
    out of the database of the system it shares the stack with, and every run starts from empty
    tables, not from what earlier runs left."""
    name = bench_database(tag)
    await execute_alone(settings.database_url, f'CREATE DATABASE "{name}"')
    try:
        yield settings.model_copy(update={"database_url": with_database(settings.database_url, name)})
    finally:
        if not keep:
            await execute_alone(settings.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The server settings a load test's Postgres figures depend on, recorded with each run: the server's
# own values (the services' connections set plan_cache_mode and max_parallel_workers_per_gather
# themselves unless told "server").
POSTGRES_SETTINGS = ("server_version", "random_page_cost", "plan_cache_mode", "max_parallel_workers_per_gather",
                     "shared_buffers", "work_mem", "effective_cache_size", "synchronous_commit", "max_wal_size",
                     "autovacuum_naptime")


async def postgres_settings(database_url: str) -> dict[str, str] | None:
    """``POSTGRES_SETTINGS`` as the server gives them to a new connection; None when it cannot be asked."""
    try:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
                                    list(POSTGRES_SETTINGS))
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError):
        return None
    found = {r["name"]: r["value"] for r in rows}
    return {name: found[name] for name in POSTGRES_SETTINGS if name in found}


def env_pair(text: str) -> tuple[str, str]:
    """``--env KEY=VALUE``, for argparse's ``type``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key in SET_FOR_EACH - {"YIDI_LOG_LEVEL"}:
        raise argparse.ArgumentTypeError(f"{key} is the load tool's own (its namespace, database, port, or the "
                                         "stack it measures): set it in the shell for the whole run")
    unknown = key.removeprefix("YIDI_").lower() not in Settings.model_fields and key != "YIDI_CRASH_AT"
    if key.startswith("YIDI_") and unknown:
        # The services would ignore it, and the run would measure the defaults under its name.
        raise argparse.ArgumentTypeError(f"{key} is not a setting of the services (libs/yidi/platform/settings.py)")
    return key, value


def not_passed_on(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The ``YIDI_*`` settings of the caller's environment the children do not get: they run on the
    code's defaults and ``--env``, never on a shell's live settings. A load test says so, so that
    ``YIDI_BATCH_LINGER_MS=15 make bench`` is not read as a run with a 15 ms linger."""
    return sorted(k for k in environ if k.startswith("YIDI_") and k not in FROM_SHELL)


def child_settings(settings: Settings, env: dict[str, str]) -> Settings:
    """What a child process of a load tool runs on (``Processes._env``), for work the tool does in its
    own process instead (the eligibility micro-benchmark): the code's defaults, ``settings``'
    addresses and namespace, and ``--env``, never the shell's other ``YIDI_*`` settings."""
    values: dict[str, Any] = {"kafka_bootstrap": settings.kafka_bootstrap, "database_url": settings.database_url,
                              "redis_url": settings.redis_url, "namespace": settings.namespace}
    values |= {k.removeprefix("YIDI_").lower(): v for k, v in env.items() if k.startswith("YIDI_")}
    return Settings(_env_prefix="YIDI_NOT_FROM_THE_SHELL_", **values)


def transaction_versions(log_dir: Path, since: dict[str, int] | None = None) -> dict[str, int]:
    """The Kafka transaction protocol each stage last logged it speaks, from the process logs: what
    a run measured, whatever it was asked for. With ``since`` (``Processes.log_starts``), only those
    processes' logs, each read from where it stood before this run's first start (a reused folder
    keeps earlier runs' logs)."""
    logs = sorted(log_dir.glob("*.log")) if since is None else [log_dir / f"{n}.log" for n in sorted(since)]
    return {stage.decode(): int(version) for log in logs if log.exists()
            for stage, version in _TRANSACTIONS_LINE.findall(log.read_bytes()[(since or {}).get(log.stem, 0):])}


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range when there is room
    (ip_local_port_range): a port the kernel handed out for binding to 0 is one it may hand to the
    next outgoing connection too (the load tool's, Kafka's), and a service started on it then
    failed "Address already in use" (a bench of session 47)."""
    if low is None or high is None:
        low, high = 20000, _ephemeral_low() - 1
    for port in random.sample(range(low, high + 1), min(200, max(0, high - low + 1))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the range: any the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


class Processes:
    """Child processes with their own metrics ports; ``up`` names the ``yidi_service_up`` label of each."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.up: dict[str, str] = {}
        # Where each process's log stood before this object first started it (logs are appended to).
        self.log_starts: dict[str, int] = {}

    def _env(self, name: str, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("YIDI_")}
        env |= {
            "YIDI_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "YIDI_DATABASE_URL": self.settings.database_url,
            "YIDI_REDIS_URL": self.settings.redis_url,
            "YIDI_NAMESPACE": self.settings.namespace,
            "YIDI_METRICS_PORT": str(self.ports[name]),
            "YIDI_LOG_LEVEL": "INFO",
        }
        return env | (extra or {})

    def _spawn(self, name: str, argv: list[str], extra: dict[str, str] | None) -> None:
        # A restarted process keeps its metrics port, so readers of its /metrics need not follow it.
        self.ports.setdefault(name, free_port())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.log_starts.setdefault(name, log.tell())
            self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=self._env(name, extra), stdout=log,
                                                stderr=subprocess.STDOUT)

    def start_service(self, service: str, extra_env: dict[str, str] | None = None, *, instance: str = "") -> None:
        """Start ``service``; with ``instance``, one more instance of it (named ``service@instance``,
        with that ``YIDI_INSTANCE``) beside the others in its consumer groups."""
        name = f"{service}@{instance}" if instance else service
        env = (extra_env or {}) | ({"YIDI_INSTANCE": instance} if instance else {})
        self._spawn(name, [sys.executable, "-m", f"services.{service}"], env)
        self.up[name] = service

    def start_reference(self, stage: str, extra_env: dict[str, str] | None = None) -> None:
        name = f"ref-{stage}"
        self._spawn(name, [sys.executable, "-m", "loadtest.reference_pipeline", "--stage", stage], extra_env)
        self.up[name] = name

    def ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=1) as r:
                text = r.read().decode()
        except OSError:
            return False
        return f'yidi_service_up{{service="{self.up[name]}"}} 1.0' in text

    async def wait_ready(self, *names: str, timeout: float = 90.0) -> None:
        """Wait until the named processes (all, when none is named) say they are up."""
        deadline = time.monotonic() + timeout
        for name in names or tuple(self.procs):
            proc = self.procs[name]
            while not self.ready(name):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout:.0f}s; see {self.log_dir / (name + '.log')}")
                await asyncio.sleep(0.2)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def stop_all(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(5)
        return codes


def instances(text: str) -> dict[str, int]:
    """``--instances``: SERVICE=N[,SERVICE=N]."""
    out = {}
    for part in text.split(","):
        service, _, n = part.partition("=")
        if service not in SERVICES or not n.isdigit() or not 1 <= int(n) <= 6:
            raise argparse.ArgumentTypeError(f"{part!r}: SERVICE=N with a service of {', '.join(SERVICES)} and N in 1..6")
        out[service] = int(n)
    return out
