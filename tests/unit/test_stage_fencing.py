"""A stage commits a batch only under a group membership the broker can check (fencing.py)."""

from __future__ import annotations

import pytest

from yidi.platform import fencing
from yidi.platform.kafka import Incoming, TransactionalStage
from yidi.platform.settings import Settings


async def _never(records):  # pragma: no cover - not called
    raise AssertionError("not called")


@pytest.mark.parametrize("membership", [(-1, ""), (3, ""), (-1, "member-1")])
async def test_a_batch_fetched_outside_the_group_is_refused_before_anything_is_sent(membership):
    # aiokafka resets the membership to (-1, "") when a heartbeat learns that the group moved on;
    # the broker would take a commit under it unchecked, so the stage refuses it itself.
    stage = TransactionalStage("t", "test", Settings(), ["in"], "g", _never)
    stage._producer = object()  # any use of the producer would fail the test
    stage._membership = membership
    with pytest.raises(fencing.GenerationFenced):
        await stage._commit([Incoming("in", 0, 5, b"k", b"v", 0)], [])
