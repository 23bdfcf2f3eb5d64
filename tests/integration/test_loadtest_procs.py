"""A load test's processes get the settings it is given (``--env``), never the shell's ``YIDI_*``
ones, and its report says which Kafka transaction protocol each stage spoke: a run is what it says."""

from __future__ import annotations

import uuid

from loadtest.procs import Processes, not_passed_on, transaction_versions


async def test_env_given_reaches_the_stage_and_the_shells_yidi_settings_do_not(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("YIDI_KAFKA_TRANSACTIONS", "auto")  # as in `YIDI_KAFKA_TRANSACTIONS=auto make bench`
    assert "YIDI_KAFKA_TRANSACTIONS" in not_passed_on()
    # A namespace of its own: a bare hop consumes whatever its source topic holds.
    own = settings.model_copy(update={"namespace": f"{settings.namespace}procs{uuid.uuid4().hex[:6]}."})
    procs = Processes(own, tmp_path / "logs")
    procs.start_reference("eligible", None)
    procs.start_reference("priced", {"YIDI_KAFKA_TRANSACTIONS": "auto"})
    try:
        await procs.wait_ready()
    finally:
        codes = procs.stop_all()
    assert codes == {"ref-eligible": 0, "ref-priced": 0}
    assert transaction_versions(tmp_path / "logs") == {"ref-eligible": 1, "ref-priced": 2}
