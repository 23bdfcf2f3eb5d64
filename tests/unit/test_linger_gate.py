"""LingerGate: a stage lingers only while its lingers add records (yidi.platform.kafka)."""

from yidi.platform.kafka import LingerGate


def test_a_stage_lingers_while_its_lingers_add_records():
    gate = LingerGate()
    for _ in range(50):
        assert gate.wanted()
        gate.lingered(1)
    assert gate.yielded >= 0.99


def _stop(gate: LingerGate) -> int:
    """Linger fruitlessly until the gate says no; how many lingers that took."""
    waits = 0
    while gate.wanted():
        gate.lingered(0)
        waits += 1
        assert waits < 30, "lingering never stopped"
    return waits


def test_lingers_that_add_nothing_stop_the_lingering_but_a_probe_every_so_often_lingers_again():
    gate = LingerGate(probe_every=5)
    assert 10 <= _stop(gate) <= 20  # fruitless lingers, from the start's benefit of the doubt
    # The batch that found the gate shut was the first of five without a linger; the fifth probes.
    decisions = [gate.wanted() for _ in range(14)]
    assert decisions == [False, False, False, True] + [False, False, False, False, True] * 2


def test_a_probe_that_adds_a_record_brings_the_lingering_back():
    gate = LingerGate(probe_every=3)
    _stop(gate)
    assert [gate.wanted() for _ in range(2)] == [False, True]  # the probe
    gate.lingered(1)
    assert all(gate.wanted() for _ in range(5))  # lingering again, every batch


def test_a_stage_whose_lingers_add_a_record_every_other_time_keeps_lingering():
    gate = LingerGate()
    for i in range(200):
        assert gate.wanted(), i
        gate.lingered(i % 2)


def test_after_a_linger_that_added_a_record_a_stage_stops_after_seven_that_added_none():
    gate = LingerGate()
    _stop(gate)
    gate.lingered(1)  # a probe that found one
    assert _stop(gate) == 7
