"""The ways a stage commits a batch's Kafka transaction, for tests that run under each."""

from __future__ import annotations

import pytest

# v1; v2 (the default where the broker has it); v2 with the batch's transaction begun, and its
# offsets sent, while the handler runs (``kafka_offsets_during_handler``).
PROTOCOLS = pytest.mark.parametrize(("transactions", "during"), [("v1", False), ("auto", False), ("auto", True)],
                                    ids=["v1", "v2", "v2-offsets-during-handler"])
