"""LingerGate: a stage lingers only while its lingers add records (yidi.platform.kafka)."""

import random

from yidi.platform.kafka import LingerGate


def _stop(gate: LingerGate) -> int:
    """Linger fruitlessly until the gate says no; how many lingers that took."""
    waits = 0
    while gate.wanted():
        gate.lingered(0)
        waits += 1
        assert waits < 100, "lingering never stopped"
    return waits


def test_a_stage_lingers_while_its_lingers_add_records():
    gate = LingerGate()
    for _ in range(200):
        assert gate.wanted()
        gate.lingered(1)


def test_fourteen_lingers_in_a_row_that_add_nothing_stop_the_lingering_and_a_probe_looks_again():
    gate = LingerGate(probe_every=5)
    assert _stop(gate) == 14
    # The batch that found the gate shut was the first of five without a linger; the fifth probes.
    decisions = [gate.wanted() for _ in range(14)]
    assert decisions == [False, False, False, True] + [False, False, False, False, True] * 2


def test_a_probe_that_adds_a_record_opens_the_gate_for_seven_more_fruitless_lingers():
    gate = LingerGate(probe_every=3)
    _stop(gate)
    assert [gate.wanted() for _ in range(2)] == [False, True]  # the probe
    gate.lingered(1)
    assert _stop(gate) == 7


def _share_lingered(p_record: float, batches: int = 5000) -> float:
    """A stage whose every linger adds a record with probability ``p_record`` (seeded)."""
    rng, gate, lingered = random.Random(7), LingerGate(), 0
    for _ in range(batches):
        if gate.wanted():
            lingered += 1
            gate.lingered(1 if rng.random() < p_record else 0)
    return lingered / batches


def test_a_stage_whose_lingers_add_a_record_every_other_time_keeps_lingering():
    assert _share_lingered(0.5) >= 0.9


def test_a_stage_whose_lingers_add_a_record_every_third_or_fourth_time_lingers_part_of_the_time():
    # Pricing and clearing at 100/s on the bench box: runs of 7 fruitless lingers shut the gate
    # now and then, until a probe adds a record.
    assert 0.2 <= _share_lingered(0.3) <= 0.9


def test_a_stage_whose_lingers_almost_never_add_a_record_almost_never_lingers():
    # Eligibility at 100/s: batches of 1.01 records.
    assert _share_lingered(0.01) <= 0.1
