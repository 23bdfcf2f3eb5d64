"""deploy/local/stack.sh in the states a developer's or CI's machine meets: a port taken by
someone else, a PostgreSQL that runs but does not serve, jars to change under a running broker.
Each runs the script on the local stack itself, which the test leaves running as it found it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "stack.sh"


def _stack(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=180)


async def test_a_port_taken_by_another_process_names_it(local_stack):
    # "127.0.0.1:16379 is in use by a process that is not this stack's Redis" left the developer to
    # find the holder (a system Redis on a moved port, an orphan of another checkout).
    await asyncio.to_thread(local_stack, "stop", "redis")
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 16379))
        holder.listen()
        refused = await asyncio.to_thread(_stack, "start", "redis")
    finally:
        holder.close()
    assert refused.returncode != 0
    assert f"127.0.0.1:16379 is in use by pid {os.getpid()} (" in refused.stderr, refused.stderr
    assert "not this stack's Redis" in refused.stderr
    await asyncio.to_thread(local_stack, "start", "redis")


def _postmaster() -> int:
    return int((ROOT / ".local" / "pg" / "data" / "postmaster.pid").read_text().split()[0])


async def test_a_postgres_that_runs_but_does_not_answer_is_not_taken_as_started(local_stack):
    # `start` said "already running" for any postmaster alive (one in crash recovery, one left
    # starting by an interrupted start), and the suite or the services after it failed on their
    # first query. A stopped postmaster (SIGSTOP) runs and answers nothing.
    await asyncio.to_thread(local_stack, "start", "postgres")
    pid = _postmaster()
    os.kill(pid, signal.SIGSTOP)
    try:
        waited = await asyncio.to_thread(_stack, "start", "postgres", PG_READY_TIMEOUT="3")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert waited.returncode != 0, waited.stderr
    assert f"postgres (pid {pid}) runs but does not accept connections" in waited.stderr, waited.stderr
    again = await asyncio.to_thread(_stack, "start", "postgres")
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr


async def test_a_postmaster_pid_file_naming_another_process_is_stale_not_a_running_postgres(local_stack):
    # Left by a postmaster killed (a reboot, SIGKILL), its number taken since by another process:
    # `start` waited a minute and blamed Postgres, and `stop` sent that process SIGINT (the install
    # review, session 49).
    await asyncio.to_thread(local_stack, "stop", "postgres")
    # Named "postgres" (as the system's postgres, or another checkout's, would be): not this stack's.
    stranger = subprocess.Popen(["bash", "-c", "exec -a postgres sleep 120"])
    pid_file = ROOT / ".local" / "pg" / "data" / "postmaster.pid"
    try:
        pid_file.write_text(f"{stranger.pid}\n")
        stopped = await asyncio.to_thread(_stack, "stop", "postgres")
        assert stopped.returncode == 0 and "postgres not running" in stopped.stderr, stopped.stderr
        assert stranger.poll() is None  # not signalled
        started = await asyncio.to_thread(_stack, "start", "postgres", PG_READY_TIMEOUT="20")
        assert started.returncode == 0, started.stderr
        assert "which is not this stack's postgres: a stale file, removed" in started.stderr, started.stderr
        assert stranger.poll() is None
        assert "postgres" in Path(f"/proc/{_postmaster()}/cmdline").read_bytes().decode(errors="replace")
    finally:
        stranger.kill()
        stranger.wait()
        if pid_file.exists() and pid_file.read_text().split()[:1] == [str(stranger.pid)]:
            pid_file.unlink()
        await asyncio.to_thread(local_stack, "start", "postgres")


async def test_a_start_names_the_servers_it_launched_decided_under_its_lock(local_stack, tmp_path):
    # make test stops, at its end, the servers its start launched. It decided which from a status
    # taken without the stack's lock: beside a make run still starting the stack, it counted that
    # run's servers as its own and stopped them under its services (the install review, session 49).
    launched = tmp_path / "launched"
    launched.touch()
    again = await asyncio.to_thread(_stack, "start", "all", STACK_STARTED_FILE=str(launched))
    assert again.returncode == 0, again.stderr
    assert launched.read_text() == ""  # all three were up
    await asyncio.to_thread(local_stack, "stop", "redis")
    started = await asyncio.to_thread(_stack, "start", "all", STACK_STARTED_FILE=str(launched))
    assert started.returncode == 0, started.stderr
    assert launched.read_text().split() == ["redis"]


def test_the_kafka_jars_are_those_the_project_pins_and_a_changed_one_is_refused(tmp_path):
    # Maven's --strict-checksums checks a download against the same server's checksums only: a
    # mirror or a cache serving other jars passed (the install review, session 49). The jars the
    # stack installed are the pinned ones; a jar changed, or missing, is refused.
    import shutil

    installed = ROOT / ".local" / "kafka" / "libs"
    checked = _stack("check-jars")
    assert checked.returncode == 0, checked.stderr
    # Jars installed before the list (no .checked): checked once at the next install or start, not
    # downloaded again (every install would have been, the diff review of session 49 found).
    mark = installed / ".checked"
    held = mark.read_text()
    mark.unlink()
    again = _stack("install", "kafka")
    assert again.returncode == 0 and "resolving Kafka jars" not in again.stderr, again.stderr
    assert mark.read_text() == held
    copy = tmp_path / "libs"
    shutil.copytree(installed, copy)
    jar = sorted(copy.glob("kafka-clients-*.jar"))[0]
    with jar.open("ab") as f:
        f.write(b"\0")
    changed = _stack("check-jars", str(copy))
    assert changed.returncode != 0 and f"{jar.name}: FAILED" in changed.stderr, changed.stderr
    jar.unlink()
    missing = _stack("check-jars", str(copy))
    assert missing.returncode != 0 and f"< {jar.name}" in missing.stderr, missing.stderr


async def test_jars_are_not_swapped_under_a_running_broker(local_stack):
    # A changed kafka.version (or KAFKA_VERSION) made `start` resolve and swap the jars under the
    # broker running on the old ones, and `status` then named a version that was not running.
    await asyncio.to_thread(local_stack, "start", "kafka")
    libs = ROOT / ".local" / "kafka" / "libs"
    stamp = (libs / ".stamp").read_text()
    jars = sorted(p.name for p in libs.glob("*.jar"))
    refused = await asyncio.to_thread(_stack, "start", "kafka", KAFKA_VERSION="0.0.1-yidi-test")
    assert refused.returncode != 0
    assert "is running" in refused.stderr and "stop the stack first (make stop)" in refused.stderr, refused.stderr
    assert (libs / ".stamp").read_text() == stamp
    assert sorted(p.name for p in libs.glob("*.jar")) == jars
    assert not (ROOT / ".local" / "kafka" / "libs.tmp").exists()
    status = await asyncio.to_thread(_stack, "status")
    assert "kafka     running" in status.stdout, status.stdout
