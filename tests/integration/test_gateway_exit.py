"""``yidi-gateway``'s exit status tells a request nobody answered (3) from one refused (1): `make
run` stops with a message on the first, while the demo's refusal on purpose is expected."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from yidi.platform.kafka import ensure_topics
from yidi.platform.settings import Settings

from tests.e2e.system import ROOT

pytestmark = pytest.mark.integration


async def test_a_request_nobody_answers_exits_3(settings):
    # Topics of their own (under the session's namespace, deleted with it), and no service reading them.
    namespace = f"{settings.namespace}noone{uuid.uuid4().hex[:6]}."
    await ensure_topics(Settings(kafka_bootstrap=settings.kafka_bootstrap, namespace=namespace))
    done = subprocess.run(
        [sys.executable, "-m", "yidi.client.cli", "--bootstrap", settings.kafka_bootstrap, "--namespace", namespace,
         "--timeout", "1", "--summary", "send", "deploy/demo/requests/01-we1-langfang-retiree-beijing.json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 3, done.stderr
    assert "no answer to" in done.stderr


def test_a_client_that_fails_exits_4_not_1_which_means_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "yidi.client.cli", "--timeout", "1", "send", str(tmp_path / "absent.json")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 4, done.stderr
    assert "FileNotFoundError" in done.stderr
