"""A second Kafka broker, set as production brokers usually are: it creates no topic on a first write
(``auto.create.topics.enable=false``) and it authorizes (StandardAuthorizer; everything is allowed
on a resource without ACLs, so the platform's own topics work, and a test denies what it needs to).

It runs from the local stack's Kafka jars (deploy/local/stack.sh), with the local broker's Java,
on two free loopback ports and a data directory of its own, for one test module (about 5 s to start).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from loadtest.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = ROOT / ".local" / "kafka"

# The running brokers' processes by bootstrap address (a test that freezes one: SIGSTOP).
PROCESSES: dict[str, subprocess.Popen[bytes]] = {}

# Kafka's ACL enums (org.apache.kafka.common.acl / resource).
RESOURCE_TOPIC, PATTERN_LITERAL = 2, 3
OPERATION_ALL, OPERATION_DESCRIBE = 2, 8
DENY, ALLOW = 2, 3
ANONYMOUS = "User:ANONYMOUS"  # the principal of every client on a PLAINTEXT listener

_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=2
auto.create.topics.enable=false
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
log.cleaner.enable=false
add.partitions.to.txn.retry.backoff.ms=2
"""


def available() -> str | None:
    """Why a strict broker cannot be started here, or None when it can."""
    if not (KAFKA_DIR / "libs").is_dir():
        return f"no Kafka jars in {KAFKA_DIR / 'libs'} (deploy/local/stack.sh install kafka)"
    if _java() is None:
        return "no Java to run Kafka with"
    return None


def _java() -> str | None:
    """The Java the local broker runs on (its pid file), else JAVA_HOME's or the one on PATH."""
    try:
        pid = (KAFKA_DIR / "kafka.pid").read_text().strip()
        exe = os.readlink(f"/proc/{pid}/exe")
        if "java" in Path(exe).name:
            return exe
    except (OSError, ValueError):
        pass
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


# A second node of the strict broker's cluster: a broker only, whose controller is the first's.
_SECOND_NODE = """\
process.roles=broker
node.id={node_id}
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
"""


def _start(java: str, config: Path, cluster_id: str, workdir: Path, name: str, timeout: float) -> subprocess.Popen[bytes]:
    """Format ``config``'s storage for ``cluster_id`` and start the node; return once it has started."""
    subprocess.run([java, "-cp", f"{KAFKA_DIR / 'libs'}/*", "kafka.tools.StorageTool", "format", "-t", cluster_id,
                    "-c", str(config)], check=True, capture_output=True, timeout=120)
    return _launch(java, config, workdir, name, timeout)


def _launch(java: str, config: Path, workdir: Path, name: str, timeout: float) -> subprocess.Popen[bytes]:
    """Start the node of ``config`` (its storage formatted); return once it has started."""
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    started_before = log_path.read_bytes().count(b"Kafka Server started") if log_path.exists() else 0
    with open(log_path, "ab") as log:
        node = subprocess.Popen(
            [java, "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
             f"-Dkafka.logs.dir={workdir}", "-cp", f"{KAFKA_DIR / 'libs'}/*", "kafka.Kafka", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while log_path.read_bytes().count(b"Kafka Server started") <= started_before:
        if node.poll() is not None:
            raise RuntimeError(f"the {name} exited: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            stop(node)
            raise RuntimeError(f"the {name} did not start in {timeout:.0f}s: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    return node


def stop(node: subprocess.Popen[bytes]) -> None:
    """Stop a node as an operator does: SIGTERM (a controlled shutdown: the controller takes its
    partitions' leadership away first), then SIGKILL after 30 s."""
    node.terminate()
    try:
        node.wait(30)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


# Each running strict broker's cluster, by its bootstrap address: (its controller's port, the cluster's id).
CLUSTERS: dict[str, tuple[int, str]] = {}
# How to start each broker of ``second_broker`` again.
_AGAIN: dict[str, Callable[[], subprocess.Popen[bytes]]] = {}


@contextmanager
def strict_broker(workdir: Path, timeout: float = 90.0) -> Iterator[str]:
    """Start the broker in ``workdir``; yield its bootstrap address; stop it."""
    java = _java()
    assert java is not None
    port, controller = free_port(), free_port()
    config = workdir / "server.properties"
    config.write_text(_PROPERTIES.format(port=port, controller=controller, data=workdir / "data"))
    cluster_id = uuid.uuid4().bytes.hex()[:22]
    bootstrap = f"127.0.0.1:{port}"
    node = _start(java, config, cluster_id, workdir, "strict broker", timeout)
    PROCESSES[bootstrap], CLUSTERS[bootstrap] = node, (controller, cluster_id)
    try:
        yield bootstrap
    finally:
        PROCESSES.pop(bootstrap, None)
        CLUSTERS.pop(bootstrap, None)
        stop(node)


@contextmanager
def second_broker(first: str, workdir: Path, timeout: float = 90.0, *, node_id: int = 2) -> Iterator[str]:
    """Another broker (``node_id``) in the cluster of the strict broker at ``first``; yield its address;
    stop it, if a test has not (``stop(PROCESSES[address])``, as a broker of a production cluster
    goes down). Topics created before it started, the cluster's internal ones among them, are all
    on the first."""
    java = _java()
    assert java is not None
    controller, cluster_id = CLUSTERS[first]
    port = free_port()
    config = workdir / f"node-{node_id}.properties"
    config.write_text(_SECOND_NODE.format(node_id=node_id, port=port, controller=controller,
                                          data=workdir / f"data-{node_id}"))
    bootstrap = f"127.0.0.1:{port}"
    PROCESSES[bootstrap] = _start(java, config, cluster_id, workdir, f"broker {node_id}", timeout)
    _AGAIN[bootstrap] = lambda: _launch(java, config, workdir, f"broker {node_id}", timeout)
    try:
        yield bootstrap
    finally:
        node = PROCESSES.pop(bootstrap, None)
        _AGAIN.pop(bootstrap, None)
        if node is not None and node.poll() is None:
            stop(node)


def start_again(bootstrap: str) -> None:
    """Start a broker of ``second_broker`` that a test stopped, on its storage as it left it (a broker
    back from a restart)."""
    assert PROCESSES[bootstrap].poll() is not None, "still running"
    PROCESSES[bootstrap] = _AGAIN[bootstrap]()


@contextmanager
def frozen(bootstrap: str, timeout: float = 10.0) -> Iterator[None]:
    """The broker at ``bootstrap`` frozen (SIGSTOP), as a hung or partitioned broker is: it answers
    nothing, and closes no connection. Every thread of it is stopped before the block runs: a
    SIGSTOP stops a busy process's threads one by one as each is next scheduled, and until the last
    one has, the broker may still answer (a clean-clone run met a publish acknowledged after the
    signal). It runs again (SIGCONT) after the block."""
    pid = PROCESSES[bootstrap].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    continue  # a thread that ended meanwhile
            if states and all(state in ("T", "t") for state in states):
                break
            assert time.monotonic() < deadline, f"the broker's threads did not all stop: {sorted(set(states))}"
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def acl(bootstrap: str, topic: str, operation: int, permission: int) -> None:
    """Add one ACL for every client of the broker on ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        client = admin._client
        answer = await client.send(client.get_random_node(),
                                   CreateAclsRequest(RESOURCE_TOPIC, topic, PATTERN_LITERAL, ANONYMOUS, "*",
                                                     operation, permission))
        errors = [(code, message) for code, message in answer.creation_responses if code]
        assert not errors, errors
    finally:
        await admin.close()
